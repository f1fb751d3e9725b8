"""The faults: power cuts across a fleet, a broker crash, a network partition."""
from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

from agent import topics
from backend.store import Store
from tests.chaos.boxes import ChaosBox, LfsBox, make_fleet
from tests.chaos.checks import (
    Ledger,
    check_converged,
    check_rejections,
    check_streams,
    final_run,
    inspect_box,
    wait_stored,
)
from tests.chaos.harness import BOX_CFG, SECTIONS, Backend, ChaosError, Operator, Tally
from tests.chaos.netns import NetnsLink, netns_available
from tests.helpers import Capture, free_port, retained

# ---- scenario 1: power cuts ----------------------------------------------------------------

def power_cuts(workdir: Path, kills: int = 200, boxes: int = 8, vboxes: int = 1, seed: int = 20261122,
               gap: tuple[float, float] = (0.05, 0.45), log=print) -> Tally:
    """`kills` random kill -9 across a fleet while telemetry and updates flow:
    `boxes` agent processes (CPython and MicroPython in turn) and `vboxes` virtual
    ESP32s whose agent runs from the littlefs in their flash."""
    rng = random.Random(seed)
    tally = Tally("power cuts", boxes=boxes + vboxes)
    backend = Backend(workdir / "backend").start()
    fleet = make_fleet(workdir, backend.port, boxes, "cut")
    for i, b in enumerate(fleet):
        if i % 4 >= 2:
            # Slower to drain than to produce (10 reports/s): a backlog builds up,
            # so cuts find records waiting in the outbox.
            b.reconfigure(drain_rate=5)
    fleet += [LfsBox(workdir, f"cut-lfs-{i}", backend.port) for i in range(vboxes)]
    ids = [b.box_id for b in fleet]
    cap = Capture(backend.port)
    op = Operator(backend, ids, seed)
    ledger = Ledger()
    try:
        op.push_all()
        for b in fleet:
            b.start()
        op.run_background()
        t0 = time.time()
        for k in range(kills):
            time.sleep(rng.uniform(*gap))
            b = rng.choice(fleet)
            if not b.alive():
                tally.fail(f"{b.box_id} ({b.interp}) exited by itself (rc {b.proc.returncode}):\n{b.output()}")
            b.kill()
            tally.kills += 1
            tally.boots += 1
            for p in b.problems():
                tally.fail(f"{b.box_id} run {b.runs}: {p}")
            n, problems, pending = inspect_box(b)
            tally.state_files += n
            for p in problems:
                tally.fail(f"{b.box_id} after cut {k + 1}: {p}")
            tally.pending_at_cuts += len(pending)
            ledger.add_pending(b.box_id, pending)
            if rng.random() < 0.1:
                time.sleep(rng.uniform(0.2, 1.0))      # stays off a while
            b.start()
            if (k + 1) % 50 == 0:
                log(f"chaos: power cuts: {k + 1}/{kills} kills, {time.time() - t0:.0f} s")
        op.stop_background()
        last = final_run(fleet, tally, ledger)
        wait_stored(backend, last, ledger)
        backend.stop_ingest()
        cap.close()
        ledger.add_capture(cap, set(ids))
        check_streams(backend.store, set(ids), tally, ledger, last)
        check_converged(backend.store, fleet, tally)
        check_rejections(cap, tally)
        tally.pushed = op.pushed
        tally.bad_injected = op.bad
        quarantined = backend.store.counters().get("invalid", 0)
        tally.extra["quarantined at ingest"] = quarantined
        if op.bad and not quarantined:
            tally.fail("ingest quarantined nothing, yet garbage was published")
        for b in fleet:
            for p in b.problems():
                tally.fail(f"{b.box_id}: {p}")
    finally:
        _teardown(fleet, op, cap, backend)
    return tally


# ---- scenario 2: broker crash ------------------------------------------------------------------

