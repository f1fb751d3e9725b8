"""`make demo`'s home-network step (issue 15): one more box, the real agent under
MicroPython with its DNS forwarder and its playlist server on this machine. Two
of the tenant's devices are loopback addresses (the tablet 127.0.0.2, the phone
127.0.0.3) that the box knows by MAC from a DHCP leases file; the upstream
resolver is a stub on loopback. It shows, in plain words, the tablet refused in
its blocked hours while the phone resolves, and the playlist gaining a bouquet
after a signed options push. No root needed (the tests use namespaces)."""
from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

from agent.rules import lineup, tz

TABLET, PHONE = ("127.0.0.2", "02:00:00:00:00:0a"), ("127.0.0.3", "02:00:00:00:00:0b")
PARIS = "CET-1CEST,M3.5.0,M10.5.0/3"
# Monday 2026-01-05, 21:30 in Paris: after the tablet's hours (07:00-21:00).
START = tz.days(2026, 1, 5) * 86400 + 20 * 3600 + 30 * 60
CINEMA = [{"lcn": 40, "name": "Ciné Un", "url": "udp://@239.1.1.40:1234", "bouquet": "cinema"},
          {"lcn": 41, "name": "Ciné Deux", "url": "udp://@239.1.1.41:1234", "bouquet": "cinema"}]
RCODES = {0: "answered", 2: "SERVFAIL", 3: "NXDOMAIN (no such name)", 5: "REFUSED"}


