"""The bench station's parts, without boxes: the ledger (serials unique across
processes, idempotent per MAC, no secrets), a broker hash Mosquitto accepts, slot numbering by USB
location, the label, and the box console's answers (never a secret)."""
from __future__ import annotations

import asyncio
import json
import multiprocessing
import time

import paho.mqtt.client as mqtt
import pytest

from agent.rules import SECTIONS
from common import credentials
from flashing import label, slots
from flashing.errors import LedgerError, SetupError
from flashing.ledger import Ledger
from tests.helpers import ROOT, Mosquitto, mqtt_client

MASTER = b"parts-test-master-secret-0123456789"


def _allocate_many(path: str, macs: list[str], q) -> None:
    try:
        with Ledger(path) as led:
            q.put([(m, led.allocate(m).serial) for m in macs])
    except BaseException as e:          # said, not lost in a dead child
        q.put(repr(e))


def test_ledger_serials_are_unique_across_processes_and_idempotent_per_mac(tmp_path):
    path = str(tmp_path / "ledger.sqlite")
    macs = [f"24:0a:c4:00:00:{i:02x}" for i in range(24)]
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    # two "benches" sharing the file, with overlapping boxes
    procs = [ctx.Process(target=_allocate_many, args=(path, macs[:16], q)),
             ctx.Process(target=_allocate_many, args=(path, list(reversed(macs[8:])), q))]
    for p in procs:
        p.start()
    # each child puts exactly one item (its serials or its error): wait for the
    # children to end, however slow a loaded machine makes them
    for p in procs:
        p.join(300)
    outs = [q.get(timeout=10) for _ in procs]
    assert all(isinstance(o, list) for o in outs), outs
    got = outs[0] + outs[1]
    by_mac: dict[str, set] = {}
    for mac, serial in got:
        by_mac.setdefault(mac, set()).add(serial)
    assert all(len(s) == 1 for s in by_mac.values()), "one MAC got two serials"
    serials = {next(iter(s)) for s in by_mac.values()}
    assert len(serials) == 24 and len(by_mac) == 24
    with Ledger(path) as led:
        again = led.allocate(macs[3].upper())
        assert again.serial == next(iter(by_mac[macs[3]])) and not again.new
        assert len(led.boxes()) == 24
        with pytest.raises(LedgerError):
            led.set_broker_hash(again.serial, "plain-password")
        with pytest.raises(LedgerError):
            led.allocate("not-a-mac")


def test_mosquitto_accepts_the_ledger_hash(tmp_path):
    a = credentials.derive(MASTER, "HB-000007")
    passwd = tmp_path / "passwd"
    passwd.write_text(f"HB-000007:{credentials.broker_hash(a.mqtt_password)}\n")
    broker = Mosquitto(tmp_path / "broker", extra=f"allow_anonymous false\npassword_file {passwd}\n").start()
    try:
        def connect(pw):
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="HB-000007")
            c.username_pw_set("HB-000007", pw)
            try:
                return c.connect("127.0.0.1", broker.port) == 0 and _connack(c)
            finally:
                c.disconnect()

        assert connect(a.mqtt_password)
        assert not connect("wrong-password")
    finally:
        broker.stop()


def _connack(c) -> bool:
    result = []
    c.on_connect = lambda cl, u, f, rc, p: result.append(rc)
    c.loop_start()
    import time
    end = time.time() + 5
    while not result and time.time() < end:
        time.sleep(0.02)
    c.loop_stop()
    return bool(result) and not result[0].is_failure


# every /dev/ttyUSBn of these tests is a CP2102 bridge
CP2102 = {f"/dev/ttyUSB{i}": (0x10C4, 0xEA60) for i in range(8)}


