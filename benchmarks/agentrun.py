"""Shared by the agent benchmarks: run the real agent under the real `micropython`
interpreter against a real Mosquitto, and read back what it logged, published
and cost (CPU from the kernel's rusage of the process)."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from homebox import boxrun
from tests.helpers import Capture, Mosquitto, publish  # noqa: F401  (re-exported for bench modules)

ROOT = Path(__file__).resolve().parent.parent


def workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"hb-bench-{prefix}-"))


def kv(line: str) -> dict[str, str]:
    """'[hb] stopped cycles=5 seq=7' -> {'cycles': '5', 'seq': '7'}"""
    out = {}
    for w in line.split()[2:]:
        k, sep, v = w.partition("=")
        if sep:
            out[k] = v
    return out


def logged(lines: list[str], event: str) -> list[dict[str, str]]:
    return [kv(ln) for ln in lines if ln.startswith(f"[hb] {event} ") or ln == f"[hb] {event}"]


def num(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


@dataclass
class Run:
    rc: int
    lines: list[str]
    cpu_s: float                 # user + system CPU of the interpreter process
    wall_s: float
    maxrss_kb: int
    health: list[dict] = field(default_factory=list)

    @property
    def stopped(self) -> dict[str, str]:
        s = logged(self.lines, "stopped")
        return s[-1] if s else {}

    @property
    def ok(self) -> bool:
        text = "\n".join(self.lines)
        return self.rc == 0 and "MemoryError" not in text and "task_failed" not in text


def run_box(work: Path, port: int, box_id: str, heap: str = "128k", capture: bool = False,
            timeout: float = 600, **cfg) -> Run:
    """One agent run to its stop condition (max_cycles or duration in cfg)."""
    cfg.setdefault("broker_host", "127.0.0.1")
    path = boxrun.write_config(work / box_id, box_id=box_id, broker_port=port, **cfg)
    cmd, env = boxrun.box_command(path, micropython=True, heap=heap)
    cap = Capture(port, f"homebox/v1/{box_id}/telemetry/health") if capture else None
    t0 = time.time()
    out = open(work / box_id / "stdout.log", "w+")
    proc = subprocess.Popen(cmd, env=env, cwd=boxrun.neutral_cwd(), stdout=out, stderr=subprocess.STDOUT)
    deadline = t0 + timeout
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.time() > deadline:
            proc.kill()
            pid, status, ru = os.wait4(proc.pid, 0)
            break
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.time() - t0
    out.seek(0)
    lines = out.read().splitlines()
    out.close()
    health = []
    if cap is not None:
        st = logged(lines, "stopped")
        want = num(st[-1].get("cycles")) if st else 0
        cap.wait_for(lambda c: len(c.messages) >= (want or 0), timeout=30)
        cap.close()
        health = sorted((json.loads(p) for _t, p, _r in cap.messages), key=lambda m: (m["boot"], m["seq"]))
    return Run(proc.returncode, lines, ru.ru_utime + ru.ru_stime, wall, ru.ru_maxrss, health)


class Broker:
    """A real Mosquitto for a benchmark (tests/helpers.Mosquitto)."""

    def __init__(self, work: Path, **kw):
        self.m = Mosquitto(work / "broker", **kw)

    def __enter__(self) -> Mosquitto:
        return self.m.start()

    def __exit__(self, *exc) -> None:
        self.m.stop()
