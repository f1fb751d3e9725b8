# Line speed, TR-143 style, over plain HTTP sockets; runs on MicroPython and CPython.
# Download (GET {base}/download?bytes=N) then upload (PUT {base}/upload), N parallel
# non-blocking streams driven by select.poll. The first `warmup` ms after the first
# byte are excluded (slow start), then the byte count is sampled every `sample` ms;
# goodput is measured between the warm-up sample and the last sample taken while
# every stream was still running. Latency is the TCP connect time (idle line).
# The byte budget is never exceeded: each stream asks for a share of it, minus an
# allowance for HTTP headers (HDR). See docs/decisions/0006-speedtest.md.
import select
import socket
import sys

from agent.compat import ticks_diff, ticks_ms

ESP32_WINDOW = 5744          # lwIP TCP_WND on MicroPython's ESP32 port: 4 x 1436
HDR = 512                    # per-stream allowance for request + response headers
_LINUX = sys.platform == "linux"
SO_SNDBUF = getattr(socket, "SO_SNDBUF", 7 if _LINUX else None)
_LINGER = getattr(socket, "SO_LINGER", None)
_RST = b"\x01\x00\x00\x00\x00\x00\x00\x00"    # struct linger {1, 0}
_IN = select.POLLIN
_OUT = select.POLLOUT
_BAD = select.POLLERR | select.POLLHUP


def parse_url(url):
    """'http://host[:port][/base]' -> (host, port, base path without trailing /)."""
    if not url.startswith("http://"):
        raise ValueError("speed test URL must be http://")
    url = url[7:]
    i = url.find("/")
    hp, path = (url, "") if i < 0 else (url[:i], url[i:])
    port = 80
    if ":" in hp:
        hp, p = hp.rsplit(":", 1)
        port = int(p)
    return hp, port, path.rstrip("/")


def ceiling_bps(streams, window, rtt_ms):
    # A window-limited TCP stream carries at most one window per round trip.
    if not window or not rtt_ms:
        return None
    return streams * window * 8000 // rtt_ms


