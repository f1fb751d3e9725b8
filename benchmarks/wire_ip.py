"""Wire cost measured on a real link: IP bytes a day and offline detection, for
the new defaults and the old ones, side by side (benchmarks/wire.py runs this).

How the bytes are counted: the box (the real agent under MicroPython) and its
Mosquitto each run in a network namespace of their own, joined by a veth pair;
nothing else uses that link (IPv6 off, static neighbour entries: no ARP, no
router solicitation). The kernel's counters of the box's end of the veth give
every frame the box sent (up) and received (down); IP bytes are those bytes less
the 14-byte Ethernet header of each frame. So TCP/IP headers, ACKs, delayed ACKs
and retransmissions are all in, as the kernel sent them: a real measurement,
not an estimate. Needs root and iproute2; elsewhere the result says why not.

Time is compressed: the sim clock runs SPEEDUP times faster (a report every
300 / SPEEDUP s) and the keepalive is divided by SPEEDUP too, so the run has the
packets of a real day in the same order, only closer; bytes/day = steady-state
bytes x 86400 / (window x SPEEDUP), plus one connection set-up a day (counted
separately). Offline detection runs in real time, with the real keepalive: the
broker's side (the box frozen with SIGSTOP: Mosquitto drops it after 1.5 x
keepalive and sends its last will) and the box's side (the broker frozen: the
agent's own rule in agent/mqtt.py closes the session).

"Old defaults" is the agent before the wire-cost change: keepalive 30 s, a
PINGREQ every keepalive / 2 whatever else was sent. It runs from a copy of the
compiled agent whose agent/mqtt.py has the old ping loop (OLD_PING_LOOP).

    python -m benchmarks.wire_ip
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from homebox import boxrun

DAY = 86400
SPEEDUP = 30
WINDOW_S = 150
ETH = 14
NET = "10.201.0"
OLD = {"keepalive": 30, "ping": "every keepalive / 2, whatever else was sent"}

OLD_PING_LOOP = '''    async def ping_loop(self):
        try:
            while True:
                await asyncio.sleep(self.keepalive / 2)
                if ticks_diff(ticks_ms(), self._last_rx) > self.keepalive * 1500:
                    await self.close("keepalive timeout")
                    return
                await self.send(bytes((_PINGREQ, 0)))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            await self.close("ping failed: %s" % e)

'''


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def available() -> str | None:
    """None when this machine can run the measurement, else why not."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and a veth pair)"
    if shutil.which("ip") is None:
        return "needs iproute2 (`ip`)"
    return None


