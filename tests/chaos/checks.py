"""What the chaos runs check from the outside: the state files a box leaves after a
cut, every (box, boot) stream in the database, convergence to the desired
versions, clear rejections; and the final clean run of every box."""
from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from pathlib import Path

from agent import topics
from backend.store import Store
from tests.chaos.boxes import ChaosBox
from tests.chaos.harness import BOX_CFG, SECTIONS, Backend, ChaosError, Tally
from tests.helpers import Capture


def read_state(state_dir: Path) -> tuple[int, list[str], dict[tuple[int, int], bytes]]:
    """Parse every state file of a box. Returns (files checked, problems, the
    records still in the outbox {(boot, seq): envelope bytes}).

    The outbox format is agent/outbox.py's: `prio|boot|seq|topic|payload\\n` lines in
    segment files, `head` = {"seg", "off"} of the oldest unacknowledged record.
    Only the very last line of the newest segment may be torn by a cut."""
    problems: list[str] = []
    n = 0
    for p in sorted(state_dir.rglob("*")):
        if p.is_file() and (p.suffix == ".json" or p.name == "head"):
            n += 1
            try:
                json.loads(p.read_text())
            except (ValueError, UnicodeDecodeError) as e:
                problems.append(f"{p.relative_to(state_dir)} does not parse: {e}")
    pending: dict[tuple[int, int], bytes] = {}
    ob = state_dir / "outbox"
    if not ob.is_dir():
        return n, problems, pending
    try:
        head = json.loads((ob / "head").read_text())
    except (OSError, ValueError):
        head = {"seg": 0, "off": 0}
    segs = sorted(int(p.name[:8]) for p in ob.glob("*.seg") if len(p.name) == 12 and p.name[:8].isdigit())
    live = [s for s in segs if s >= head.get("seg", 0)]
    if live and live[0] > head.get("seg", 0):
        head = {"seg": live[0], "off": 0}
    for s in live:
        data = (ob / ("%08d.seg" % s)).read_bytes()
        start = head.get("off", 0) if s == head.get("seg") else 0
        n += 1
        if start > len(data) or (start and data[start - 1:start] != b"\n"):
            problems.append(f"outbox head {head} is not at a record boundary of segment {s}")
            continue
        lines = data[start:].split(b"\n")
        tail = lines.pop()
        if tail and s != live[-1]:
            problems.append(f"outbox segment {s} has a torn record before the newest segment")
        for ln in lines:
            parts = ln.split(b"|", 4)
            try:
                prio, boot, seq = int(parts[0]), int(parts[1]), int(parts[2])
                env = json.loads(parts[4])
                if prio not in (0, 1) or env["boot"] != boot or env["seq"] != seq:
                    raise ValueError("envelope does not match its record")
            except (ValueError, IndexError, KeyError, TypeError) as e:
                problems.append(f"outbox segment {s}: bad record {ln[:80]!r}: {e}")
                continue
            pending[(boot, seq)] = parts[4]
    return n, problems, pending


def inspect_box(b) -> tuple[int, list[str], dict[tuple[int, int], bytes]]:
    """After a cut: the filesystem mounts (littlefs boxes), every state file parses;
    returns (files checked, problems, records still in the outbox)."""
    problems = b.check_fs()
    if problems:
        return 0, problems, {}
    return read_state(b.state_dir)


class Ledger:
    """Every message seen for each (box, boot, seq): on the wire (a capture) and in
    the boxes' outboxes at cuts. Two different bodies for one key = a reused number."""

    def __init__(self):
        self.bodies: dict[tuple[str, int, int], set[bytes]] = defaultdict(set)
        self.copies: dict[tuple[str, int, int], int] = defaultdict(int)
        self.must_arrive: set[tuple[str, int, int]] = set()

    def add_capture(self, cap: Capture, boxes: set[str]) -> None:
        with cap.lock:
            msgs = list(cap.messages)
        for t, p, _r in msgs:
            tp = topics.parse(t)
            if not tp or tp[0] not in boxes or tp[1] not in ("telemetry", "event"):
                continue
            try:
                m = json.loads(p)
                key = (m["box"], m["boot"], m["seq"])
            except (ValueError, KeyError, TypeError):
                continue
            self.bodies[key].add(bytes(p))
            self.copies[key] += 1

    def add_pending(self, box: str, pending: dict[tuple[int, int], bytes]) -> None:
        for (boot, seq), body in pending.items():
            self.bodies[(box, boot, seq)].add(bytes(body))
            self.must_arrive.add((box, boot, seq))

    def reused(self) -> list[tuple[str, int, int]]:
        return [k for k, v in self.bodies.items() if len(v) > 1]