def _port(kind: int = socket.SOCK_DGRAM) -> int:
    # a free port of the kind the box will bind (a free UDP port may be a TCP one in use)
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Upstream(threading.Thread):
    """A stand-in for the operator's resolver: every A query -> 192.0.2.1."""

    def __init__(self):
        super().__init__(daemon=True)
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind(("127.0.0.1", 0))
        self.s.settimeout(0.2)
        self.port = self.s.getsockname()[1]
        self.done = False

    def run(self) -> None:
        while not self.done:
            try:
                q, a = self.s.recvfrom(2048)
            except OSError:
                continue
            i = 12
            while i < len(q) and q[i]:
                i += q[i] + 1
            r = bytearray(q[:i + 5])
            r[2:12] = b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00"
            self.s.sendto(bytes(r) + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x01", a)

    def close(self) -> None:
        self.done = True
        self.join(1)
        self.s.close()


def ask(src: str, port: int, name: str) -> tuple[str, str | None]:
    """One DNS query from `src` through the box: (outcome in words, address or None)."""
    q = b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"".join(
        bytes([len(x)]) + x.encode() for x in name.split(".")) + b"\x00\x00\x01\x00\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((src, 0))
        s.settimeout(3)
        s.sendto(q, ("127.0.0.1", port))
        try:
            r = s.recv(2048)
        except OSError:
            return "no answer", None
    ip = ".".join(str(b) for b in r[-4:]) if r[3] & 15 == 0 and r[7] else None
    return RCODES.get(r[3] & 15, "rcode %d" % (r[3] & 15)), ip


def playlist(port: int) -> list[tuple[int, str]]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/playlist.m3u", timeout=5).read().decode()
    out = []
    for ln in text.splitlines():
        if ln.startswith("#EXTINF:"):
            lcn = ln.split('tvg-chno="', 1)[1].split('"', 1)[0]
            out.append((int(lcn), ln.rsplit(",", 1)[1]))
    return out


def _wait(pred, timeout: float = 20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    return None


def run(say, broker_url: str, key: bytes, push, work: Path) -> bool:
    """The step; push(section, doc, box) -> the push's one-line outcome, signed with the
    box's own key `key` (random, as the bench makes them). True if all went as told."""
    from homebox import boxrun
    box_id = "HB-HOME-NET"
    work.mkdir(parents=True, exist_ok=True)
    leases = work / "dnsmasq.leases"
    leases.write_text("".join(f"0 {mac} {ip} {n} *\n" for n, (ip, mac) in (("tablet", TABLET), ("phone", PHONE))))
    up = _Upstream()
    up.start()
    dport, hport = _port(), _port(socket.SOCK_STREAM)
    host, _, bport = broker_url.rpartition(":")
    cfg = boxrun.write_config(work, box_id=box_id, broker_host=host, broker_port=int(bport), speedup=60,
                              telemetry_interval=300, scenario={"start": START}, keepalive=10,
                              backoff_base=0.2, backoff_cap=2.0,
                              hmac_key=key.hex(), dns_port=dport,
                              dns_upstreams={p: [f"127.0.0.1:{up.port}"] for p in ("standard", "family", "child")},
                              playlist_port=hport, leases_file=str(leases))
    cmd, env = boxrun.box_command(cfg, micropython=True, heap="256k")
    log = open(work / "box.log", "w")
    proc = subprocess.Popen(cmd, env=env, cwd=boxrun.neutral_cwd(), stdout=log, stderr=subprocess.STDOUT)
    ok = True
    try:
        say.line(f"box {box_id}: the real agent under MicroPython, DNS on port {dport}, playlist on port {hport};"
                 f" its clock says Monday 21:30")
        kids = {"id": "kids", "macs": [TABLET[1]], "schedule": [
            {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "from": "07:00", "to": "21:00"}]}
        say.line("parental (the tablet may go online 07:00-21:00) -> " + push(
            "parental", {"version": 1, "tz": PARIS, "profiles": [kids, {"id": "parents", "macs": [PHONE[1]]}]}, box_id))
        say.line("channels (TNT + a 'cinema' bouquet) -> " + push(
            "channels", {"version": 1, "channels": lineup.default_lineup() + CINEMA}, box_id))
        say.line("options (no paid bouquet) -> " + push("options", {"version": 1, "speed_tier": "10M", "bouquets": []},
                                                         box_id))
        t = ask(TABLET[0], dport, "www.example.org")
        p = ask(PHONE[0], dport, "www.example.org")
        say.line(f"the tablet asks for www.example.org at 21:30: {t[0]}" +
                 (" - it is outside its allowed hours, so the box refuses to resolve" if t[0] == "REFUSED" else ""))
        say.line(f"the phone asks for the same name: {p[0]}" + (f" ({p[1]})" if p[1] else "") + " - no rule for it")
        ok = ok and t[0] == "REFUSED" and p[0] == "answered"
        before = _wait(lambda: playlist(hport))
        say.line(f"the TV playlist (http://<box>:{hport}/playlist.m3u) lists {len(before or [])} channels:"
                 f" the free TNT ones")
        say.line("options (subscribe to 'cinema') -> " + push(
            "options", {"version": 2, "speed_tier": "10M", "bouquets": ["cinema"]}, box_id))
        after = _wait(lambda: (lambda x: x if len(x) > len(before or []) else None)(playlist(hport)))
        new = sorted(set(after or []) - set(before or []))
        say.line(f"the playlist now lists {len(after or [])} channels; new: "
                 + (", ".join(f"{n} ({lcn})" for lcn, n in new) or "none"))
        ok = ok and bool(before) and [x[0] for x in new] == [40, 41]
        rep = _reported(broker_url, box_id)
        if rep:
            say.line("the box reports what it really enforces: " + json.dumps(rep, ensure_ascii=False))
    except Exception as e:
        say.line(f"home network step: FAILED: {e!r} (box log: {work / 'box.log'})")
        ok = False
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        up.close()
    return ok


def _reported(broker_url: str, box_id: str) -> dict | None:
    """reported/parental enforced.devices, as retained on the broker."""
    import paho.mqtt.client as mqtt
    host, _, port = broker_url.rpartition(":")
    got: dict = {}
    ev = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"demo-home-{time.time_ns()}")

    def on_message(c, u, m):
        try:
            got.update(json.loads(m.payload).get("enforced", {}).get("devices") or {})
        except ValueError:
            pass
        ev.set()
    c.on_message = on_message
    c.on_connect = lambda c, u, f, rc, p: c.subscribe(f"homebox/v1/{box_id}/reported/parental", 1)
    c.connect(host, int(port))
    c.loop_start()
    ev.wait(5)
    c.loop_stop()
    c.disconnect()
    names = {TABLET[1]: "tablet", PHONE[1]: "phone"}
    return {names.get(k, k): v for k, v in got.items()} or None