def test_slots_keep_their_number_by_usb_location(tmp_path):
    root = tmp_path / "by-path"
    root.mkdir()
    names = [f"pci-0000:00:14.0-usb-0:1.{i}:1.0-port0" for i in (1, 2, 3)]

    def plug(present: dict[str, str]):
        for p in root.iterdir():
            p.unlink()
        for name, dev in present.items():
            (root / name).symlink_to(dev)

    sf = tmp_path / "slots.json"
    plug({names[0]: "/dev/ttyUSB0", names[1]: "/dev/ttyUSB1", names[2]: "/dev/ttyUSB2"})
    first = slots.discover(sf, root, ids=CP2102)
    assert [(s.number, s.location) for s in first] == [(1, names[0]), (2, names[1]), (3, names[2])]
    # re-enumeration (ttyUSB numbers change) and slot 1 empty: slot 3 stays slot 3
    plug({names[1]: "/dev/ttyUSB0", names[2]: "/dev/ttyUSB1"})
    second = slots.discover(sf, root, ids=CP2102)
    assert [(s.number, s.location) for s in second] == [(2, names[1]), (3, names[2])]
    assert [s.port for s in second] == [str(root / names[1]), str(root / names[2])]
    # a new hub port gets the next number
    new = "pci-0000:00:14.0-usb-0:1.4:1.0-port0"
    plug({names[0]: "/dev/ttyUSB0", new: "/dev/ttyUSB3"})
    assert [(s.number, s.location) for s in slots.discover(sf, root, ids=CP2102)] == [(1, names[0]), (4, new)]
    assert json.loads(sf.read_text())["slots"][new] == 4
    assert [s.number for s in slots.select(second, [3])] == [3]
    with pytest.raises(SetupError, match="slot 1"):
        slots.select(second, [1])
    ex = slots.explicit(["rfc2217://127.0.0.1:4000,rfc2217://127.0.0.1:4001", "/dev/ttyUSB0"])
    assert [(s.number, s.port) for s in ex] == [(1, "rfc2217://127.0.0.1:4000"), (2, "rfc2217://127.0.0.1:4001"),
                                               (3, "/dev/ttyUSB0")]


def test_label_is_french_and_its_qr_joins_the_wifi(tmp_path):
    import zxingcpp
    from PIL import Image
    f = label.make(tmp_path, "HB-000123", "homebox-000123", 'k;e,y:"\\x', "Assistance : 02 98 00 00 00")
    assert f.pdf.read_bytes().startswith(b"%PDF")
    img = Image.open(f.png)
    assert img.size == (label.mm(100), label.mm(62))
    got = [r.text for r in zxingcpp.read_barcodes(img)]
    # special characters are escaped as the WIFI: format wants
    assert got == ['WIFI:T:WPA;S:homebox-000123;P:k\\;e\\,y\\:\\"\\\\x;;']


# --- the box console, under CPython with a stand-in box ---------------------------

class _Hal:
    name = "sim"

    def mac(self):
        return "24:0a:c4:00:00:01"


class _Box:
    def __init__(self):
        self.id = "HB-000001"
        self.cfg = {"box_id": self.id, "serial": self.id, "broker_host": "127.0.0.1", "broker_port": 1883,
                    "wifi_ssid": "homebox-000001", "mqtt_password": "p4ssw0rd-secret", "hmac_key": "ab" * 32,
                    "wifi_key": "abcd-efgh-jkmn-pqrs", "note": "the wifi key is abcd-efgh-jkmn-pqrs"}
        self.hal = _Hal()
        self.client = None
        self.boot = 3

    def uptime(self):
        return 12


def _ask(lines: list[str]) -> list[str]:
    from agent import console
    out: list[str] = []
    con = console.Console(_Box(), {"firmware": "ESP32_GENERIC 1.29.0", "agent_build": "abc"}, out.append)
    data = iter("".join(line + "\n" for line in lines))

    async def read():
        return next(data, "")

    asyncio.run(con.run(read))
    return out


def test_console_answers_one_json_line_and_never_a_secret():
    from agent.log import log
    log("boot", "box", "HB-000001")
    out = _ask(["info", "log 1", "help", "bogus", "note"])
    assert [o.split()[0] for o in out] == ["@info", "@log", "@help", "@error", "@error"]
    info = json.loads(out[0].split(" ", 1)[1])
    assert info["serial"] == "HB-000001" and info["mac"] == "24:0a:c4:00:00:01"
    assert info["secrets"] == ["hmac_key", "mqtt_password", "wifi_key"]
    assert info["firmware"] == "ESP32_GENERIC 1.29.0" and info["agent_build"] == "abc"
    assert json.loads(out[1].split(" ", 1)[1])["lines"][-1].startswith("[hb] boot")
    box = _Box()
    for o in out:
        for k in ("mqtt_password", "hmac_key", "wifi_key"):
            assert box.cfg[k] not in o
    from agent import console_cmds
    assert console_cmds.scrub("x " + box.cfg["note"], box.cfg) == "x the wifi key is ***"


# --- the self-test, under CPython with stand-in devices ---------------------------

class _Outbox:
    def __init__(self):
        self.count = 0

    def ack(self):
        self.count -= 1


class _Twin:
    def __init__(self, path):
        self.path = path
        self.validators = dict.fromkeys(SECTIONS)
        self.applied = {"options": {"version": 2}}
        self.reported = {"options": {"source": "current"}, "channels": {"source": "last-known-good"}}

    def doc_path(self, s):
        return f"{self.path}/{s}.json"


