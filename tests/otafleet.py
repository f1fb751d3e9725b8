"""Virtual boxes updated over the air, for the OTA system tests (tests/test_ota_vbox.py)
and the power-cut run of `make chaos` (python -m tests.otafleet --cuts 50).

Each box is a virtual ESP32 (vbox) flashed with the factory firmware (fw build of
this checkout), booting main.py from littlefs under the real MicroPython
interpreter; a release is the same agent compiled by fw build with another
VERSION (or a broken one), served by backend/release.py over HTTP, and sent as
the signed desired `release` document. Power cuts are kill -9 of the vbox
process (the interpreter dies with it), then a power-on of the same flash.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import vbox
from backend import push, release
from tests.helpers import Capture, Mosquitto, publish
from vbox import boardrun

ROOT = Path(__file__).resolve().parent.parent
KEY = bytes(range(32))


def agent_tree(dest: Path, version: str, broken: str | None = None) -> Path:
    """A copy of agent/ with another VERSION; broken="crash": it raises at import
    (a release that crashes on boot); "offline": it never connects."""
    d = dest / "agent"
    shutil.copytree(ROOT / "agent", d, ignore=shutil.ignore_patterns("__pycache__"))
    init = d / "__init__.py"
    init.write_text(re.sub(r'VERSION = "[^"]*"', f'VERSION = "{version}"', init.read_text()))
    if broken == "crash":
        init.write_text(init.read_text() + 'raise ImportError("a broken release")\n')
    elif broken == "offline":
        s = d / "session_cold.py"
        s.write_text(s.read_text().replace("async def open_session(box, attempt):\n",
                                           "async def open_session(box, attempt):\n    return None\n"))
    return d


def make_release(work: Path, root: Path, name: str, broken: str | None = None) -> dict:
    """fw build of a changed agent, then ops release build from its output."""
    from firmware import build as fb
    src = agent_tree(work / f"src-{name}", name, broken)
    fb.build(work / f"fw-{name}", "4MB", agent_dir=src)
    return release.build(work / f"fw-{name}", root / name, name)


def box_config(box_id: str, port: int) -> dict:
    return {"box_id": box_id, "broker_host": "127.0.0.1", "broker_port": port, "state_dir": "/state",
            "telemetry_interval": 60, "speedup": 240, "keepalive": 10, "backoff_base": 0.2,
            "backoff_cap": 1.0, "drain_rate": 200, "console": False, "ota_delay": 0.5}


class Box:
    def __init__(self, work: Path, box_id: str, port: int, heap: str = "128k"):
        self.id = box_id
        self.dir = work / box_id
        self.heap = heap
        image = boardrun.build_firmware(work / (box_id + "-fw"), box_config(box_id, port),
                                        {"mqtt_user": box_id, "mqtt_password": "pw", "hmac_key": KEY.hex()})
        vbox.preflash(self.dir, image)
        self.proc: vbox.BoxProcess | None = None
        self.mark = 0                  # console length at the last power-on
        self.cuts: list[str] = []

    def power_on(self) -> None:
        if self.running():
            self.proc.kill()           # never two CPUs on one flash
        self.mark = len(self.proc.console()) if self.proc else 0
        self.proc = vbox.spawn(self.dir, heap=self.heap)

    def running(self) -> bool:
        return self.proc is not None and self.proc.proc.poll() is None

    def cut(self, why: str) -> None:
        assert self.proc
        self.proc.kill()
        self.cuts.append(why)

    def console(self, since_boot: bool = True) -> str:
        c = self.proc.console() if self.proc else ""
        return c[self.mark:] if since_boot else c

    def wait_console(self, needle: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.console():
                return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        if self.proc:
            self.proc.kill()


class Fleet:
    """A broker, a capture, a release server and some boxes on the factory agent."""

    def __init__(self, work: Path, n: int, prefix: str = "ota", rate: float | None = 30000):
        self.work = Path(work)
        self.broker = Mosquitto(self.work / "broker").start()
        self.cap = Capture(self.broker.port)
        self.root = self.work / "releases"
        self.root.mkdir(parents=True, exist_ok=True)
        self.srv = release.serve(self.root, rate=rate)
        self.boxes = [Box(self.work, f"{prefix}-{i}", self.broker.port) for i in range(n)]
        self.versions: dict[str, int] = {}

    def release(self, name: str, broken: str | None = None) -> dict:
        return make_release(self.work, self.root, name, broken)

    def send(self, box: Box, name: str, confirm_s: int = 30) -> int:
        doc = release.template(self.root / name, f"{self.srv.url}/{name}", confirm_s)
        v = self.versions.get(box.id, 0) + 1
        self.versions[box.id] = v
        d = push.prepare(doc, box.id, v, None, key=KEY)
        publish(self.broker.port, f"homebox/v1/{box.id}/desired/release", push.wire(d))
        return v

    def reported(self, box: Box) -> dict | None:
        reps = [json.loads(p) for t, p, _r in list(self.cap.messages)
                if t == f"homebox/v1/{box.id}/reported/release"]
        return reps[-1] if reps else None

    def settled(self, box: Box, v: int) -> str | None:
        rep = self.reported(box)
        o = push.outcome(rep, v)
        return o[0] if o else None

    def health_after(self, box: Box, since: float) -> bool:
        """A health report from the box's latest boot, received after `since`."""
        return any(json.loads(p).get("kind") == "health" for t, p, _r in self._since(box, since))

    def _since(self, box, since):
        with self.cap.lock:
            msgs = list(self.cap.messages)
        return [m for m in msgs[since:] if m[0] == f"homebox/v1/{box.id}/telemetry/health"]

    def seq_problems(self) -> list[str]:
        """Every (box, boot) stream of telemetry and events is 1..max once: no seq
        lost in the middle, none reused for another payload."""
        streams: dict[tuple, dict[int, bytes]] = {}
        bad = []
        with self.cap.lock:
            msgs = list(self.cap.messages)
        for t, p, _r in msgs:
            if "/telemetry/" not in t and not t.endswith("/event"):
                continue
            m = json.loads(p)
            s = streams.setdefault((m["box"], m["boot"]), {})
            if m["seq"] in s and s[m["seq"]] != p:
                bad.append(f"{m['box']} boot {m['boot']} seq {m['seq']} reused")
            s[m["seq"]] = p
        for (b, boot), s in sorted(streams.items()):
            missing = sorted(set(range(1, max(s) + 1)) - set(s))
            if missing:
                bad.append(f"{b} boot {boot}: seqs {missing[:10]} lost")
        return bad

    def seqs(self) -> int:
        return sum(1 for t, _p, _r in self.cap.messages if "/telemetry/" in t or t.endswith("/event"))

    def close(self) -> None:
        for b in self.boxes:
            b.stop()
        self.srv.shutdown()
        self.cap.close()
        self.broker.stop()