def per_stream(budget, streams):
    # Body bytes each stream may ask for so that bodies + headers <= budget.
    return max(0, (budget - streams * HDR) // streams)


class Window:
    """Warm-up exclusion and the measurement window, fed with (ticks, bytes) samples.
    The rate is the least-squares slope of bytes over time across the window's
    samples: at the sender the bytes in the socket buffer wobble from sample to
    sample, and a fit averages that out where a two-point difference would not."""

    def __init__(self, warmup_ms=1000):
        self.warmup = warmup_ms
        self.tb = None        # first byte
        self.wt = self.wb = None
        self.et = None
        self.n = 0
        self.s = [0, 0, 0, 0]  # sums of t, b, t*t, t*b (t in ms, b in bytes, from wt/wb)

    def first(self, t):
        if self.tb is None:
            self.tb = t

    def sample(self, t, total, full):
        # full: every stream still running, so the link is loaded the same way.
        if self.tb is None or not full:
            return
        if self.wt is None:
            if ticks_diff(t, self.tb) < self.warmup:
                return
            self.wt, self.wb = t, total
        x, y, s = ticks_diff(t, self.wt), total - self.wb, self.s
        if x < 0 or (self.n and x <= ticks_diff(self.et, self.wt)):
            return
        self.et = t
        self.n += 1
        s[0] += x
        s[1] += y
        s[2] += x * x
        s[3] += x * y

    def rate(self):
        n, s = self.n, self.s
        d = n * s[2] - s[0] * s[0]
        if n < 2 or d <= 0:
            return None
        return (n * s[3] - s[0] * s[1]) * 8000 // d

    def ms(self):
        return 0 if self.et is None else ticks_diff(self.et, self.wt)


class _S:
    def __init__(self, want):
        self.want = want
        self.sock = None
        self.fd = -1
        self.st = 0           # 0 connect, 1 request/body, 2 response, 3 done, 4 failed
        self.n = 0            # body bytes moved
        self.hdr = b""
        self.rtt = None


class Transfer:
    """One direction. Drive it with step() until it returns False, then result()."""

    def __init__(self, addr, host, base, up, streams, want, limit_ms, warmup_ms=1000,
                 sample_ms=250, buf=None, rate=0, rtt=0):
        self.up = up
        self.host = host
        self.base = base
        self.limit = limit_ms
        self.sample_ms = sample_ms
        self.win = Window(warmup_ms)
        self.buf = buf or bytearray(4096)
        self.mv = memoryview(self.buf)
        self.rate = rate
        self.rtt = rtt
        self.poll = select.poll()
        self.ss = []
        self.used = 0
        self.total = 0
        self.t0 = ticks_ms()
        self.treq = None
        self.tend = None
        self.nxt = None
        self.stop = None
        for _ in range(streams):
            s = _S(want)
            s.sock = socket.socket()
            s.sock.setblocking(False)
            try:
                s.fd = s.sock.fileno()
            except (AttributeError, OSError):
                pass
            s.t = ticks_ms()
            try:
                s.sock.connect(addr)
            except OSError:
                pass          # EINPROGRESS: POLLOUT says when it is done
            self.poll.register(s.sock, _OUT)
            self.ss.append(s)

    def _find(self, obj):
        for s in self.ss:
            if s.sock is obj or s.fd == obj:
                return s

    def _end(self, s, st):
        if s.st < 3:
            s.st = st
            try:
                self.poll.unregister(s.sock)
            except (OSError, KeyError):
                pass
            s.sock.close()

    def _full(self):
        for s in self.ss:
            if s.st == 4 or (s.st == 3 or (self.up and s.st == 2)):
                return False
        return True

    def step(self, max_ms=250):
        now = ticks_ms()
        if self.stop is None and ticks_diff(now, self.t0) >= self.limit:
            self._finish(now, "time")
        if self.stop is not None:
            return False
        wait = max_ms
        if self.nxt is not None:
            wait = min(wait, max(0, ticks_diff(self.nxt, now)))
        for obj, ev in self.poll.poll(wait):
            s = self._find(obj)
            if s is not None:
                self._event(s, ev)
        now = ticks_ms()
        if self.nxt is not None and ticks_diff(now, self.nxt) >= 0:
            if self.up:
                for s in self.ss:
                    if s.st == 1:
                        self._send(s, now)
            self.win.sample(now, self.total, self._full())
            while ticks_diff(now, self.nxt) >= 0:
                self.nxt += self.sample_ms
        live = 0
        for s in self.ss:
            if s.st < 3:
                live += 1
        if not live:
            self._finish(now, "budget" if self.total else "error")
        return self.stop is None

    def _finish(self, now, why):
        self.stop = why
        if why == "time" or self.tend is None:
            self.tend = now
        for s in self.ss:
            if s.st < 3 and _LINGER is not None:
                try:   # reset, so what is still buffered is not sent: the line is free
                    s.sock.setsockopt(socket.SOL_SOCKET, _LINGER, _RST)
                except OSError:
                    pass
            self._end(s, 3)

    def _event(self, s, ev):
        now = ticks_ms()
        if s.st >= 3:
            return
        if s.st == 0:
            if ev & _BAD:
                return self._end(s, 4)
            s.rtt = ticks_diff(now, s.t)
            if self.up:
                if self.rate and SO_SNDBUF is not None:
                    # 2 x this stream's share of the BDP (Linux doubles it): enough
                    # to fill the line, too little to fill a deep queue, so bytes
                    # accepted by send() track bytes delivered.
                    b = self.rate * max(self.rtt or s.rtt, 1) // 4000 // len(self.ss)
                    try:
                        s.sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUF, min(max(b, 16384), 4194304))
                    except OSError:
                        pass
                req = "PUT %s/upload HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (self.base, self.host, s.want)
            else:
                req = "GET %s/download?bytes=%d HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (self.base, s.want, self.host)
            s.sock.send(req.encode())
            self.used += len(req)
            s.st = 1 if self.up else 2
            self.poll.modify(s.sock, _OUT if self.up else _IN)
            if self.treq is None:
                self.treq = now
                if self.up:
                    self._go(now)
            return
        if s.st == 1:          # upload body
            if ev & _BAD:
                return self._end(s, 4)
            return self._send(s, now)
        self._recv(s, now)

    def _send(self, s, now):
        # Write until the socket would block: a full send buffer at every sample
        # makes bytes accepted by send() track bytes delivered.
        mv = self.mv
        for _ in range(64):
            k = s.want - s.n
            if k <= 0:
                break
            if k > len(mv):
                k = len(mv)
            try:
                w = s.sock.send(mv[:k])
            except OSError as e:
                if e.args[0] == 11:
                    break
                return self._end(s, 4)
            if not w:
                break
            s.n += w
            self.used += w
            self.total += w
        if s.n >= s.want:
            self.win.sample(now, self.total, self._full())
            s.st = 2
            self.poll.modify(s.sock, _IN)

    def _recv(self, s, now):
        # response: headers (and the body, downloading)
        rd = getattr(s.sock, "recv_into", None) or s.sock.readinto
        for _ in range(16):
            try:
                n = rd(self.mv)
            except OSError as e:
                if e.args[0] == 11:
                    return
                return self._end(s, 4)
            if n is None:
                return
            if n == 0:
                return self._done(s, now)
            self.used += n
            body = n
            if not s.hdr or s.hdr[:1] != b"!":
                h = s.hdr + bytes(self.mv[:n]) if len(s.hdr) < 2048 else s.hdr
                i = h.find(b"\r\n\r\n")
                if i < 0:
                    s.hdr = h
                    if len(h) >= 2048:
                        return self._end(s, 4)
                    continue
                if h[9:12] != b"200":
                    return self._end(s, 4)
                s.hdr = b"!"
                body = len(h) - i - 4
                if self.up:
                    return self._done(s, now)
                self.win.first(now)
                self._go(now)
            s.n += body
            self.total += body
            if s.n >= s.want:
                return self._done(s, now)

    def _go(self, now):
        if self.nxt is None:
            self.win.first(now)
            self.nxt = now + self.sample_ms

    def _done(self, s, now):
        if s.n >= s.want or self.up:
            self.win.sample(now, self.total, self._full())
            self.tend = now
            self._end(s, 3)
        else:
            self._end(s, 4)

    def result(self):
        ms = ticks_diff(self.tend or ticks_ms(), self.treq) if self.treq is not None else 0
        rtts = [s.rtt for s in self.ss if s.rtt is not None]
        return {"goodput_bps": self.win.rate(), "mean_bps": self.total * 8000 // ms if ms > 0 else None,
                "window_ms": self.win.ms(), "samples": self.win.n, "payload": self.total,
                "bytes": self.used, "ms": ms, "stop": self.stop,
                "streams_ok": len([s for s in self.ss if s.st == 3]),
                "connect_ms": min(rtts) if rtts else None}