class Link:
    """Two network namespaces joined by a veth pair; the box at NET.2, its broker at NET.1."""

    def __init__(self, tag: str):
        self.box_ns, self.br_ns = f"hbw{tag}b", f"hbw{tag}k"
        self.vb, self.vk = f"hbw{tag}b", f"hbw{tag}k"

    def __enter__(self) -> Link:
        for ns in (self.box_ns, self.br_ns):
            _ip("netns", "add", ns)
            for k in ("all", "default"):
                self.run(ns, ["sysctl", "-q", "-w", f"net.ipv6.conf.{k}.disable_ipv6=1"])
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "add", self.vb, "netns", self.box_ns, "type", "veth", "peer", "name", self.vk, "netns", self.br_ns)
        for ns, dev, a in ((self.box_ns, self.vb, 2), (self.br_ns, self.vk, 1)):
            _ip("-n", ns, "addr", "add", f"{NET}.{a}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
        mac = {dev: json.loads(_ip("-n", ns, "-j", "link", "show", "dev", dev))[0]["address"]
               for ns, dev in ((self.box_ns, self.vb), (self.br_ns, self.vk))}
        _ip("-n", self.box_ns, "neigh", "replace", f"{NET}.1", "lladdr", mac[self.vk], "dev", self.vb, "nud", "permanent")
        _ip("-n", self.br_ns, "neigh", "replace", f"{NET}.2", "lladdr", mac[self.vb], "dev", self.vk, "nud", "permanent")
        return self

    def __exit__(self, *exc) -> None:
        for ns in (self.box_ns, self.br_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    @staticmethod
    def run(ns: str, cmd: list[str], **kw):
        return subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True, capture_output=True, **kw)

    def counters(self) -> dict:
        """The box end's frames: {"up": (bytes, packets), "down": (bytes, packets)}."""
        st = json.loads(_ip("-n", self.box_ns, "-s", "-j", "link", "show", "dev", self.vb))[0]["stats64"]
        return {"up": (st["tx"]["bytes"], st["tx"]["packets"]), "down": (st["rx"]["bytes"], st["rx"]["packets"])}


def _ip_bytes(c: dict, key: str) -> int:
    b, p = c[key]
    return b - ETH * p


def old_agent(work: Path) -> Path:
    """A copy of the compiled agent whose mqtt.py has the old ping loop."""
    mpy = boxrun.compile_agent()
    dest = work / "old-agent"
    shutil.copytree(mpy, dest)
    src = (boxrun.SRC_ROOT / "agent" / "mqtt.py").read_text()
    a, b = src.index("    async def ping_loop(self):"), src.index("    async def read_loop(self):")
    (dest / "agent" / "mqtt.mpy").unlink()
    (dest / "agent" / "mqtt.py").write_text(src[:a] + OLD_PING_LOOP + src[b:])
    return dest


class Session:
    """One broker and one box on a Link."""

    def __init__(self, link: Link, work: Path, name: str, agent: Path | None, tls: bool = False, **cfg):
        self.link, self.work, self.name = link, work / name, name
        self.work.mkdir(parents=True)
        conf = self.work / "mosquitto.conf"
        self.broker_log = self.work / "mosquitto.log"
        heap = "128k"
        if tls:
            # the production broker's configuration (`homebox ops broker-config`):
            # TLS 1.2, the box's own account; the box checks the server against the CA
            from backend import broker_config
            d = self.work / "broker"
            broker_config.generate(d, {name: "wire-bench-pw"}, port=8883, plain_port=0, hosts=[f"{NET}.1"],
                                   ingest_accounts=1, run_as="root")
            conf = d / "mosquitto.conf"
            self.broker_log = d / "mosquitto.log"
            cfg.update(broker_port=8883, tls=True, tls_ca=str(d / "ca.crt"), mqtt_user=name,
                       mqtt_password="wire-bench-pw")
            heap = "256k"        # the unix port's mbedTLS buffers are on the heap (an ESP32's are not)
        else:
            conf.write_text(f"listener 1883 {NET}.1\nallow_anonymous true\npersistence false\n"
                            f"user root\nlog_dest file {self.broker_log}\nlog_type all\n")
        from tests.helpers import mosquitto_exe
        # `user root`: run as root, Mosquitto would otherwise switch to its own user,
        # which cannot write the log here (its log file is flushed line by line)
        self.broker = subprocess.Popen(["ip", "netns", "exec", link.br_ns, mosquitto_exe(), "-c", str(conf)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        cfg.setdefault("broker_port", 1883)
        path = boxrun.write_config(self.work / "box", box_id=name, broker_host=f"{NET}.1",
                                   backoff_base=0.5, backoff_cap=2.0, **cfg)
        cmd, env = boxrun.box_command(path, micropython=True, heap=heap)
        if agent is not None:
            env["MICROPYPATH"] = f"{agent}:.frozen"
        self.out = self.work / "stdout.log"
        self.box = subprocess.Popen(["ip", "netns", "exec", link.box_ns, *cmd], env=env, cwd=boxrun.neutral_cwd(),
                                    stdin=subprocess.DEVNULL, stdout=open(self.out, "w"), stderr=subprocess.STDOUT)

    def wait_line(self, path: Path, text: str, timeout: float) -> float | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if text in path.read_text(errors="replace"):
                    return time.monotonic()
            except OSError:
                pass
            time.sleep(0.1)
        return None

    def connected(self, timeout: float = 30) -> bool:
        return self.wait_line(self.out, "[hb] connected", timeout) is not None

    def close(self) -> None:
        for p in (self.box, self.broker):
            try:
                os.kill(p.pid, signal.SIGCONT)
            except OSError:
                pass
        for p in (self.box, self.broker):
            p.terminate()
        for p in (self.box, self.broker):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def _pids_in(ns: str) -> list[int]:
    r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    return [int(x) for x in r.stdout.split()]


def bytes_per_day(work: Path, tag: str, keepalive: int, agent: Path | None, window: float = WINDOW_S,
                  tls: bool = False) -> dict:
    """A bare box (the default configuration), compressed SPEEDUP times."""
    if keepalive % SPEEDUP:
        raise ValueError(f"keepalive {keepalive} is not a multiple of the speedup {SPEEDUP}")
    with Link(tag) as link:
        s = Session(link, work, f"wire-{tag}", agent, tls, keepalive=keepalive // SPEEDUP, speedup=SPEEDUP)
        try:
            if not s.connected():
                return {"error": "the box did not connect", "log": s.out.read_text()[-800:]}
            time.sleep(2)                      # the connection's set-up is over
            c0 = link.counters()
            t0 = time.monotonic()
            time.sleep(window)
            c1 = link.counters()
            secs = time.monotonic() - t0
        finally:
            s.close()
    scale = DAY / (secs * SPEEDUP)
    up = (_ip_bytes(c1, "up") - _ip_bytes(c0, "up")) * scale
    down = (_ip_bytes(c1, "down") - _ip_bytes(c0, "down")) * scale
    pk = (c1["up"][1] - c0["up"][1] + c1["down"][1] - c0["down"][1]) * scale
    setup = _ip_bytes(c0, "up") + _ip_bytes(c0, "down")
    return {"keepalive_s": keepalive, "telemetry_interval_s": 300, "tls": tls,
            "ip_bytes_per_day": {"up": round(up), "down": round(down), "connection_setup": setup,
                                 "total": round(up + down + setup)},
            "ip_packets_per_day": round(pk), "window_real_s": round(secs, 1),
            "window_sim_s": round(secs * SPEEDUP)}


def offline(work: Path, tag: str, keepalive: int, agent: Path | None, side: str) -> dict:
    """Real time: freeze one end, time until the other sees it dead."""
    with Link(tag) as link:
        s = Session(link, work, f"off-{tag}", agent, keepalive=keepalive)
        try:
            if not s.connected():
                return {"error": "the box did not connect"}
            time.sleep(3)
            frozen = link.box_ns if side == "broker" else link.br_ns
            pids = _pids_in(frozen)
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            t0 = time.monotonic()
            if side == "broker":         # Mosquitto: "Client <id> has exceeded timeout, disconnecting."
                t1 = s.wait_line(s.broker_log, "exceeded timeout", 1.5 * keepalive + 60)
            else:                        # the agent: "[hb] disconnected reason=keepalive timeout"
                t1 = s.wait_line(s.out, "keepalive timeout", 1.5 * keepalive + 60)
        finally:
            s.close()
    return {"keepalive_s": keepalive, "rule_s": 1.5 * keepalive,
            "measured_s": round(t1 - t0, 1) if t1 else None}


def run() -> dict:
    why = available()
    if why:
        return {"error": why}
    work = Path(__import__("tempfile").mkdtemp(prefix="hb-bench-wire-ip-"))
    from agent.config import DEFAULTS
    new_ka = DEFAULTS["keepalive"]
    out: dict = {"method": "kernel counters of a veth pair between two network namespaces (box | broker); "
                           "IP bytes = frame bytes - 14 per frame", "speedup": SPEEDUP}
    try:
        old = old_agent(work)
        jobs = {
            ("old", "bytes"): lambda: bytes_per_day(work, f"{os.getpid() % 10000}o", OLD["keepalive"], old),
            ("new", "bytes"): lambda: bytes_per_day(work, f"{os.getpid() % 10000}n", new_ka, None),
            ("new_tls", "bytes"): lambda: bytes_per_day(work, f"{os.getpid() % 10000}t", new_ka, None, tls=True),
            ("old", "broker"): lambda: offline(work, f"{os.getpid() % 10000}ob", OLD["keepalive"], old, "broker"),
            ("old", "box"): lambda: offline(work, f"{os.getpid() % 10000}ox", OLD["keepalive"], old, "box"),
            ("new", "broker"): lambda: offline(work, f"{os.getpid() % 10000}nb", new_ka, None, "broker"),
            ("new", "box"): lambda: offline(work, f"{os.getpid() % 10000}nx", new_ka, None, "box"),
        }
        res: dict = {}

        def one(k, fn):
            try:
                res[k] = fn()
            except Exception as e:          # one figure must not hide the others
                res[k] = {"error": repr(e)}
        threads = [threading.Thread(target=one, args=(k, fn)) for k, fn in jobs.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for which, ka, ping in (("old", OLD["keepalive"], OLD["ping"]),
                                ("new", new_ka, "only after a keepalive without sending")):
            out[which] = {"keepalive_s": ka, "ping": ping, **res[(which, "bytes")],
                          "offline_seen_by_broker": res[(which, "broker")],
                          "offline_seen_by_box": res[(which, "box")]}
        out["new_tls"] = {"keepalive_s": new_ka, "ping": "only after a keepalive without sending",
                          **res[("new_tls", "bytes")]}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--bytes":
        # one compressed bytes run (quick check): python -m benchmarks.wire_ip --bytes [KEEPALIVE]
        import tempfile
        w = Path(tempfile.mkdtemp(prefix="hb-wire-"))
        ka = int(sys.argv[2]) if len(sys.argv) > 2 else 180
        print(json.dumps(bytes_per_day(w, f"{os.getpid() % 10000}q", ka, None, float(os.environ.get("WINDOW", 30)),
                                       tls="--tls" in sys.argv), indent=1))
        shutil.rmtree(w, ignore_errors=True)
    else:
        print(json.dumps(run(), indent=1))
