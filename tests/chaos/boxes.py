"""The chaos runs' boxes: agent processes (CPython or MicroPython, optionally in a
network namespace) and virtual ESP32s running from the littlefs in their flash."""
from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

from homebox import boxrun
from tests.boxproc import BoxProcess
from tests.chaos.harness import BOX_CFG


class ChaosBox(BoxProcess):
    """A box process (BoxProcess) that can be run inside a network namespace and
    whose state directory we inspect after each power cut."""

    def __init__(self, workdir: Path, box_id: str, port: int, interp: str, netns: str | None = None,
                 **cfg):
        merged = dict(BOX_CFG)
        merged.update(cfg)
        super().__init__(workdir, box_id, port, interp, **merged)
        self.netns = netns
        self.runs = 0

    def reconfigure(self, **cfg) -> None:
        c = json.loads(self.config_path.read_text())
        c.update(cfg)
        self.config_path.write_text(json.dumps(c, indent=1))

    def start(self) -> ChaosBox:
        if self.alive():
            self.kill()            # never two agents on one state directory
        cmd, env = boxrun.box_command(self.config_path, micropython=self.interp == "micropython",
                                      heap=self.heap)
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns] + cmd
        self.lines = []
        self.proc = subprocess.Popen(cmd, env=env, cwd=boxrun.neutral_cwd(), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1)
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        self.runs += 1
        return self

    def _read(self, proc):
        # Also kept on disk (box.log in the box's directory), for the post-mortem.
        with open(self.workdir / "box.log", "a") as f:
            f.write(f"---- run {self.runs} ----\n")
            for line in proc.stdout:
                self.lines.append(line.rstrip("\n"))
                f.write(line)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def problems(self) -> list[str]:
        bad = ("Traceback", "MemoryError", "task_failed", "Error:")
        return [ln for ln in self.lines if any(b in ln for b in bad)]


    def check_fs(self) -> list[str]:
        return []          # a host directory: nothing to mount


