"""Issue 14 §3: the box identity survives a re-flash. A virtual box publishes
through a real Mosquitto into a store (ingest in-process); its filesystem is then
re-flashed with esptool (a fresh image: the boot counter file and the outbox
gone) and it publishes again: every message it sent after the re-flash is stored.

- board esp32 (the ESP32 HAL): the boot counter's copy in NVS survives, the next
  boot is above the last one; no alarm.
- the sim HAL (no NVS): the counter restarts at 1; the store sees (boot, seq)
  pairs it holds with other content, starts a new epoch and raises
  boot_counter_reset. (Its clock restarts too: the fresh image starts it a day
  later, as the real time would have moved on.)"""
import json
import threading
import time

import pytest
import serial
from esptool import cmds

from agent.hal.sim_clock import DEFAULT_SIM_EPOCH
from backend.ingest import Ingest
from backend.store import EPOCH_STRIDE, Store
from firmware import partitions as pt
from tests.helpers import Capture
from vbox import boardrun


def _flash_fs(url, vfs):
    off, _size = pt.vfs_for(4 * pt.MB)
    with cmds.detect_chip(serial.serial_for_url(url, timeout=3)) as esp:
        esp = cmds.run_stub(esp)
        esp.change_baud(921600)
        cmds.attach_flash(esp)
        cmds.write_flash(esp, [(off, vfs)])
        cmds.reset_chip(esp, "hard-reset")


def _sent(cap, since=0, new=None):
    """(box's boot, seq) of the telemetry and events the box published (those of
    the incarnation after the re-flash: new(envelope) is true)."""
    out = []
    for t, p, _r in cap.messages[since:]:
        if "/telemetry/" in t or t.endswith("/event"):
            d = json.loads(p)
            if new is None or new(d):
                out.append((d["boot"], d["seq"]))
    return out


@pytest.mark.parametrize("hal", ["esp32", "sim"])
def test_every_message_after_a_filesystem_reflash_is_stored(broker, tmp_path, hal):
    box_id = f"vb-reflash-{hal}"
    cfg = {"box_id": box_id, "broker_host": "127.0.0.1", "broker_port": broker.port, "state_dir": "/state",
           "telemetry_interval": 2, "keepalive": 10, "backoff_base": 0.2, "backoff_cap": 2.0}
    if hal == "esp32":
        cfg.update({"wifi_ssid": "homebox-000042", "uplink_ssid": "operator-net", "wdt_ms": 8000})
    else:
        cfg.update({"speedup": 1, "scenario": {"start": DEFAULT_SIM_EPOCH}})
    store = Store(f"sqlite:///{tmp_path}/backend.db")
    ing = Ingest(f"mqtt://127.0.0.1:{broker.port}", store, client_id="ing-reflash", batch_size=50,
                 batch_wait=0.05, log=lambda *a: None)
    th = threading.Thread(target=ing.run, daemon=True)
    th.start()
    assert ing.subscribed.wait(10)
    cap = Capture(broker.port)
    secrets = {"mqtt_user": box_id, "mqtt_password": "pw", "wifi_key": "abcd-efgh-jkmn-pqrs"}
    box = boardrun.boot_firmware(tmp_path / "box", cfg, secrets, board="esp32" if hal == "esp32" else "none",
                                 heap="192k" if hal == "esp32" else "128k")
    try:
        assert cap.wait_for(lambda c: len(_sent(c)) >= 4, 90), box.console()[-3000:]
        before = _sent(cap)
        assert {b for b, _s in before} == {1}
        # the bench re-flashes the returned box's filesystem: a fresh image. The sim
        # clock restarts from the image's config: a day later, as the real time
        # has moved on (from the same start, its first messages would be the old
        # ones byte for byte, which no store can tell from a redelivery).
        if hal == "sim":
            cfg["scenario"] = {"start": DEFAULT_SIM_EPOCH + 86400}
        boardrun.build_firmware(tmp_path / "fw2", cfg, secrets)
        vfs = (tmp_path / "fw2" / "parts" / "vfs.bin").read_bytes()
        _flash_fs(box.url, vfs)
        mark = len(cap.messages)
        if hal == "esp32":
            def new(d):
                return d["boot"] != 1
        else:
            def new(d):
                return (d["ts"] or 0) >= DEFAULT_SIM_EPOCH + 86400
        assert cap.wait_for(lambda c: len(_sent(c, mark, new)) >= 6, 90), box.console()[-3000:]
        con = box.console()
        assert con.count("agent starting") == 2 and "Traceback" not in con, con[-3000:]
    finally:
        box.stop()
    after = _sent(cap, mark, new)
    boots = {b for b, _s in after}
    try:
        if hal == "esp32":
            assert boots == {2}, after        # the NVS copy: above the boot before the re-flash
            want = set(after)
            base = 0
        else:
            assert boots == {1}, after        # counted again from 1
            want = set(after)
            base = EPOCH_STRIDE
        deadline = time.time() + 20
        while time.time() < deadline:
            got = {(b - base, s) for _box, b, s in store.seqs(box_id) if b > base or not base}
            if want <= got:
                break
            time.sleep(0.2)
        missing = sorted(want - got)
        assert not missing, (missing, store.counters(), store.alarms())
        # and those before the re-flash are all still there
        kept = {(b, s) for _box, b, s in store.seqs(box_id) if b < EPOCH_STRIDE}
        assert set(before) <= kept
        codes = {a["code"] for a in store.alarms().get(box_id, [])}
        if hal == "esp32":
            assert "boot_counter_reset" not in codes and store.epochs()[box_id]["epoch"] == 0
        else:
            assert "boot_counter_reset" in codes and store.epochs()[box_id]["epoch"] == 1
    finally:
        ing.stop()
        th.join(10)
        cap.close()
        store.close()