class _DevHal(_Hal):
    def __init__(self, tic: bytes):
        self.tic = bytearray(tic)

    def scan(self):
        return [("Livebox-1", "00:11:22:00:00:01", 1, -60, 3, False)]

    def tic_read(self, buf):
        n = min(len(buf), len(self.tic))
        buf[:n] = self.tic[:n]
        del self.tic[:n]
        return n

    def water_edges(self):
        return 1000, [10, 120, 400]

    def ap_info(self):
        return {"ssid": "homebox-000001", "up": True, "security": "wpa2"}


class _TestBox(_Box):
    def __init__(self, state, tic: bytes):
        super().__init__()
        self.cfg.update(state_dir=str(state), tic_mode="auto", water_enabled=True, mac="24:0a:c4:00:00:01",
                        selftest_tic_s=1, selftest_wait_s=3)
        self.hal = _DevHal(tic)
        self.outbox = _Outbox()
        self.connected = asyncio.Event()
        self.seq = 0
        self.twin = _Twin(str(state / "docs"))

    def health(self):
        return {"fw": "0.1.0"}

    def now_ts(self):
        return 1767225600

    def emit(self, kind, data, *a, **k):
        self.seq += 1
        self.outbox.count += 1
        asyncio.get_event_loop().call_later(0.05, self.outbox.ack)     # the broker's PUBACK


def test_selftest_checks_wifi_ap_tic_pulse_and_mqtt(tmp_path):
    from agent import selftest
    frame = (ROOT / "tests" / "data" / "tic" / "enedis-standard-frame.bin").read_bytes()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "options.json").write_text('{"version": 2}')
    box = _TestBox(tmp_path, frame * 3)

    async def go():
        box.connected.set()
        return await selftest.run(box)

    r = asyncio.run(go())
    st = {c["name"]: (c["status"], c["detail"]) for c in r["checks"]}
    assert r["ok"] and r["failed"] == [], st
    assert st["wifi_scan"] == ("pass", "1 access points seen")
    assert st["tic_uart"][0] == "pass" and "valid frames" in st["tic_uart"][1]
    assert st["pulse_input"] == ("pass", "input readable, 3 edges")
    assert st["access_point"] == ("pass", "Wi-Fi homebox-000001 on, WPA2 with the label's key")
    assert st["mqtt"][0] == "pass" and r["telemetry"] == {"boot": 3, "seq": 1}
    assert st["documents"] == ("pass", "1 stored documents in force")

    # wrong MAC, garbage on the TIC line, a stored document not in force, no broker
    (tmp_path / "docs" / "channels.json").write_text("{not json")
    bad = _TestBox(tmp_path, b"\x02\nNOT A TIC GROUP\r\n" * 40)
    bad.cfg["mac"] = "24:0a:c4:99:99:99"
    r = asyncio.run(selftest.run(bad))
    assert not r["ok"] and set(r["failed"]) == {"identity", "tic_uart", "documents", "mqtt"}, r
    st = {c["name"]: c["detail"] for c in r["checks"]}
    assert "image built for MAC 24:0a:c4:99:99:99" in st["identity"]
    assert "no valid frame" in st["tic_uart"] and "channels" in st["documents"]
    assert "no connection" in st["mqtt"]
    assert not any(v in json.dumps(r) for v in (bad.cfg["mqtt_password"], bad.cfg["hmac_key"], bad.cfg["wifi_key"]))


def test_slots_only_known_bridges_in_usb_port_order(tmp_path):
    root = tmp_path / "by-path"
    root.mkdir()
    # hub ports 3.1, 3.9, 3.10, 3.2 plugged in that order; one is a phone's modem
    names = {f"pci-0000:00:14.0-usb-0:3.{i}:1.0-port0": f"/dev/ttyUSB{k}" for k, i in enumerate((1, 9, 10, 2))}
    for name, dev in names.items():
        (root / name).symlink_to(dev)
    (root / "pci-0000:00:14.0-usb-0:3.3:1.0").symlink_to("/dev/ttyACM0")
    ids = dict(CP2102)
    ids["/dev/ttyACM0"] = (0x22B8, 0x2E82)           # not an ESP32 bridge
    found = slots.discover(tmp_path / "s.json", root, ids=ids)
    assert [s.location.split("usb-0:")[1].split(":")[0] for s in found] == ["3.1", "3.2", "3.9", "3.10"]
    assert [s.number for s in found] == [1, 2, 3, 4]
    # the other chip becomes a slot only when asked for
    more = slots.discover(tmp_path / "s2.json", root, ids=ids, extra_ids=slots.parse_ids(["22b8:2e82"]))
    assert len(more) == 5 and more[2].location.endswith("3.3:1.0")
    with pytest.raises(SetupError, match="VID:PID"):
        slots.parse_ids(["cp2102"])


