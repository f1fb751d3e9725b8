"""Issue 19: the box's secrets in NVS on the ESP32. A virtual box on the emulated
ESP32 board, flashed by the bench's image with /secrets.json, logs in to a
password-checking Mosquitto; at its first boot the file leaves the filesystem for
NVS; powered off and on again, it logs in from NVS alone."""
import json

from firmware import partitions as pt
from tests.helpers import Capture, FleetBroker
from vbox import boardrun


def _fs_files(flash: bytes) -> list[str]:
    """The files of the box's littlefs vfs, read from its flash."""
    from littlefs import LittleFS, UserContext
    off, size = pt.vfs_for(4 * pt.MB)
    fs = LittleFS(context=UserContext(size), block_size=pt.LFS_BLOCK_SIZE, block_count=size // pt.LFS_BLOCK_SIZE,
                  read_size=pt.LFS_READ_SIZE, prog_size=pt.LFS_PROG_SIZE, lookahead_size=pt.LFS_LOOKAHEAD,
                  mount=False)
    fs.context.buffer[:] = flash[off:off + size]
    fs.mount()
    return sorted(fs.listdir("/"))


def _nvs(flash: bytes) -> bytes:
    return flash[0x9000:0xF000]


def test_the_secrets_leave_the_filesystem_for_nvs_and_the_box_logs_in_from_there(tmp_path):
    import vbox
    box_id = "HB-NVS001"
    password = "nvs-box-password-" + "k3" * 6
    fleet = FleetBroker(tmp_path / "broker", {box_id: password}).start()
    cap = Capture(topic=f"homebox/v1/{box_id}/#", **fleet.login("homebox-ingest-1"))
    cfg = {"box_id": box_id, "broker_host": "127.0.0.1", "broker_port": fleet.plain, "state_dir": "/state",
           "telemetry_interval": 2, "keepalive": 10, "backoff_base": 0.2, "backoff_cap": 2.0,
           "wifi_ssid": "homebox-000042", "uplink_ssid": "operator-net", "wdt_ms": 8000}
    secrets = {"mqtt_user": box_id, "mqtt_password": password, "hmac_key": "5a" * 32,
               "wifi_key": "abcd-efgh-jkmn-pqrs", "key_version": 1}
    box = boardrun.boot_firmware(tmp_path / "box", cfg, secrets, board="esp32", heap="192k")

    def health(boot):
        return [json.loads(p) for t, p, _r in cap.messages
                if t.endswith("/telemetry/health") and json.loads(p)["boot"] == boot]
    try:
        assert cap.wait_for(lambda c: health(1), 90), box.console()[-3000:]
        assert "secrets_moved to=nvs" in box.console()
        assert password not in box.console()                       # never logged
        box.stop()
        mark = len(box.console())           # the console log goes on across power cycles
        flash = box.flash_path.read_bytes()
        files = _fs_files(flash)
        assert "secrets.json" not in files and "config.json" in files, files
        # the emulated NVS keeps a blob as hex (vbox/board/esp32.py)
        assert password.encode().hex().encode() in _nvs(flash)
        # powered on again: no file, the password from NVS
        box = vbox.spawn(tmp_path / "box", board="esp32", heap="192k")
        assert cap.wait_for(lambda c: health(2), 90), box.console()[-3000:]
        con = box.console()[mark:]
        assert "agent starting" in con and "secrets_moved" not in con and "Traceback" not in con, con
    finally:
        box.stop()
        cap.close()
        fleet.stop()
