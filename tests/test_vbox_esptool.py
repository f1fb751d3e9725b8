"""Unmodified esptool (Python API and CLI, rfc2217:// URL) against virtual
boxes; the agent booting from the littlefs it was just flashed, publishing
telemetry that validates against the contract; fast re-flash; the wrong-size
filesystem on a box; kill -9 during agent writes."""
import hashlib
import json
import re
import shutil
import subprocess
import sys
import time

import pytest
import serial
from esptool import cmds

import vbox
from backend import contract
from firmware import build as fb
from firmware import partitions as pt
from tests.helpers import ROOT, Capture
from vbox import standin

ESPTOOL = [sys.executable, "-m", "esptool"]


def _lock(tmp_path):
    base = standin.make_base("4MB")
    (tmp_path / "base.bin").write_bytes(base)
    lock = fb.load_lock()
    lock["sha256"] = hashlib.sha256(base).hexdigest()
    (tmp_path / "lock.json").write_text(json.dumps(lock))
    return tmp_path / "base.bin", tmp_path / "lock.json"


def _overlay(box_id, port, **extra):
    cfg = {"box_id": box_id, "broker_host": "127.0.0.1", "broker_port": port, "state_dir": "/state",
           "speedup": 60, "telemetry_interval": 60, "backoff_base": 0.2, "backoff_cap": 2}
    cfg.update(extra)
    return {"config.json": json.dumps(cfg), "secrets.json": json.dumps({"mqtt_user": box_id, "mqtt_password": "pw"})}


def _build(tmp_path, name, overlay, agent_dir=None):
    base, lock = _lock(tmp_path)
    return fb.build(tmp_path / name, "4MB", overlay=overlay, base_bin=base, lock_path=lock, agent_dir=agent_dir)


def _stats(box):
    return json.loads((box.dir / "stats.json").read_text())


def _port(url):
    # Opened with esptool's default command timeout (3 s): pyserial's RFC 2217
    # client renegotiates the port (>= 100 ms) on every timeout change, which
    # esptool otherwise does twice per command when handed a bare URL.
    return serial.serial_for_url(url, timeout=3)


def _flash(url, parts, after="hard-reset", **kw):
    with cmds.detect_chip(_port(url)) as esp:
        esp = cmds.run_stub(esp)
        esp.change_baud(921600)
        cmds.attach_flash(esp)
        cmds.write_flash(esp, parts, **kw)
        cmds.reset_chip(esp, after)


