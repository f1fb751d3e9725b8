"""Run the real agent as a subprocess (CPython or MicroPython) for system tests."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from homebox import boxrun


class BoxProcess:
    def __init__(self, workdir: Path, box_id: str, port: int, interp: str = "cpython",
                 heap: str = "128k", **cfg):
        self.workdir = Path(workdir)
        self.box_id = box_id
        self.interp = interp
        self.heap = heap
        cfg.setdefault("telemetry_interval", 60)
        cfg.setdefault("speedup", 600)
        cfg.setdefault("keepalive", 10)
        cfg.setdefault("backoff_base", 0.2)
        cfg.setdefault("backoff_cap", 2.0)
        cfg.setdefault("drain_rate", 200)
        self.config_path = boxrun.write_config(self.workdir, box_id=box_id, broker_host="127.0.0.1",
                                               broker_port=port, **cfg)
        self.state_dir = Path(json.loads(self.config_path.read_text())["state_dir"])
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    def start(self) -> BoxProcess:
        cmd, env = boxrun.box_command(self.config_path, micropython=self.interp == "micropython",
                                      heap=self.heap)
        self.proc = subprocess.Popen(cmd, env=env, cwd=boxrun.neutral_cwd(), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1)
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        return self

    def _read(self, proc):
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self._reader:
            self._reader.join(2)

    def wait(self, timeout: float = 60) -> int:
        assert self.proc
        rc = self.proc.wait(timeout)
        if self._reader:
            self._reader.join(2)
        return rc

    def wait_log(self, needle: str, timeout: float = 30, start: int = 0) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(needle in ln for ln in self.lines[start:]):
                return True
            if self.proc and self.proc.poll() is not None and not any(needle in ln for ln in self.lines[start:]):
                time.sleep(0.2)
                return any(needle in ln for ln in self.lines[start:])
            time.sleep(0.05)
        return False

    def log_values(self, event: str, key: str) -> list[str]:
        out = []
        for ln in self.lines:
            parts = ln.split()
            if len(parts) >= 2 and parts[0] == "[hb]" and parts[1] == event:
                for p in parts[2:]:
                    if p.startswith(key + "="):
                        out.append(p[len(key) + 1:])
        return out

    def output(self) -> str:
        return "\n".join(self.lines[-60:])