def test_port_lock_is_exclusive_and_says_what_to_do(tmp_path, monkeypatch):
    import os
    import pty
    master, follower = pty.openpty()
    port = os.ttyname(follower)
    try:
        with slots.PortLock(port):
            with pytest.raises(SetupError, match="in use by another program"):
                slots.PortLock(port).__enter__()
        with slots.PortLock(port):               # released: free again
            pass
    finally:
        os.close(master)
        os.close(follower)
    with pytest.raises(SetupError, match="unplugged"):
        slots.PortLock(str(tmp_path / "ttyUSB9")).__enter__()
    assert slots.PortLock("rfc2217://127.0.0.1:4000").__enter__().fd is None

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(SetupError, match="dialout"):
        slots.PortLock(port).__enter__()



def _silent_box(tmp_path, ap):
    class Hal(_Hal):                            # no pulse input at all
        def tic_read(self, buf):
            return 0

        def ap_info(self):
            return ap
    box = _TestBox(tmp_path, b"")
    box.hal = Hal()
    return box


def test_selftest_fails_an_enabled_part_that_gives_nothing(tmp_path):
    """TIC on but a silent line, water on but no pulse input, the AP off or
    under another name: each a fail that says what to check, never n/a."""
    from agent import selftest
    box = _silent_box(tmp_path, {"ssid": "homebox-000001", "up": False, "security": "wpa2"})
    box.connected.set()
    r = asyncio.run(selftest.run(box))
    st = {c["name"]: (c["status"], c["detail"]) for c in r["checks"]}
    assert set(r["failed"]) == {"tic_uart", "pulse_input", "access_point"}, st
    assert "no signal from the electricity meter" in st["tic_uart"][1] and "TIC test cable" in st["tic_uart"][1]
    assert "no pulse input" in st["pulse_input"][1]
    assert st["access_point"][1] == "the Wi-Fi access point homebox-000001 is not on"
    box = _silent_box(tmp_path, {"ssid": "homebox-000999", "up": True, "security": "wpa2"})
    assert selftest.ap(box)["detail"] == "the Wi-Fi name is homebox-000999, the label says homebox-000001"
    # parts the settings do not enable are n/a
    box.cfg.update(tic_mode=None, water_enabled=False, ap=False)
    assert {selftest.pulse(box)["status"], selftest.ap(box)["status"]} == {"n/a"}
    from flashing.errors import CHECK_ADVICE
    assert {"tic_uart", "pulse_input", "access_point"} <= set(CHECK_ADVICE)


def test_selftest_sends_to_the_broker_it_is_given_with_the_box_credentials(tmp_path):
    """`selftest mqtt://HOST:PORT`: the mqtt check connects there as the box (its
    own user and password), while the box's settings keep their broker."""
    from agent import selftest
    passwd = tmp_path / "passwd"
    box = _TestBox(tmp_path, b"")
    passwd.write_text(f"{box.id}:{credentials.broker_hash(box.cfg['mqtt_password'])}\n")
    box.cfg.update(mqtt_user=box.id, broker_host="mqtt.operator.invalid", broker_port=8883)
    broker = Mosquitto(tmp_path / "broker", extra=f"allow_anonymous false\npassword_file {passwd}\n").start()
    try:
        got = []
        c = mqtt_client(broker.port, user=box.id, password=box.cfg["mqtt_password"])
        c.on_message = lambda c, u, m: got.append(json.loads(m.payload))
        c.loop_start()
        c.subscribe(f"homebox/v1/{box.id}/telemetry/+", qos=1)
        time.sleep(0.5)
        r, msg = asyncio.run(selftest.bench_mqtt(box, f"mqtt://127.0.0.1:{broker.port}", 5))
        assert r["status"] == "pass" and f"127.0.0.1:{broker.port}" in r["detail"], r
        end = time.monotonic() + 5
        while not got and time.monotonic() < end:
            time.sleep(0.05)
        assert got and got[0]["box"] == box.id and got[0]["seq"] == msg["seq"] == 0 and got[0]["kind"] == "health"
        c.loop_stop()
        c.disconnect()
        box.cfg["mqtt_password"] = "wrong-password"
        r, _ = asyncio.run(selftest.bench_mqtt(box, f"mqtt://127.0.0.1:{broker.port}", 5))
        assert r["status"] == "fail" and "refused this box's login" in r["detail"], r
        assert box.cfg["broker_host"] == "mqtt.operator.invalid"
    finally:
        broker.stop()
    assert selftest._other(box, "mqtt://127.0.0.1:1") and not selftest._other(box, "mqtts://mqtt.operator.invalid:8883")
    assert not selftest._other(box, None)
    assert selftest.parse_url("mqtts://bench.local") == ("bench.local", 8883, True)
    assert selftest.parse_url("10.0.0.2:1884") == ("10.0.0.2", 1884, False)