class LfsBox:
    """A virtual ESP32 (vbox/): the agent runs under MicroPython from the littlefs
    filesystem in the box's flash file, as on a real board. kill -9 of the vbox
    process is a power cut of the whole board. After each cut the filesystem must
    mount (littlefs v2, 4096-byte blocks) and its state files are read from it."""

    FLASH = "4MB"

    def __init__(self, workdir: Path, box_id: str, port: int, **cfg):
        from firmware import build as fb
        from firmware import partitions as pt
        from vbox import standin
        self.workdir = Path(workdir) / box_id
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.box_id = box_id
        self.interp = "micropython-vbox"
        self.runs = 0
        self.vb = None
        self._mark = 0
        self.vfs_off, self.vfs_size = pt.vfs_for(self.FLASH)
        merged = dict(BOX_CFG)
        merged.update(cfg)
        merged.update(box_id=box_id, broker_host="127.0.0.1", broker_port=port, state_dir="/state")
        base = standin.make_base(self.FLASH)
        (self.workdir / "base.bin").write_bytes(base)
        lock = dict(fb.load_lock(), sha256=fb.sha256(base))
        (self.workdir / "lock.json").write_text(json.dumps(lock))
        import contextlib
        import io
        with contextlib.redirect_stdout(io.StringIO()):        # esptool's merge notes
            r = fb.build(self.workdir / "fw", self.FLASH, overlay={"config.json": json.dumps(merged)},
                         base_bin=self.workdir / "base.bin", lock_path=self.workdir / "lock.json")
        image = bytearray(b"\xff" * pt.parse_flash_size(self.FLASH))
        m = (r.out_dir / "merged.bin").read_bytes()
        image[0x1000:0x1000 + len(m)] = m            # as esptool would write it at 0x1000
        self.flash = self.workdir / "flash.bin"
        self.flash.write_bytes(bytes(image))
        self._extract = self.workdir / "extract"

    # ---- the littlefs in the flash file ----
    def _fs(self):
        from littlefs import LittleFS, UserContext

        from firmware import partitions as pt
        with open(self.flash, "rb") as f:
            f.seek(self.vfs_off)
            data = f.read(self.vfs_size)
        ctx = UserContext(len(data))
        ctx.buffer[:] = data
        fs = LittleFS(context=ctx, mount=False, block_size=pt.LFS_BLOCK_SIZE,
                      block_count=self.vfs_size // pt.LFS_BLOCK_SIZE, read_size=pt.LFS_READ_SIZE,
                      prog_size=pt.LFS_PROG_SIZE, lookahead_size=pt.LFS_LOOKAHEAD)
        fs.mount()                                     # raises if it does not mount
        return fs, ctx

    def check_fs(self) -> list[str]:
        """Mount the filesystem and copy it out (state_dir then points into the copy)."""
        import shutil

        from littlefs import LittleFSError
        shutil.rmtree(self._extract, ignore_errors=True)
        try:
            fs, _ctx = self._fs()
            for root, _dirs, files in fs.walk("/"):
                for name in files:
                    src = (root.rstrip("/") + "/" + name)
                    dst = self._extract / src.lstrip("/")
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    with fs.open(src, "rb") as f:
                        dst.write_bytes(f.read())
            (self._extract / "state").mkdir(parents=True, exist_ok=True)
        except LittleFSError as e:
            return [f"{self.box_id}: the littlefs filesystem does not mount after a cut: {e}"]
        return []

    @property
    def state_dir(self) -> Path:
        return self._extract / "state"

    @property
    def config_path(self) -> Path:
        return self._extract / "config.json"

    def reconfigure(self, **cfg) -> None:
        fs, ctx = self._fs()
        with fs.open("/config.json", "r") as f:
            c = json.loads(f.read())
        c.update(cfg)
        with fs.open("/config.json", "w") as f:
            f.write(json.dumps(c))
        fs.unmount()
        with open(self.flash, "r+b") as f:
            f.seek(self.vfs_off)
            f.write(bytes(ctx.buffer))

    # ---- the process ----
    def start(self) -> LfsBox:
        import vbox
        if self.vb is not None and self.vb.proc.poll() is None:
            self.kill()
        con = self.workdir / "console.log"
        self._mark = con.stat().st_size if con.exists() else 0
        self.vb = vbox.spawn(self.workdir, name=self.box_id)
        self.runs += 1
        return self

    @property
    def proc(self):
        return self.vb.proc if self.vb else None

    @property
    def lines(self) -> list[str]:
        try:
            with open(self.workdir / "console.log", "rb") as f:
                f.seek(self._mark)
                text = f.read().decode(errors="replace")
        except OSError:
            return []
        return [ln.rstrip("\r") for ln in text.split("\n")]

    def alive(self) -> bool:
        return self.vb is not None and self.vb.proc.poll() is None and \
            not any(ln.startswith('Type "help()"') for ln in self.lines)

    def kill(self) -> None:
        if self.vb is not None:
            self.vb.kill()

    def wait(self, timeout: float = 60) -> int:
        """Until the agent stops (the board then sits at the REPL), then power off."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(ln.startswith("[hb] stopped") for ln in self.lines):
                time.sleep(0.3)
                self.kill()
                return 0
            if self.vb.proc.poll() is not None:
                return 1
            time.sleep(0.1)
        self.kill()
        raise subprocess.TimeoutExpired("vbox", timeout)

    def wait_log(self, needle: str, timeout: float = 30, start: int = 0) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(needle in ln for ln in self.lines[start:]):
                return True
            time.sleep(0.1)
        return False

    def log_values(self, event: str, key: str) -> list[str]:
        return BoxProcess.log_values(self, event, key)

    def output(self) -> str:
        return "\n".join(self.lines[-60:])

    def problems(self) -> list[str]:
        bad = ("Traceback", "MemoryError", "task_failed", "Error:", "filesystem appears to be corrupted")
        return [ln for ln in self.lines if any(b in ln for b in bad)]


def make_fleet(workdir: Path, port: int, n: int, prefix: str, interps=("cpython", "micropython"),
               **cfg) -> list[ChaosBox]:
    return [ChaosBox(workdir / f"{prefix}-{i}", f"{prefix}-{i}", port, interps[i % len(interps)], **cfg)
            for i in range(n)]
