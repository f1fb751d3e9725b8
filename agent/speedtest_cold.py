# The speed test's cold half (loaded for a scheduled run, then dropped): the plan
# from the options document, and the idle-line test where the HAL has no data
# counter (the ESP32). See docs/decisions/0006-speedtest.md.
import select
import socket

from agent.compat import ticks_diff, ticks_ms

# Not imported from agent.speedtest: the schedule decides (and probes an idle
# line) without the measurement's ~9 KB in RAM.
_OUT = select.POLLOUT
_BAD = select.POLLERR | select.POLLHUP


def tier_bps(t):
    """The options document's speed_tier ("10M": downstream Mbps) in bit/s, or None."""
    if not isinstance(t, str) or t[-1:] != "M":
        return None
    try:
        return int(t[:-1]) * 1000000
    except ValueError:
        return None


def plan_of(box):
    """(down, up) bit/s of the plan in force: the applied options document's
    speed_tier. The tier names the downstream rate only, so up is None."""
    tw = getattr(box, "twin", None)
    d = tw.applied.get("options") if tw is not None else None
    return (tier_bps(d.get("speed_tier")) if isinstance(d, dict) else None, None)


PROBES = 3           # connects per idle probe
PROBE_SLACK = 10     # ms: a probe's best connect may exceed the idle baseline by this + 50%


def idle_by_latency(best, base):
    """The fallback where the HAL has no data counter (the ESP32): a busy line
    queues packets, so TCP connects take longer than on the idle line. best: the
    probe's fastest connect (ms; None: none answered); base: the fastest connect
    seen by earlier tests (None: no baseline yet). -> True/False/None (cannot tell)."""
    if best is None or base is None:
        return None
    return best <= base + PROBE_SLACK + base // 2


async def probe(addr, n=PROBES, limit_ms=2000):
    """The fastest of n TCP connects to addr (ms), or None if none completed.
    A few hundred bytes on the line (SYN, SYN-ACK, ACK, FIN)."""
    import asyncio
    best = None
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        p = select.poll()
        p.register(s, _OUT)
        t = ticks_ms()
        try:
            s.connect(addr)
        except OSError:
            pass
        ok = False
        while ticks_diff(ticks_ms(), t) < limit_ms:
            ev = p.poll(5)
            if ev:
                ok = not ev[0][1] & _BAD
                break
            await asyncio.sleep(0)
        ms = ticks_diff(ticks_ms(), t)
        s.close()
        if ok and (best is None or ms < best):
            best = ms
    return best


def idle(hal):
    # the HAL's data counter where it has one (True/False), else None
    f = getattr(hal, "line_idle", None)
    return f() if f else None


def _target(url):
    # (host, port) of "http://host[:port][/base]". A probe runs only once a test
    # has set the baseline, so agent/speedtest.py parse_url has checked the URL.
    hp = url[7:].split("/")[0]
    h, _, p = hp.rpartition(":")
    return (h, int(p)) if h else (hp, 80)


async def line_idle(box, url, st):
    """-> (idle True/False/None, how: "hal" | "probe" | "unknown")."""
    i = idle(box.hal)
    if i is not None:
        return i, "hal"
    base = st.get("base_ms")
    if base is None:
        return None, "unknown"
    try:
        best = await probe(socket.getaddrinfo(*_target(url))[0][-1])
    except (OSError, ValueError):
        best = None
    i = idle_by_latency(best, base)
    return i, "unknown" if i is None else "probe"
