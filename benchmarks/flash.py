"""Flash bench: a full 4 MB image, then the re-flash after a one-file change
(esptool's diff_with), at 921600 baud against a virtual box whose link is
throttled to the negotiated baud rate (--baud-limit).

    python -m benchmarks.flash

`run()` returns a dict of figures (used by `make bench`). Uses the stand-in base
firmware (vbox/standin.py): the bytes differ from the real MicroPython .bin, but
the flash layout and sizes are the same; the real .bin (~1.7 MB of code)
compresses far less than the stand-in's padding, so the full-flash time here is
a lower bound for the base part and exact for the filesystem part.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

import serial
from esptool import cmds

import vbox
from firmware import build as fb
from vbox import standin

ROOT = Path(__file__).resolve().parent.parent

BAUD = 921600


def _flash(url: str, image: Path, diff_with: Path | None = None) -> float:
    t = time.monotonic()
    # timeout=3 as esptool's commands use: see docs/decisions/0002-virtual-box.md
    with cmds.detect_chip(serial.serial_for_url(url, timeout=3)) as esp:
        esp = cmds.run_stub(esp)
        esp.change_baud(BAUD)
        cmds.attach_flash(esp)
        kw = {"diff_with": [str(diff_with)]} if diff_with else {}
        cmds.write_flash(esp, [(0x1000, str(image))], **kw)
        cmds.reset_chip(esp, "no-reset")
    return time.monotonic() - t


def run() -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="hb-bench-flash-"))
    try:
        base = standin.make_base("4MB")
        (tmp / "base.bin").write_bytes(base)
        lock = dict(fb.load_lock(), sha256=hashlib.sha256(base).hexdigest())
        (tmp / "lock.json").write_text(json.dumps(lock))
        agent = tmp / "src" / "agent"
        shutil.copytree(ROOT / "agent", agent, ignore=shutil.ignore_patterns("__pycache__"))
        overlay = {"config.json": json.dumps({"box_id": "bench-1", "state_dir": "/state"})}
        kw = dict(overlay=overlay, base_bin=tmp / "base.bin", lock_path=tmp / "lock.json", agent_dir=agent)
        t = time.monotonic()
        old = fb.build(tmp / "old", "4MB", **kw)
        build_s = time.monotonic() - t
        box = vbox.spawn(tmp / "box", baud_limit=True)
        try:
            full_s = _flash(box.url, old.out_dir / "merged.bin")
            full_bytes = json.loads((box.dir / "stats.json").read_text())["loader_payload_bytes"]
            with open(agent / "backoff.py", "a") as f:
                f.write("\n\ndef _bench_marker():\n    return 1\n")
            new = fb.build(tmp / "new", "4MB", **kw)
            diff_s = _flash(box.url, new.out_dir / "merged.bin", diff_with=old.out_dir / "merged.bin")
            diff_bytes = json.loads((box.dir / "stats.json").read_text())["loader_payload_bytes"] - full_bytes
        finally:
            box.stop()
        return {
            "baud": BAUD,
            "image_bytes": (old.out_dir / "merged.bin").stat().st_size,
            "vfs_bytes": (old.out_dir / "vfs.bin").stat().st_size,
            "agent_files": len(old.manifest["files"]),
            "build_s": round(build_s, 2),
            "full_flash_s": round(full_s, 2),
            "full_flash_payload_bytes": full_bytes,
            "reflash_one_file_s": round(diff_s, 2),
            "reflash_one_file_payload_bytes": diff_bytes,
            "reflash_payload_ratio": round(diff_bytes / full_bytes, 3),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