def check_streams(store: Store, boxes: set[str], tally: Tally, ledger: Ledger | None = None,
                  last_seq: dict[str, tuple[int, int]] | None = None) -> None:
    """Every (box, boot) stream holds 1..max once; gaps only where declared dropped."""
    streams: dict[tuple[str, int], list[int]] = defaultdict(list)
    for box, boot, seq in store.seqs():
        if box in boxes:
            streams[(box, boot)].append(seq)
    declared = defaultdict(list)
    for g in store.gaps():
        if g["box"] in boxes and g["cause"] == "dropped":
            declared[(g["box"], g["boot"])].append((g["first"], g["last"]))
    have = set()
    for (box, boot), seqs in sorted(streams.items()):
        seqs.sort()
        tally.seqs_checked += len(seqs)
        if len(set(seqs)) != len(seqs):
            tally.duplicated += len(seqs) - len(set(seqs))
            tally.fail(f"{box} boot {boot}: a seq stored twice")
        have.update((box, boot, s) for s in seqs)
        missing = sorted(set(range(1, seqs[-1] + 1)) - set(seqs))
        ok = [s for s in missing if any(a <= s <= b for a, b in declared[(box, boot)])]
        tally.declared_dropped += len(ok)
        lost = [s for s in missing if s not in ok]
        if lost:
            tally.lost += len(lost)
            tally.fail(f"{box} boot {boot}: seqs {lost[:10]}{'...' if len(lost) > 10 else ''} never arrived "
                       f"(max {seqs[-1]}, {len(seqs)} stored)")
    if ledger is not None:
        gone = sorted(k for k in ledger.must_arrive if k[0] in boxes and k not in have)
        if gone:
            tally.lost += len(gone)
            tally.fail(f"{len(gone)} records that were in an outbox at a cut never arrived: {gone[:5]}")
        reused = [k for k in ledger.reused() if k[0] in boxes]
        tally.duplicated += len(reused)
        for k in reused[:5]:
            tally.fail(f"{k} carried different messages: {sorted(ledger.bodies[k])[:2]}")
        tally.redelivered += sum(c - 1 for k, c in ledger.copies.items() if k[0] in boxes and c > 1)
    for box, (boot, seq) in (last_seq or {}).items():
        if seq and (box, boot, seq) not in have:
            tally.lost += 1
            tally.fail(f"{box} boot {boot}: its last seq {seq} (logged at its clean stop) is not stored")


def check_converged(store: Store, boxes: list, tally: Tally) -> None:
    desired: dict[tuple[str, str], int] = {(d["box"], d["section"]): d["version"] for d in store.desired()}
    reported = store.reported()
    for b in boxes:
        ok = True
        for p in b.check_fs():               # a littlefs box: read its files afresh
            tally.fail(p)
        for s in SECTIONS:
            want = desired.get((b.box_id, s))
            if want is None:
                continue
            rep = reported.get(b.box_id, {}).get(s) or {}
            try:
                on_disk = json.loads((b.state_dir / "docs" / f"{s}.json").read_text()).get("version")
            except (OSError, ValueError):
                on_disk = None
            # The status may say "rejected" (a later bad document): the version is what counts.
            if rep.get("version") != want or on_disk != want:
                ok = False
                tally.fail(f"{b.box_id} {s}: desired v{want}, reported {rep.get('status')} "
                           f"v{rep.get('version')}, on disk v{on_disk}")
        tally.converged += ok


def check_rejections(cap: Capture, tally: Tally) -> None:
    """Every rejection a box reports names the field and the reason."""
    for m in cap.payloads("/reported/"):
        rj = m.get("rejected") if isinstance(m, dict) and m.get("status") == "rejected" else None
        if rj is None:
            continue
        tally.rejected_seen += 1
        if not (isinstance(rj.get("field"), str) and rj["field"] and isinstance(rj.get("reason"), str)
                and rj["reason"]):
            tally.fail(f"unclear rejection: {m}")


def final_run(boxes: list[ChaosBox], tally: Tally, ledger: Ledger | None = None,
              seconds: float = 2.0, timeout: float = 90, tries: int = 3) -> dict[str, tuple[int, int]]:
    """Every box boots once more, runs a few seconds, drains its outbox and stops
    cleanly. A box still running is cut first (and its state checked). Returns
    {box: (boot, last seq)} from the boxes' own logs.

    A report made while the box shuts down can stay in its outbox (the telemetry
    task may wake once more after the stop: see the report of issue 9); it goes
    out at the next boot, so such a box runs once more, up to `tries` times."""
    for b in boxes:
        if b.alive():
            b.kill()
            n, problems, pending = inspect_box(b)
            tally.state_files += n
            for p in problems:
                tally.fail(f"{b.box_id}: {p}")
            if ledger is not None:
                ledger.add_pending(b.box_id, pending)
    last = {}
    todo = list(boxes)
    for attempt in range(tries):
        for b in todo:
            b.reconfigure(duration=seconds, shutdown_drain=30, drain_rate=BOX_CFG["drain_rate"])
            b.start()
        again = []
        for b in todo:
            try:
                rc = b.wait(timeout)
            except subprocess.TimeoutExpired:
                b.kill()
                rc = None
            boot = b.log_values("boot", "boot")
            seq = b.log_values("stopped", "seq")
            backlog = b.log_values("stopped", "backlog")
            tally.boots += 1
            b.reconfigure(duration=0)
            if rc != 0 or not boot or not backlog or not b.log_values("connected", "boot"):
                tally.fail(f"{b.box_id} ({b.interp}) final run: rc {rc}\n{b.output()}")
                continue
            for p in b.problems():
                tally.fail(f"{b.box_id} final run: {p}")
            last[b.box_id] = (int(boot[0]), int(seq[0]) if seq else 0)
            if backlog != ["0"]:
                tally.extra["left in an outbox at a clean stop"] = \
                    tally.extra.get("left in an outbox at a clean stop", 0) + int(backlog[0])
                if ledger is not None:
                    ledger.add_pending(b.box_id, inspect_box(b)[2])
                if attempt + 1 == tries:
                    tally.fail(f"{b.box_id}: backlog {backlog[0]} after {tries} clean stops")
                again.append(b)
        todo = again
        if not todo:
            break
    return last


def wait_stored(backend: Backend, last: dict[str, tuple[int, int]], ledger: Ledger | None,
                timeout: float = 60) -> None:
    def done():
        have = set(backend.store.seqs())
        if any(seq and (box, boot, seq) not in have for box, (boot, seq) in last.items()):
            return False
        return ledger is None or all(k in have for k in ledger.must_arrive)
    try:
        backend.wait(done, timeout, "the database to hold every box's last message")
    except ChaosError:
        pass       # check_streams says what is missing
