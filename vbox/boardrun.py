"""A virtual box that boots the firmware a bench would flash: the agent compiled to
.mpy on a littlefs image, firmware/main.py run by the board's boot, under a bounded
MicroPython heap. The footprint test and `make bench` measure the agent here, on the
path a box runs (docs/performance.md).

    box = boot_firmware(tmp / "box", {"box_id": "b1", ...}, {"mqtt_user": ...}, heap="64k")
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import vbox
from firmware import build as fb
from vbox import standin


def build_firmware(out_dir: Path, config: dict, secrets: dict | None = None, flash_size: str = "4MB",
                   agent_dir: Path | None = None) -> bytes:
    """The merged image (flashed at 0x1000) of the stand-in base and a filesystem that
    holds the agent, the board glue, /config.json and /secrets.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = standin.make_base(flash_size)
    (out_dir / "base.bin").write_bytes(base)
    lock = dict(fb.load_lock(), sha256=hashlib.sha256(base).hexdigest())
    (out_dir / "lock.json").write_text(json.dumps(lock))
    overlay = {"config.json": json.dumps(config)}
    if secrets is not None:
        overlay["secrets.json"] = json.dumps(secrets)
    res = fb.build(out_dir / "parts", flash_size, overlay=overlay, base_bin=out_dir / "base.bin",
                   lock_path=out_dir / "lock.json", agent_dir=agent_dir)
    return (res.out_dir / "merged.bin").read_bytes()


def boot_firmware(box_dir: Path, config: dict, secrets: dict | None = None, heap: str = "128k",
                  flash_size: str = "4MB", board: str = "none", scenario: Path | None = None,
                  speedup: float = 1.0) -> vbox.BoxProcess:
    """Build, pre-flash and power on one virtual box; it boots main.py at once."""
    box_dir = Path(box_dir)
    image = build_firmware(box_dir.parent / (box_dir.name + "-fw"), config, secrets, flash_size)
    vbox.preflash(box_dir, image, flash_size=flash_size)
    return vbox.spawn(box_dir, flash_size=flash_size, heap=heap, board=board, scenario=scenario,
                      speedup=speedup)


PROMPT = ">>> "          # the REPL prompt: main.py has returned (or died)


def wait_stopped(box: vbox.BoxProcess, timeout: float) -> bool:
    """Wait until the agent's main.py has ended (the board drops to its REPL)."""
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if PROMPT in box.console():
            return True
        if box.proc.poll() is not None:
            return False
        time.sleep(0.1)
    return False