def broker_crash(workdir: Path, boxes: int = 4, down: float = 3.0, log=print) -> Tally:
    """kill -9 of Mosquitto (persistence on, production autosave) while boxes publish,
    then a restart: boxes come back with jittered backoff, `reconcile` restores the
    retained desired documents the crash lost, and nothing is lost except what a
    box's outbox bound dropped and declared."""
    tally = Tally("broker crash", boxes=boxes)
    # Our generated broker configuration saves every 60 s (backend/broker_config.py).
    backend = Backend(workdir / "backend", persistence=True, extra="autosave_interval 60\n").start()
    fleet = make_fleet(workdir, backend.port, boxes, "crash")
    # One box with a tiny outbox: the outage overflows it, and it must say so.
    fleet[0].reconfigure(outbox_max_bytes=6000, outbox_seg_bytes=1500)
    ids = [b.box_id for b in fleet]
    op = Operator(backend, ids)
    cap = Capture(backend.port)
    from backend.reconcile import reconcile
    try:
        for b in fleet:
            b.start()
        op.push_all(1)
        backend.wait(lambda: _applied(backend.store, ids, 1), 30, "every box to apply v1")
        # The broker saves its state (as its autosave does): the ingest session and v1.
        backend.broker.proc.send_signal(signal.SIGUSR1)
        time.sleep(0.5)
        op.push_all(2)               # retained after the last save: the crash loses these
        backend.wait(lambda: _applied(backend.store, ids, 2), 30, "every box to apply v2")
        time.sleep(0.5)
        marks = [len(b.lines) for b in fleet]
        backend.broker.proc.kill()                               # kill -9
        backend.broker.proc.wait()
        t_kill = time.time()
        time.sleep(down)
        backend.broker.start()
        t_up = time.time()
        kept = _retained_versions(backend.port, ids)
        # v2 was retained after the last save: the restarted broker holds v1 (or nothing).
        tally.extra["retained desired rolled back by the crash"] = sum(1 for v in kept.values() if v != 2)
        n = reconcile(backend.store, backend.url)
        tally.extra["re-published by reconcile"] = n
        kept = _retained_versions(backend.port, ids)
        if sorted(kept.values()) != [2] * len(ids) * len(SECTIONS):
            tally.fail(f"after reconcile the broker holds {kept}")
        for b, m in zip(fleet, marks):
            if not b.wait_log("[hb] connected", 30, start=m):
                tally.fail(f"{b.box_id} did not reconnect:\n{b.output()}")
        delays = []
        for b, m in zip(fleet, marks):
            vals = []
            for ln in b.lines[m:]:
                if ln.startswith("[hb] reconnect "):
                    vals += [float(w[6:]) for w in ln.split() if w.startswith("delay=")]
            if not vals:
                tally.fail(f"{b.box_id}: no reconnect attempt logged")
            delays += vals
            if any(not 0 <= d <= BOX_CFG["backoff_cap"] for d in vals):
                tally.fail(f"{b.box_id}: a reconnect delay outside [0, cap]: {vals}")
        # Logged to the millisecond in [0, cap]: two boxes may share a value by
        # chance (~10% for 20 draws); a fixed ladder repeats most of them.
        if len(delays) - len(set(delays)) > max(1, len(delays) // 10):
            tally.fail(f"reconnect delays repeat (no jitter?): {delays}")
        tally.extra["reconnect attempts"] = len(delays)
        tally.extra["outage s"] = round(t_up - t_kill, 1)
        op.push_all(3)                                           # updates flow again
        last = final_run(fleet, tally)
        wait_stored(backend, last, None)
        backend.stop_ingest()
        cap.close()
        check_streams(backend.store, set(ids), tally, None, last)
        check_converged(backend.store, fleet, tally)
        tally.pushed = op.pushed
        if not tally.declared_dropped:
            tally.fail("the small-outbox box dropped nothing: the outage was too short to test the bound")
    finally:
        _teardown(fleet, op, cap, backend)
    return tally


def _teardown(fleet, op, cap, backend) -> None:
    for b in fleet:
        b.kill()
    op.close()
    cap.close()
    backend.close()


def _applied(store: Store, boxes: list[str], version: int) -> bool:
    rep = store.reported()
    return all((rep.get(b, {}).get(s) or {}).get("version") == version for b in boxes for s in SECTIONS)


def _retained_versions(port: int, boxes: list[str]) -> dict[tuple[str, str], int]:
    out = {(b, s): 0 for b in boxes for s in SECTIONS}
    for t, p in retained(port, "homebox/v1/+/desired/+"):
        tp = topics.parse(t)
        if tp and (tp[0], tp[2]) in out:
            try:
                out[(tp[0], tp[2])] = json.loads(p)["version"]
            except (ValueError, KeyError, TypeError):
                pass
    return out


# ---- scenario 3: network partition ----------------------------------------------------------


def partition(workdir: Path, boxes: int = 2, keepalive: int = 4, margin: float = 3.0,
              hold: float | None = None, log=print) -> Tally:
    """Boxes in their own network namespaces lose their link for longer than the
    keepalive: the backend must see them offline within 1.5 x keepalive + margin,
    and after the link returns their outbox must drain in order, losing nothing.
    One more box stays on loopback as a control: it must stay online.

    The margin: Mosquitto 2.0 counts the keepalive in whole seconds and checks it
    once a second (up to ~2 s late), then ingest commits within its batch wait."""
    why = netns_available()
    if why:
        raise ChaosError(f"partition: {why}")
    hold = hold if hold is not None else 2.5 * keepalive
    tally = Tally("partition", boxes=boxes + 1)
    links = [NetnsLink(i) for i in range(boxes)]
    backend = None
    fleet: list[ChaosBox] = []
    cap = None
    try:
        for ln in links:
            ln.up()
        port = free_port()                                 # one port, on every listener
        extra = "".join(f"listener {port} {ln.host_ip}\n" for ln in links)
        backend = Backend(workdir / "backend", extra=extra)
        backend.broker.port = port
        backend.start()
        cfg = dict(keepalive=keepalive, backoff_cap=2.0)
        interps = ("cpython", "micropython")
        for i, ln in enumerate(links):
            fleet.append(ChaosBox(workdir / f"part-{i}", f"part-{i}", port, interps[i % 2], netns=ln.ns, **cfg))
            fleet[-1].reconfigure(broker_host=ln.host_ip)
        fleet.append(ChaosBox(workdir / "part-control", "part-control", port, "micropython", **cfg))
        ids = [b.box_id for b in fleet]
        cap = Capture(backend.port)
        for b in fleet:
            b.start()
        backend.wait(lambda: all(_state(backend.store, b) == "online" for b in fleet), 30,
                     "every box online")
        time.sleep(1.0)
        marks = [len(b.lines) for b in fleet]
        t_cut = time.time()
        for ln in links:
            ln.cut()
        seen_offline: dict[str, float] = {}
        limit = 1.5 * keepalive + margin
        while time.time() - t_cut < hold:
            for b in fleet[:-1]:
                if b.box_id not in seen_offline and _state(backend.store, b) == "offline":
                    seen_offline[b.box_id] = _state_at(backend.store, b.box_id) - t_cut
            if _state(backend.store, fleet[-1]) != "online":
                tally.fail("the control box on loopback went offline during the partition")
            time.sleep(0.05)
        mark_cap = len(cap.messages)
        for ln in links:
            ln.restore()
        t_back = time.time()
        for b in fleet[:-1]:
            d = seen_offline.get(b.box_id)
            if d is None:
                tally.fail(f"{b.box_id}: not seen offline within the {hold:.0f} s partition")
            elif d > limit:
                tally.fail(f"{b.box_id}: seen offline after {d:.1f} s, limit 1.5 x {keepalive} + {margin}")
        tally.extra["offline detected after s"] = sorted(round(v, 1) for v in seen_offline.values())
        tally.extra["limit s"] = limit
        backend.wait(lambda: all(_state(backend.store, b) == "online" for b in fleet), 40,
                     "every box back online")
        tally.extra["back online after s"] = round(time.time() - t_back, 1)
        # The backlog built up during the cut drains in order: by first arrival, the
        # seqs of each partitioned box's boot only go up.
        time.sleep(2.0)
        for b, m in zip(fleet[:-1], marks):
            if not b.alive():
                tally.fail(f"{b.box_id} exited during the partition:\n{b.output()}")
            first: dict[int, int] = {}
            order = []
            with cap.lock:
                msgs = list(cap.messages)
            for t, p, _r in msgs:
                if f"/{b.box_id}/telemetry/" in t or t.endswith(f"/{b.box_id}/event"):
                    e = json.loads(p)
                    if e["seq"] not in first:
                        first[e["seq"]] = len(order)
                        order.append(e["seq"])
            if order != sorted(order):
                tally.fail(f"{b.box_id}: out-of-order delivery {order}")
            after = sum(1 for t, _p, _r in msgs[mark_cap:] if f"/{b.box_id}/telemetry/" in t)
            tally.extra.setdefault("drained after the link returned", []).append(after)
            if after < 5:
                tally.fail(f"{b.box_id}: no backlog drained after the partition ({after} messages)")
            if not any("[hb] disconnected" in ln or "[hb] reconnect" in ln for ln in b.lines[m:]):
                tally.fail(f"{b.box_id}: never noticed the partition")
        last = final_run(fleet, tally)
        wait_stored(backend, last, None)
        backend.stop_ingest()
        check_streams(backend.store, set(ids), tally, None, last)
        tally.converged = tally.boxes
    finally:
        for b in fleet:
            b.kill()
        if cap:
            cap.close()
        if backend:
            backend.close()
        for ln in links:
            ln.down_ns()
    return tally


def _state(store: Store, box: ChaosBox) -> str | None:
    for r in store.boxes():
        if r["box"] == box.box_id:
            return r["state"]
    return None


def _state_at(store: Store, box_id: str) -> float:
    for r in store.boxes():
        if r["box"] == box_id:
            return r["state_at"]
    return float("nan")
