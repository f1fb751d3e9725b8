"""A tenant's home network for the DNS and playlist tests, the bench and the demo
(issue 15): a Linux bridge in the host's namespace (the box's side: the box
process runs on the host and listens on the bridge's address), and one network
namespace per device with its own MAC on a veth attached to the bridge. The box
learns MAC <- IP from the kernel's neighbour table (agent/hal/sim.py leases()).
Also a stub upstream resolver per DNS profile: it answers every A query with the
profile's own address, so a test sees which upstream a device went through.
Root only: available() says why not."""
from __future__ import annotations

import os
import random
import re
import shutil
import socket
import subprocess
import threading
from pathlib import Path

PROFILE_IP = {"standard": "10.1.1.1", "family": "10.2.2.2", "child": "10.3.3.3"}


def available() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces and a bridge (CI runs as root)"
    for exe in ("ip", "dig"):
        if shutil.which(exe) is None:
            return f"needs {exe} (make setup installs bind9-dnsutils as root)"
    return None


def _sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)


class HomeNet:
    """with HomeNet({"tablet": "02:..", "phone": "02:.."}) as net: net.ip["tablet"], net.box_ip"""

    def __init__(self, devices: dict[str, str]):
        self.tag = "%05x" % random.getrandbits(20)
        self.net = random.randrange(0, 256)
        self.br = f"hbbr{self.tag}"
        self.box_ip = f"10.78.{self.net}.1"
        self.devices = dict(devices)
        self.ns = {d: f"hb{d[:3]}{self.tag}" for d in devices}
        self.ip = {d: f"10.78.{self.net}.{10 + i}" for i, d in enumerate(devices)}

    def __enter__(self) -> HomeNet:
        try:
            _sh("ip", "link", "add", self.br, "type", "bridge")
            _sh("ip", "addr", "add", f"{self.box_ip}/24", "dev", self.br)
            _sh("ip", "link", "set", self.br, "up")
            for i, (d, mac) in enumerate(self.devices.items()):
                ns, host = self.ns[d], f"hbv{i}{self.tag}"
                _sh("ip", "netns", "add", ns)
                _sh("ip", "-n", ns, "link", "set", "lo", "up")
                _sh("ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns)
                _sh("ip", "link", "set", host, "master", self.br, "up")
                _sh("ip", "-n", ns, "link", "set", "eth0", "address", mac)
                _sh("ip", "-n", ns, "addr", "add", f"{self.ip[d]}/24", "dev", "eth0")
                _sh("ip", "-n", ns, "link", "set", "eth0", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.br], capture_output=True)

    def run(self, device: str, *cmd: str, timeout: float = 20) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.ns[device], *cmd], capture_output=True,
                              text=True, timeout=timeout)

    def dig(self, device: str, port: int, name: str) -> tuple[str, list[str]]:
        """(status, [A addresses]) of a real `dig` from the device through the box."""
        p = self.run(device, "dig", f"@{self.box_ip}", "-p", str(port), "+tries=1", "+time=2",
                     "+noall", "+comments", "+answer", name, "A")
        m = re.search(r"status: ([A-Z]+)", p.stdout)
        if not m:
            return "NO ANSWER", []
        ips = re.findall(r"\sIN\s+A\s+(\d+\.\d+\.\d+\.\d+)", p.stdout)
        return m.group(1), ips

    def http_get(self, device: str, url: str) -> str:
        """A real HTTP client (Python's urllib) in the device's namespace."""
        code = ("import sys, urllib.request\n"
                "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())")
        p = self.run(device, os.environ.get("HB_PYTHON", "python3"), "-c", code, url)
        if p.returncode:
            raise OSError(p.stderr.strip()[-300:])
        return p.stdout


def parse_m3u(text: str) -> list[dict]:
    """An M3U parser for what a TV app reads: #EXTINF attributes, the title, the URL."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("#EXTM3U"):
        raise ValueError("not an M3U playlist")
    out, cur = [], None
    for ln in lines[1:]:
        if ln.startswith("#EXTINF:"):
            head, _, title = ln[8:].partition(",")
            cur = dict(re.findall(r'([\w-]+)="([^"]*)"', head))
            cur["title"] = title
        elif not ln.startswith("#") and cur is not None:
            cur["url"] = ln
            out.append(cur)
            cur = None
    return out


class StubUpstream:
    """One UDP resolver per profile on 127.0.0.1: A -> PROFILE_IP[profile], TTL 60."""

    def __init__(self, ttl: int = 60):
        self.ttl = ttl
        self.socks: dict[str, socket.socket] = {}
        for p in PROFILE_IP:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.settimeout(0.2)
            self.socks[p] = s
        self.queries = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._serve, args=(p, s), daemon=True) for p, s in self.socks.items()]
        for t in self.threads:
            t.start()

    def config(self) -> dict:
        return {p: [f"127.0.0.1:{s.getsockname()[1]}"] for p, s in self.socks.items()}

    def _serve(self, profile: str, s: socket.socket) -> None:
        ip = bytes(int(x) for x in PROFILE_IP[profile].split("."))
        while not self.stop.is_set():
            try:
                q, a = s.recvfrom(2048)
            except (TimeoutError, OSError):
                continue
            self.queries += 1
            i = 12
            while i < len(q) and q[i]:
                i += q[i] + 1
            end = i + 5
            if end > len(q):
                continue
            r = bytearray(q[:end])
            r[2] = 0x81
            r[3] = 0x80
            r[6:12] = b"\x00\x01\x00\x00\x00\x00"
            if q[end - 3] == 1:
                r += b"\xc0\x0c\x00\x01\x00\x01" + self.ttl.to_bytes(4, "big") + b"\x00\x04" + ip
            else:
                r[7] = 0
            s.sendto(bytes(r), a)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(1)
        for s in self.socks.values():
            s.close()


def here() -> Path:
    return Path(__file__).resolve().parent
