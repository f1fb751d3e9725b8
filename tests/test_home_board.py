"""The home network's services on the emulated ESP32 board (vbox/board/, issue 15):
the same agent/playlist.py serves the effective lineup and follows an options push;
the same agent/dns.py answers, and since an ESP32 gives no MAC to IP map, the
report says per device that nothing is enforced, instead of pretending."""
from __future__ import annotations

import json
import socket
import time
import urllib.request

from agent.rules import lineup
from tests.helpers import Capture, free_port, publish
from tests.homenet import PROFILE_IP, StubUpstream, parse_m3u

KID = "02:00:00:00:00:0a"
CINEMA = [{"lcn": 40, "name": "Ciné Un", "url": "udp://@239.1.1.40:1234", "bouquet": "cinema"}]


def _ask(port: int, name: str) -> bytes:
    q = b"\x01\x02\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"".join(
        bytes([len(x)]) + x.encode() for x in name.split(".")) + b"\x00\x00\x01\x00\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(q, ("127.0.0.1", port))
        return s.recv(2048)


def test_playlist_and_dns_on_the_emulated_board(broker, tmp_path):
    from vbox import boardrun
    box_id = f"vb-home-{time.time_ns() % 10**6}"
    root = f"homebox/v1/{box_id}/desired/"
    publish(broker.port, root + "channels", {"version": 1, "channels": lineup.default_lineup() + CINEMA})
    publish(broker.port, root + "options", {"version": 1, "speed_tier": "10M", "bouquets": []})
    publish(broker.port, root + "parental", {"version": 1, "tz": "CET-1CEST,M3.5.0,M10.5.0/3",
                                             "profiles": [{"id": "kids", "macs": [KID], "pause_until": 4102444800}]})
    up = StubUpstream()
    hport, dport = free_port(), free_port()
    cap = Capture(broker.port, f"homebox/v1/{box_id}/#")
    cfg = {"box_id": box_id, "broker_host": "127.0.0.1", "broker_port": broker.port, "state_dir": "/state",
           "telemetry_interval": 60, "keepalive": 10, "backoff_base": 0.2, "backoff_cap": 2.0,
           "wifi_ssid": "homebox-000042", "uplink_ssid": "operator-net", "wdt_ms": 8000,
           "playlist_port": hport, "dns_port": dport, "dns_host": "127.0.0.1", "dns_upstreams": up.config()}
    box = boardrun.boot_firmware(tmp_path / "box", cfg, {"mqtt_user": box_id, "mqtt_password": "pw",
                                                         "wifi_key": "abcd-efgh-jkmn-pqrs"}, board="esp32", heap="192k")
    url = f"http://127.0.0.1:{hport}/playlist.m3u"

    def lcns():
        try:
            return sorted(int(c["tvg-chno"]) for c in parse_m3u(urllib.request.urlopen(url, timeout=5).read().decode()))
        except OSError:
            return None
    try:
        tnt = sorted(c["lcn"] for c in lineup.default_lineup())
        assert cap.wait_for(lambda c: any(r.get("version") == 1 for r in c.payloads("/reported/options")), 60), \
            box.console()[-2000:]
        deadline = time.time() + 30
        while time.time() < deadline and lcns() != tnt:
            time.sleep(0.3)
        assert lcns() == tnt, box.console()[-2000:]
        publish(broker.port, root + "options", {"version": 2, "speed_tier": "10M", "bouquets": ["cinema"]})
        deadline = time.time() + 30
        while time.time() < deadline and lcns() != sorted(tnt + [40]):
            time.sleep(0.3)
        assert lcns() == sorted(tnt + [40])
        # DNS: answered through the home's profile; no device can be told apart on an ESP32
        r = _ask(dport, "example.org")
        assert r[3] & 15 == 0 and bytes(r[-4:]) == bytes(int(x) for x in PROFILE_IP["standard"].split("."))

        def devices(c):
            reps = c.payloads("/reported/parental")
            return reps and (reps[-1].get("enforced") or {}).get("devices")
        assert cap.wait_for(devices, 30)
        assert devices(cap)[KID].startswith("not enforced: this box cannot tell devices apart"), devices(cap)
        con = box.console()
        assert "hal esp32" in con and "Traceback" not in con, con[-3000:]
    finally:
        box.stop()
        up.close()
        cap.close()
    json.dumps(cfg)