# ---- the power-cut run ----------------------------------------------------------------

PHASES = ("download", "switch", "first boot", "random")


def cut_at(fleet: Fleet, box: Box, phase: str, rng: random.Random, target: str = "0.2.0-ota") -> bool:
    """Cut the power at `phase` of an update if the box gets there: the
    download (after its first file), the switch (the pointer written, before the
    restart), the first boot of the new slot (before its confirmation), or at a
    random moment. Returns whether a cut was made."""
    if phase == "download":
        ok = _wait(lambda: _any(box, ("release_install", "release_confirmed", "release_rejected")), 40) \
            and "release_install" in box.console()
        time.sleep(rng.uniform(0.05, 1.5))
        if ok and "release_switch" not in box.console():
            box.cut("mid-download")
            return True
    elif phase == "switch":
        if _wait(lambda: _any(box, ("release_switch", "release_confirmed", "release_rejected")), 60) \
                and "release_switch" in box.console():
            box.cut("mid-switch")
            return True
    elif phase == "first boot":
        # the new slot's banner (after the restart, or at once when the last cut
        # came after the switch), before its confirmation
        if _wait(lambda: _any(box, (f"agent {target} ", "release_confirmed", "release_rejected")), 60,
                 poll=0.002) and f"agent {target} " in box.console():
            if "release_confirmed" not in box.console():
                box.cut("first boot of the new slot")
                return True
    else:
        time.sleep(rng.uniform(0.1, 6.0))
        box.cut("random")
        return True
    box.cut(f"random ({phase} missed)")
    return True


def _any(box: Box, needles) -> bool:
    c = box.console()
    return any(n in c for n in needles)


RELEASES = ("0.2.0-ota", "0.3.0-ota")