def _wait_console(box, text, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in box.console():
            return True
        time.sleep(0.1)
    return False


def test_esptool_api_flashes_verifies_reads_back_and_boots_the_agent(tmp_path, broker):
    fw = _build(tmp_path, "fw", _overlay("vb-api", broker.port))
    merged = (fw.out_dir / "merged.bin").read_bytes()
    box = vbox.spawn(tmp_path / "box")
    cap = Capture(broker.port)
    try:
        with cmds.detect_chip(_port(box.url)) as esp:
            assert esp.CHIP_NAME == "ESP32"
            assert ":".join(f"{b:02x}" for b in esp.read_mac()) == box.mac
            esp = cmds.run_stub(esp)
            assert esp.IS_STUB
            esp.change_baud(921600)
            cmds.attach_flash(esp)
            assert cmds.detect_flash_size(esp) == "4MB"
            cmds.write_flash(esp, [(0x1000, merged)])            # compressed by default with the stub
            assert esp.flash_md5sum(0x1000, len(merged)) == hashlib.md5(merged).hexdigest()
            # byte for byte: the boot area and the first 64 KiB of the filesystem
            assert esp.read_flash(0x1000, 0x10000) == merged[:0x10000]
            assert esp.read_flash(0x200000, 0x10000) == merged[0x1FF000:0x20F000]
            cmds.reset_chip(esp, "hard-reset")
        st = _stats(box)
        assert st["flash_bytes_written"] >= len(merged)
        assert st["loader_payload_bytes"] < len(merged) // 4          # it went compressed
        assert cap.wait_for(lambda c: c.payloads("telemetry/health"), timeout=40), box.console()[-3000:]
        topic, payload = next((t, p) for t, p, _r in cap.messages if t.endswith("/telemetry/health"))
        assert topic == "homebox/v1/vb-api/telemetry/health"
        contract.validate(topic, json.loads(payload))
        con = box.console()
        assert "boot:0x13 (SPI_FAST_FLASH_BOOT)" in con and "agent starting, box vb-api, hal sim" in con
    finally:
        cap.close()
        box.stop()


def test_esptool_cli_with_rfc2217_url_and_the_wrong_size_filesystem(tmp_path):
    """The CLI, given the bare URL: chip, MAC, 4MB detected, compressed write,
    MD5 verify, read-back. What it writes is a filesystem built for a 2MB flash,
    which `fw build` refuses and the box, after the hard reset, reports as real
    MicroPython does."""
    base, _lock_path = _lock(tmp_path)
    small = fb.make_fs_image([("boot.py", b"print('never')\n")], 0x90000)   # a 2MB flash's vfs
    (tmp_path / "small.bin").write_bytes(small)
    with pytest.raises(fb.ImageSizeError):
        fb.check_fs_image(small, "4MB")
    box = vbox.spawn(tmp_path / "box")
    try:
        r = subprocess.run(ESPTOOL + ["--port", box.url, "--baud", "921600", "--after", "no-reset", "write-flash",
                                      "--flash-size", "detect", "0x1000", str(base), "0x200000",
                                      str(tmp_path / "small.bin")], capture_output=True, text=True, timeout=150)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "Chip type:          ESP32-D0WD-V3" in r.stdout and f"MAC:                {box.mac}" in r.stdout
        assert "Auto-detected flash size: 4MB" in r.stdout, r.stdout
        assert re.search(r"Wrote \d+ bytes \(\d+ compressed\) at 0x00200000", r.stdout), r.stdout
        assert r.stdout.count("Hash of data verified.") == 2
        out = tmp_path / "back.bin"
        r = subprocess.run(ESPTOOL + ["--port", box.url, "--baud", "921600", "read-flash", "0x200000", "0x4000",
                                      str(out)], capture_output=True, text=True, timeout=150)
        assert r.returncode == 0, r.stdout + r.stderr
        assert out.read_bytes() == small[:0x4000]
        assert box.flash_path.read_bytes()[0x200000:0x200000 + len(small)] == small
        assert _wait_console(box, "The filesystem appears to be corrupted."), box.console()[-2000:]
        assert "never" not in box.console()
    finally:
        box.stop()


def test_reflash_after_one_file_change_sends_fewer_bytes(tmp_path, broker):
    agent = tmp_path / "src" / "agent"
    shutil.copytree(ROOT / "agent", agent, ignore=shutil.ignore_patterns("__pycache__"))
    old = _build(tmp_path, "old", _overlay("vb-diff", broker.port), agent_dir=agent)
    box = vbox.spawn(tmp_path / "box")
    try:
        # the bench flashes, rebuilds after a fix, and re-flashes before the first boot
        # (diff_with trusts that the flash still holds the old image)
        _flash(box.url, [(0x1000, str(old.out_dir / "merged.bin"))], after="no-reset")
        full = _stats(box)["loader_payload_bytes"]
        with open(agent / "backoff.py", "a") as f:
            f.write("\n\ndef _vbox_test_marker():\n    return 'changed'\n")
        new = _build(tmp_path, "new", _overlay("vb-diff", broker.port), agent_dir=agent)
        changed = [f["path"] for f in new.manifest["files"]
                   if f not in old.manifest["files"]]
        assert changed == ["agent/backoff.mpy"]
        before = _stats(box)["loader_payload_bytes"]
        _flash(box.url, [(0x1000, str(new.out_dir / "merged.bin"))], after="no-reset",
               diff_with=[str(old.out_dir / "merged.bin")])
        diff = _stats(box)["loader_payload_bytes"] - before
        ratio = diff / full
        print(f"\nre-flash payload: full {full} B, diff {diff} B, ratio {ratio:.3f}")
        assert diff < full / 3
        assert box.flash_path.read_bytes()[0x1000:] == (new.out_dir / "merged.bin").read_bytes()
    finally:
        box.stop()


def test_kill_9_during_agent_writes_keeps_fs_and_state(tmp_path, broker):
    fw = _build(tmp_path, "fw", _overlay("vb-kill", broker.port, speedup=600, telemetry_interval=30))
    box = vbox.spawn(tmp_path / "box")
    cap = Capture(broker.port)
    try:
        _flash(box.url, [(0x1000, str(fw.out_dir / "merged.bin"))])
        assert cap.wait_for(lambda c: len(c.payloads("telemetry/health")) >= 3, timeout=40), box.console()[-2000:]
        box.kill()                                        # power cut while the agent writes its state
        vfs_off, vfs_size = pt.vfs_for("4MB")
        image = box.flash_path.read_bytes()[vfs_off:vfs_off + vfs_size]
        fb.check_fs_image(image, "4MB")                   # still a mountable littlefs of the right size
        box = vbox.spawn(tmp_path / "box")                # same flash file, new process
        assert cap.wait_for(lambda c: any(p.get("boot") == 2 for p in c.payloads("telemetry/health")), timeout=40), \
            box.console()[-2000:]
        boot2 = [p for p in cap.payloads("telemetry/health") if p.get("boot") == 2]
        contract.validate("homebox/v1/vb-kill/telemetry/health", boot2[0])
        assert "filesystem appears to be corrupted" not in box.console()
    finally:
        cap.close()
        box.stop()
