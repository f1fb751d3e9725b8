"""Wire cost: the bytes one box puts on its line in a day at the default cadence,
against the line's capacity, and how soon each end sees the other gone.

Two parts:
- `measured` (benchmarks/wire_ip.py): IP bytes a day counted by the kernel on a
  veth link between the box's and the broker's network namespaces, and offline
  detection timed on both ends, for the new defaults and the old ones side by
  side. The figures to quote.
- the profiles (below): what the MQTT stream is made of, by packet type and topic.
  The real agent (MicroPython) runs a full simulated day against a real Mosquitto
  through a counting TCP proxy that splits the stream into MQTT packets. The sim
  clock runs fast, but keepalive pings follow real time, so they are counted per
  day from the agent's rule (a ping only after a keepalive without sending: one
  per gap of a report interval longer than the keepalive). IP bytes here are an
  estimate: one TCP segment per MQTT packet plus one bare ACK per packet
  received, 52 bytes of IPv4 + TCP (with timestamps) headers each; TLS adds ~29
  bytes per record (AES-GCM) and one handshake per connection.

    python -m benchmarks.wire
"""
from __future__ import annotations

import json
import select
import shutil
import socket
import sys
import threading
import time

from benchmarks.agentrun import Broker, num, run_box, workdir

DAY = 86400
HDR = 52                    # IPv4 20 + TCP 20 + timestamps 12
TLS_RECORD = 29             # 5 header + 8 explicit nonce + 16 tag (TLS 1.2 AES-GCM)
TLS_HANDSHAKE = 6000        # server certificate chain and key exchange, both ways, roughly
NAMES = {1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 8: "SUBSCRIBE", 9: "SUBACK",
         12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT"}
PLANS_MBPS = (2, 10)


class Counter:
    """Splits one direction of an MQTT byte stream into packets: bytes and counts by type,
    and PUBLISH bytes by topic kind."""

    def __init__(self):
        self.buf = bytearray()
        self.bytes = 0
        self.packets: dict[str, list[int]] = {}
        self.topics: dict[str, list[int]] = {}

    def feed(self, data: bytes) -> None:
        self.bytes += len(data)
        self.buf += data
        while len(self.buf) >= 2:
            n, shift, i = 0, 0, 1
            while True:
                if i >= len(self.buf):
                    return
                b = self.buf[i]
                n |= (b & 0x7F) << shift
                i += 1
                if not b & 0x80:
                    break
                shift += 7
            total = i + n
            if len(self.buf) < total:
                return
            pkt = bytes(self.buf[:total])
            del self.buf[:total]
            kind = NAMES.get(pkt[0] >> 4, str(pkt[0] >> 4))
            c = self.packets.setdefault(kind, [0, 0])
            c[0] += 1
            c[1] += total
            if kind == "PUBLISH":
                tlen = int.from_bytes(pkt[i:i + 2], "big")
                parts = pkt[i + 2:i + 2 + tlen].decode(errors="replace").split("/")
                what = "/".join(parts[3:5]) if len(parts) > 4 and parts[3] in ("telemetry", "reported", "desired") \
                    else (parts[3] if len(parts) > 3 else "?")
                t = self.topics.setdefault(what, [0, 0])
                t[0] += 1
                t[1] += total

    def count(self) -> int:
        return sum(c[0] for c in self.packets.values())


class CountingProxy:
    def __init__(self, upstream_port: int):
        self.upstream = upstream_port
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(4)
        self.port = self.srv.getsockname()[1]
        self.up = Counter()           # box -> broker
        self.down = Counter()         # broker -> box
        self.connections = 0
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stop:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            self.connections += 1
            u = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()

    def _pump(self, c, u):
        socks = {c: (u, self.up), u: (c, self.down)}
        try:
            while True:
                r, _, _ = select.select(list(socks), [], [], 1.0)
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    other, counter = socks[s]
                    counter.feed(data)
                    other.sendall(data)
        except OSError:
            return
        finally:
            c.close()
            u.close()

    def close(self):
        self._stop = True
        self.srv.close()


PROFILES = {
    # the default configuration: health reports only
    "bare": {"heap": "128k", "cfg": {}},
    # a home with stations, a Linky and a water meter: coverage and consumption too
    "good_home": {"heap": "192k", "cfg": {"scenario": "good_home"}},
}


def run(speedup: float = 8640, keepalive: int | None = None) -> dict:
    from agent.config import DEFAULTS
    from benchmarks import wire_ip
    keepalive = keepalive or DEFAULTS["keepalive"]
    out = {}
    try:
        out["measured"] = wire_ip.run()
    except Exception as e:
        out["measured"] = {"error": repr(e)}
    for name, prof in PROFILES.items():
        try:
            out[name] = day(speedup, keepalive, prof["heap"], **prof["cfg"])
        except Exception as e:          # one profile must not hide the other's figures
            out[name] = {"error": repr(e)}
    return out


def day(speedup: float = 8640, keepalive: int = 180, heap: str = "128k", **cfg) -> dict:
    work = workdir("wire")
    try:
        with Broker(work) as broker:
            proxy = CountingProxy(broker.port)
            cycles = DAY // 300
            r = run_box(work, proxy.port, "wire-1", heap=heap, max_cycles=cycles, speedup=speedup,
                        keepalive=keepalive, shutdown_drain=30, timeout=DAY / speedup * 4 + 60, **cfg)
            time.sleep(0.5)
            proxy.close()
            up, down = proxy.up, proxy.down
            # Pings seen in the run are real-time ones; a real day has this many:
            # one a keepalive in each gap between reports that is longer than it.
            pings_per_day = cycles * (-(-300 // keepalive) - 1)
            ping_up = up.packets.pop("PINGREQ", [0, 0])
            ping_down = down.packets.pop("PINGRESP", [0, 0])
            run_up = sum(c[1] for c in up.packets.values())
            run_down = sum(c[1] for c in down.packets.values())
            pk_up = sum(c[0] for c in up.packets.values())
            pk_down = sum(c[0] for c in down.packets.values())
            mqtt_up = run_up + 2 * pings_per_day
            mqtt_down = run_down + 2 * pings_per_day
            segs_up = pk_up + pings_per_day
            segs_down = pk_down + pings_per_day
            # each side also sends a bare ACK for each segment it receives
            ip_up = mqtt_up + HDR * (segs_up + segs_down)
            ip_down = mqtt_down + HDR * (segs_down + segs_up)
            tls_extra = TLS_RECORD * (segs_up + segs_down) + TLS_HANDSHAKE * max(1, proxy.connections)
            total_ip = ip_up + ip_down
            out = {
                "ok": r.ok and num(r.stopped.get("cycles")) == cycles, "heap": heap, "config": cfg,
                "keepalive_s": keepalive,
                "sim_day_cycles": cycles, "telemetry_interval_s": 300,
                "mqtt_bytes_per_day": {"up": int(mqtt_up), "down": int(mqtt_down)},
                "mqtt_packets_per_day_without_pings": {"up": pk_up, "down": pk_down},
                "pings_per_day": int(pings_per_day),
                "ping_bytes_share_ip": round((2 * pings_per_day * 2 + 2 * HDR * 2 * pings_per_day) / total_ip, 3),
                "by_topic_up": {k: {"messages": v[0], "bytes": v[1]} for k, v in sorted(up.topics.items())},
                "by_packet_up": {k: {"packets": v[0], "bytes": v[1]} for k, v in sorted(up.packets.items())},
                "by_packet_down": {k: {"packets": v[0], "bytes": v[1]} for k, v in sorted(down.packets.items())},
                "ip_bytes_per_day_estimate": {"up": int(ip_up), "down": int(ip_down), "total": int(total_ip)},
                "tls_extra_bytes_per_day_estimate": int(tls_extra),
                "mean_bps": round(total_ip * 8 / DAY, 1),
                "share_of_line": {f"{m}M": (total_ip + tls_extra) / (m * 1e6 / 8 * DAY) for m in PLANS_MBPS},
                "seen_in_run": {"ping_up": ping_up, "ping_down": ping_down, "connections": proxy.connections},
            }
            return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
    sys.exit(0)
