"""Network namespaces for the partition run: a box's own namespace linked to ours by
a veth pair, whose link we cut and restore. Root only."""
from __future__ import annotations

import os
import subprocess

from tests.chaos.harness import ChaosError


def netns_available() -> str | None:
    """None when namespaces can be used here, else why not."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth)"
    for exe in ("ip",):
        if subprocess.run(["which", exe], capture_output=True).returncode:
            return f"{exe} is not installed"
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if r.returncode:
        return f"ip netns does not work here: {r.stderr.strip()}"
    return None


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode:
        raise ChaosError(f"ip {' '.join(args)}: {r.stderr.strip()}")


class NetnsLink:
    """A box's own network namespace, linked to ours by a veth pair:
    ours HOST_IF 10.N.I.1/24 <-> theirs eth0 10.N.I.2/24."""

    def __init__(self, i: int):
        tag = os.getpid() % 10000
        self.ns = f"hbchaos{tag}n{i}"
        self.host_if = f"hbc{tag}h{i}"
        net = 100 + os.getpid() % 100
        self.host_ip = f"10.{net}.{i}.1"
        self.box_ip = f"10.{net}.{i}.2"

    def up(self) -> NetnsLink:
        self.down_ns()
        _ip("netns", "add", self.ns)
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", "eth0", "netns", self.ns)
        _ip("addr", "add", f"{self.host_ip}/24", "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        _ip("-n", self.ns, "addr", "add", f"{self.box_ip}/24", "dev", "eth0")
        _ip("-n", self.ns, "link", "set", "eth0", "up")
        _ip("-n", self.ns, "link", "set", "lo", "up")
        return self

    def cut(self) -> None:
        _ip("link", "set", self.host_if, "down")

    def restore(self) -> None:
        _ip("link", "set", self.host_if, "up")

    def down_ns(self) -> None:
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
