"""Virtual boxes: processes that behave, on an RFC 2217 serial link, like an
ESP32 devkit running MicroPython. Only the CPU is swapped: the flash bytes,
the littlefs format, esptool and the MicroPython interpreter are the real ones.

    from vbox import spawn
    box = spawn(tmp / "box-1", flash_size="4MB")
    box.url          # "rfc2217://127.0.0.1:PORT", for esptool or pyserial
    box.kill()       # SIGKILL (a power cut); spawn() again on the same dir
    box.set_faults(drop_link_after=200_000)   # fault injection; box.replug() clears
    box.stop()
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class VboxError(RuntimeError):
    pass


@dataclass
class BoxProcess:
    name: str
    url: str
    port: int
    dir: Path
    mac: str
    proc: subprocess.Popen

    @property
    def flash_path(self) -> Path:
        return self.dir / "flash.bin"

    @property
    def console_path(self) -> Path:
        return self.dir / "console.log"

    def console(self) -> str:
        try:
            return self.console_path.read_bytes().decode(errors="replace")
        except OSError:
            return ""

    def set_faults(self, **faults) -> None:
        """Inject faults (see vbox/device.py): drop_link_after=N bytes of flash
        data, flash_id="ffffff", corrupt_write=1. Read by the box as it goes."""
        tmp = self.dir / "faults.json.tmp"
        tmp.write_text(json.dumps(faults))
        os.replace(tmp, self.dir / "faults.json")

    def faults(self) -> dict:
        try:
            return json.loads((self.dir / "faults.json").read_text())
        except (OSError, ValueError):
            return {}

    def replug(self) -> None:
        """Clear every fault: the box is back on the hub, its port answers again."""
        try:
            (self.dir / "faults.json").unlink()
        except FileNotFoundError:
            pass

    def kill(self) -> None:
        """kill -9: the box loses power at once."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 5) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc.wait()


def preflash(box_dir: Path | str, image: bytes, offset: int = 0x1000, flash_size: str = "4MB") -> None:
    """Put a merged firmware image in a box's flash before it first powers on: a box
    that left the factory flashed. The boot that follows is the real one; tests that
    are about flashing go through esptool instead."""
    from firmware import partitions as pt
    from vbox.flash import Flash
    flash = Flash(Path(box_dir) / "flash.bin", pt.parse_flash_size(flash_size))
    try:
        flash.erase(offset, (len(image) + 0xFFF) & ~0xFFF)
        flash.program(offset, image)
    finally:
        flash.close()


def spawn(box_dir: Path | str, flash_size: str = "4MB", name: str | None = None, port: int = 0,
          scenario: Path | str | None = None, baud_limit: bool = False, heap: str = "128k",
          python: str | None = None, board: str = "none", speedup: float = 1.0) -> BoxProcess:
    """Start one virtual box process on box_dir (its flash persists there)."""
    box_dir = Path(box_dir).resolve()
    box_dir.mkdir(parents=True, exist_ok=True)
    cmd = [python or sys.executable, "-m", "vbox", "--dir", str(box_dir), "--flash-size", flash_size,
           "--port", str(port), "--heap", heap, "--json",
           "--board", board]
    if speedup != 1.0:
        cmd += ["--speedup", str(speedup)]
    if name:
        cmd += ["--name", name]
    if scenario:
        cmd += ["--scenario", str(Path(scenario).resolve())]
    if baud_limit:
        cmd.append("--baud-limit")
    from firmware.toolchain import child_env, installed
    # a checkout's vbox/ (it may be newer than an editable install) goes on the
    # child's path; an installed one runs from the box's own directory
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(box_dir / "vbox.log", "ab"),
                            env=child_env(ROOT), cwd=str(box_dir if installed(ROOT) else ROOT))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        raise VboxError(f"virtual box did not start: {(box_dir / 'vbox.log').read_text()[-2000:]}")
    info = json.loads(line)
    return BoxProcess(info["name"], info["url"], info["port"], box_dir, info["mac"], proc)
