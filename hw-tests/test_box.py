"""Acceptance of one flashed box, through its serial console (docs/console.md).

The tests run in file order: the first one resets the box and reads its boot
banner; the others ask the running agent."""
from __future__ import annotations

import json
import os
import re
import threading
import time

import pytest

BANNER = re.compile(rb"homebox: firmware ([^\r\n]+?), MicroPython (\S+), agent (\S+) build (\S+)\r?\n")
STARTED = re.compile(rb"homebox: agent starting, box (\S+), hal (\w+)\r?\n")


def ask(dut, cmd: str, timeout: float = 30) -> dict:
    """Send one console command; return the JSON of its one-line answer."""
    name = cmd.split()[0].encode()
    dut.write(cmd)
    m = dut.expect(re.compile(rb"@(" + re.escape(name) + rb"|error) (\{[^\r\n]*\})\r?\n"), timeout=timeout)
    doc = json.loads(m.group(2))
    assert m.group(1) == name, f"the box refused {cmd!r}: {doc}"
    return doc


def hard_reset(dut) -> None:
    """EN low then high through RTS with DTR released (a devkit's auto-reset
    circuit): the box reboots into its firmware, not the ROM loader."""
    s = dut.serial.proc
    s.dtr = False
    s.rts = True
    time.sleep(0.1)
    s.rts = False


def test_boot_banner_gives_firmware_and_agent_versions(dut, box_opts):
    if not box_opts["reset"]:
        pytest.skip("--no-reset: the boot banner was not seen")
    hard_reset(dut)
    m = dut.expect(BANNER, timeout=box_opts["boot_timeout"])
    firmware, micropython, agent, build = (g.decode() for g in m.groups())
    assert firmware != "unknown" and agent and build != "unknown", m.group(0)
    m = dut.expect(STARTED, timeout=box_opts["boot_timeout"])
    if box_opts["serial"]:
        assert m.group(1).decode() == box_opts["serial"]


def test_info_matches_the_ledger(dut, box_opts):
    info = ask(dut, "info")
    if box_opts["mac"]:
        assert info["mac"].lower() == box_opts["mac"].lower(), "the box's MAC differs from the one flashed"
    if box_opts["serial"]:
        assert info["serial"] == box_opts["serial"] and info["box"] == box_opts["serial"]
    assert {"mqtt_password", "hmac_key", "wifi_key"} <= set(info["secrets"]), "credentials missing on the box"


class _Subscriber:
    """Records the box's telemetry on the bench broker (paho-mqtt)."""

    def __init__(self, hostport: str, serial: str, user: str | None, ca: str | None = None):
        import paho.mqtt.client as mqtt

        from common.broker import parse_broker
        b = parse_broker(hostport)
        self.got: list[dict] = []
        self.ready = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"hw-tests-{os.getpid()}-{serial}")
        if user:
            self.c.username_pw_set(user, os.environ.get("HOMEBOX_BENCH_BROKER_PASSWORD"))
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(f"homebox/v1/{serial}/telemetry/+", qos=1)
        self.c.on_subscribe = lambda *a: self.ready.set()
        self.c.on_message = self._msg
        if b.tls:
            self.c.tls_set(ca_certs=ca)
        self.c.connect(b.host, b.port)
        self.c.loop_start()

    def _msg(self, c, u, msg):
        try:
            self.got.append(json.loads(msg.payload))
        except ValueError:
            pass

    def wait(self, pred, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while True:
            if any(pred(p) for p in list(self.got)):
                return True
            if time.monotonic() >= end:
                return False
            time.sleep(0.05)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def _url(broker: str) -> str:
    """The bench broker as the box's console takes it: mqtt://host:port or mqtts://host:port."""
    from common.broker import parse_broker
    b = parse_broker(broker)
    return f"{'mqtts' if b.tls else 'mqtt'}://{b.host}:{b.port}"


def test_selftest_passes_and_its_telemetry_reaches_the_bench_broker(dut, box_opts, record_property):
    sub = None
    if box_opts["broker"]:
        assert box_opts["serial"], "--bench-broker needs --box-serial"
        try:
            sub = _Subscriber(box_opts["broker"], box_opts["serial"], box_opts["broker_user"], box_opts["broker_ca"])
        except OSError as e:
            record_property("failed_checks", json.dumps(["bench_broker"]))
            pytest.fail(f"cannot reach the bench broker {box_opts['broker']}: {e}")
        if not sub.ready.wait(10):
            record_property("failed_checks", json.dumps(["bench_broker"]))
            pytest.fail(f"cannot subscribe on the bench broker {box_opts['broker']}")
    try:
        # the box tests MQTT against the bench broker, not the production broker in its settings
        r = ask(dut, f"selftest {_url(box_opts['broker'])}" if box_opts["broker"] else "selftest", timeout=90)
        failed = {c["name"]: c["detail"] for c in r["checks"] if c["status"] == "fail"}
        record_property("failed_checks", json.dumps(sorted(failed)))
        record_property("checks", json.dumps(r["checks"]))
        assert r["ok"] and not failed, "self-test failed: " + "; ".join(f"{k}: {v}" for k, v in failed.items())
        names = {c["name"] for c in r["checks"]}
        assert {"filesystem", "identity", "documents", "wifi_scan", "access_point", "tic_uart", "pulse_input",
                "mqtt"} <= names
        if sub is not None:
            t = r["telemetry"]
            arrived = sub.wait(lambda p: p.get("boot") == t["boot"] and p.get("seq") == t["seq"], 15)
            if not arrived:
                record_property("failed_checks", json.dumps(["mqtt"]))
            assert arrived, \
                f"the self-test's telemetry (boot {t['boot']} seq {t['seq']}) never reached {box_opts['broker']}"
    finally:
        if sub is not None:
            sub.close()


def test_log_returns_the_agent_log(dut):
    r = ask(dut, "log 8")
    assert isinstance(r["lines"], list) and all(line.startswith("[hb] ") for line in r["lines"])