def _addr(host, port):
    return socket.getaddrinfo(host, port)[0][-1]


def _result(url, streams, budget, window, plan, d, u):
    lat = d["connect_ms"] if d else (u["connect_ms"] if u else None)
    ceil = ceiling_bps(streams, window, lat)
    r = {"server": url[7:].split("/")[0], "streams": streams, "latency_ms": lat,
         "down": d, "up": u, "bytes": (d["bytes"] if d else 0) + (u["bytes"] if u else 0),
         "budget": budget, "window": window or None, "ceiling_bps": ceil, "client_limited": False,
         "plan_down_bps": plan[0], "plan_up_bps": plan[1]}
    for k, x, p in (("down", d, plan[0]), ("up", u, plan[1])):
        g = x and x["goodput_bps"]
        if x:
            x["client_limited"] = bool(g and ceil and g >= ceil * 9 // 10)
            r["client_limited"] = r["client_limited"] or x["client_limited"]
        r["ratio_" + k] = round(g / p, 3) if g and p else None
    return r


def _setup(url, streams, budget, seconds, warmup, sample, bufsize, plan, direction):
    host, port, base = parse_url(url)
    addr = _addr(host, port)
    buf = bytearray(bufsize)
    for i in range(bufsize):
        buf[i] = (i * 131 + 7) & 255
    return host, base, addr, buf


def _up_args(d, plan, streams, budget):
    # Upload budget: what the download left; expected rate: the download's or the
    # plan's; RTT: the download's (measured on the idle line).
    used = d["bytes"] if d else 0
    return (per_stream(budget - used, streams), max((d and d["goodput_bps"]) or 0, plan[1] or 0),
            (d and d["connect_ms"]) or 0)


SETTLE_MS = 500      # between download and upload, for queues on the line to drain


def run(url, streams=6, seconds=8, budget=20000000, warmup=1.0, sample=0.25, window=ESP32_WINDOW,
        plan=(None, None), bufsize=4096, direction="both"):
    """One blocking measurement; `seconds` is the time limit of each direction."""
    host, base, addr, buf = _setup(url, streams, budget, seconds, warmup, sample, bufsize, plan, direction)
    d = u = None
    lim, wu, sm = int(seconds * 1000), int(warmup * 1000), int(sample * 1000)
    if direction in ("both", "down"):
        t = Transfer(addr, host, base, False, streams, per_stream(budget // 2 if direction == "both" else budget, streams), lim, wu, sm, buf)
        while t.step():
            pass
        d = t.result()
    if direction in ("both", "up"):
        want, rate, rtt = _up_args(d, plan, streams, budget)
        if d:
            import time
            time.sleep(SETTLE_MS / 1000)
        t = Transfer(addr, host, base, True, streams, want, lim, wu, sm, buf, rate, rtt)
        while t.step():
            pass
        u = t.result()
    return _result(url, streams, budget, window, plan, d, u)


async def arun(url, streams=6, seconds=8, budget=20000000, warmup=1.0, sample=0.25,
               window=ESP32_WINDOW, plan=(None, None), bufsize=4096):
    """The same measurement inside the agent's event loop (yields every 20 ms)."""
    import asyncio
    host, base, addr, buf = _setup(url, streams, budget, seconds, warmup, sample, bufsize, plan, "both")
    lim, wu, sm = int(seconds * 1000), int(warmup * 1000), int(sample * 1000)
    t = Transfer(addr, host, base, False, streams, per_stream(budget // 2, streams), lim, wu, sm, buf)
    while t.step(20):
        await asyncio.sleep(0)
    d = t.result()
    want, rate, rtt = _up_args(d, plan, streams, budget)
    await asyncio.sleep(SETTLE_MS / 1000)
    t = Transfer(addr, host, base, True, streams, want, lim, wu, sm, buf, rate, rtt)
    while t.step(20):
        await asyncio.sleep(0)
    return _result(url, streams, budget, window, plan, d, t.result())


def scheduled(c, budget):
    """The scheduled test of agent/speedsched.py, from the box config `c`: a coroutine."""
    return arun(c["speed_url"], c.get("speed_streams", 6), c.get("speed_seconds", 8), budget,
                plan=tuple(c.get("speed_plan") or (None, None)),
                window=c.get("speed_window_bytes", ESP32_WINDOW))