def power_cut_run(work: Path, cuts: int, boxes: int, seed: int = 1, phases=PHASES, log=print) -> dict:
    """Boxes updated again and again (two releases, alternately, each a new version
    of the release document) while their power is cut at the update's points, until
    `cuts` cuts are made: each cut falls in an update under way (a box that settled
    its release is sent the other one first). Then each box boots, and must publish
    and settle its last release (applied, or rolled back and reporting why)."""
    rng = random.Random(seed)
    fleet = Fleet(work, boxes, prefix=f"cut{seed}")
    try:
        for name in RELEASES:
            fleet.release(name)
        # the first power-on: each box connects once on the factory agent
        start = len(fleet.cap.messages)
        for b in fleet.boxes:
            b.power_on()
        for b in fleet.boxes:
            assert _wait(lambda b=b: fleet.health_after(b, start), 60), b.console()[-2000:]
        sent: dict[str, tuple[int, str]] = {}
        updates: dict[str, int] = {b.id: 0 for b in fleet.boxes}

        def next_release(b: Box) -> str:
            # the release under way, or a new one once the last has settled
            cur = sent.get(b.id)
            if cur is None or fleet.settled(b, cur[0]):
                name = RELEASES[updates[b.id] % 2]
                updates[b.id] += 1
                sent[b.id] = (fleet.send(b, name), name)
            return sent[b.id][1]

        per = [cuts // boxes + (1 if i < cuts % boxes else 0) for i in range(boxes)]
        errors: list[str] = []

        def drive(b: Box, n: int, r: random.Random) -> None:
            try:
                for i in range(n):
                    phase = phases[i % len(phases)] if i < len(phases) else r.choice(phases)
                    if not b.running():
                        b.power_on()
                    target = next_release(b)
                    cut_at(fleet, b, phase, r, target)
            except Exception as e:           # reported below, with the box's console
                errors.append(f"{b.id}: {e!r}")

        ths = [threading.Thread(target=drive, args=(b, n, random.Random(rng.random())))
               for b, n in zip(fleet.boxes, per)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        # the last power-on: every box must boot, publish and settle its last release
        start = len(fleet.cap.messages)
        for b in fleet.boxes:
            b.power_on()
        unbootable, outcomes = [], {}
        for b in fleet.boxes:
            v, name = sent[b.id]
            settled = _wait(lambda b=b, v=v: fleet.settled(b, v), 180)
            up = _wait(lambda b=b: fleet.health_after(b, start), 60)
            if not up or not settled:
                unbootable.append(b.id)
                log(f"{b.id}: up={up} settled={settled}\n{b.console()[-3000:]}")
            rep = fleet.reported(b) or {}
            outcomes[b.id] = {"outcome": settled, "sent": name, "release": rep.get("release"),
                              "reason": (rep.get("rejected") or {}).get("reason"), "cuts": b.cuts,
                              "updates": updates[b.id]}
        # the outbox drains: wait for the seq streams to close their gaps
        _wait(lambda: not fleet.seq_problems(), 30)
        made = sum(len(b.cuts) for b in fleet.boxes)
        return {"cuts": made, "boxes": boxes, "unbootable": len(unbootable), "seq_problems": fleet.seq_problems(),
                "seqs_checked": fleet.seqs(), "errors": errors, "outcomes": outcomes,
                "updates": sum(updates.values()),
                "applied": sum(1 for o in outcomes.values() if o["outcome"] == "applied"),
                "rolled_back": sum(1 for o in outcomes.values() if o["outcome"] == "rejected"),
                "phases": {p: sum(1 for b in fleet.boxes for c in b.cuts if c.startswith(p))
                           for p in ("mid-download", "mid-switch", "first boot", "random")}}
    finally:
        fleet.close()


def _wait(pred, timeout: float, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(poll)
    return pred()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.otafleet")
    ap.add_argument("--cuts", type=int, default=50)
    ap.add_argument("--boxes", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="homebox-ota-chaos-"))
    try:
        t0 = time.time()
        r = power_cut_run(work, a.cuts, a.boxes, a.seed)
        r["seconds"] = round(time.time() - t0, 1)
        print(json.dumps({k: v for k, v in r.items() if k != "outcomes"}, indent=1))
        ok = (r["cuts"] >= a.cuts and r["unbootable"] == 0 and not r["seq_problems"] and not r["errors"])
        print(f"OTA power cuts: {r['cuts']} cuts on {a.boxes} boxes, {r['unbootable']} unbootable, "
              f"{len(r['seq_problems'])} seq problems, {r['applied']} applied, {r['rolled_back']} rolled back: "
              f"{'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
