# Line speed, TR-143 style, over plain HTTP sockets; runs on MicroPython and CPython.
# Download (GET {base}/download?bytes=N) then upload (PUT {base}/upload), N parallel
# non-blocking streams driven by select.poll. The first `warmup` ms after the first
# byte are excluded (slow start), then the byte count is sampled every `sample` ms;
# goodput is read on the upper convex hull of the samples (Window). Latency is the
# TCP connect time (idle line). The byte budget is never exceeded: each stream asks
# for a share of it, minus an allowance for HTTP headers (HDR). The share of time
# the loop did not wait in poll() tells a box whose CPU is the limit (CPU_BUSY).
# See docs/decisions/0006-speedtest.md.
import select
import socket
import sys

from agent.compat import ticks_diff, ticks_ms

ESP32_WINDOW = 5744          # lwIP TCP_WND on MicroPython's ESP32 port: 4 x 1436
TRACE = False                # keep every sample in the result (benchmarks)
GRACE = 4                    # the time limit may stretch by limit / GRACE to end on a clean sample
CPU_BUSY = 90                # % of the time not waiting for the network: client_limited
HDR = 512                    # per-stream allowance for request + response headers
HDR_READ = 256               # read size until a response's headers have ended (they are copied)
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


def warm_ms(rtt, rate, streams, cap):
    # Warm-up for a plan `rate` (bit/s) at this RTT: slow start takes about
    # log2(BDP / the streams' initial windows) round trips; two more let the first
    # burst through. No plan: `cap`. Samples before it can lie above the line.
    if not rate or not rtt:
        return cap
    n, w = 2, streams * 14480
    b = rate * rtt // 8000
    while b > w:
        w *= 2
        n += 1
    return max(250, min(cap, n * rtt))


def per_stream(budget, streams):
    # Body bytes each stream may ask for so that bodies + headers <= budget.
    return max(0, (budget - streams * HDR) // streams)


class Window:
    """Warm-up exclusion and the rate, fed with (ticks, bytes) samples.
    Bytes the box has counted never run ahead of bytes the line has carried: a lost
    segment holds a stream's later bytes in the kernel until the retransmission,
    slow start and a stream that ends leave the line part idle, a busy box reads
    late. Each of these puts samples *below* the line's straight bytes-over-time,
    never above it. So the rate is read on the upper convex hull of the samples
    (the tightest line with no sample above it), on the hull edge at the middle of
    the time every stream ran (docs/decisions/0006-speedtest.md). Samples after a
    stream ended still shape the hull; they fall below it where the line idled.
    At the sender (upload), bytes accepted run ahead by what sits in the send
    buffer, kept full at every sample: the same offset all along, so the same
    reading holds."""

    def __init__(self, warmup_ms=1000):
        self.warmup = warmup_ms
        self.tb = None        # first byte
        self.wt = self.wb = None
        self.et = None        # last sample
        self.ft = 0           # last sample with every stream running (ms after wt)
        self.n = 0
        self.h = []           # upper hull: [ms after wt, bytes after wb], time order
        self.pts = None       # [(ms after tb, bytes, full)] when tracing

    def first(self, t):
        if self.tb is None:
            self.tb = t

    def sample(self, t, total, full, clean=False):
        # full: every stream still running, so the link is loaded the same way.
        # clean: every running stream moved since the last sample, so none holds
        # bytes back behind a lost segment: the window starts on such a sample.
        if self.tb is None:
            return
        if self.pts is not None:
            self.pts.append((ticks_diff(t, self.tb), total, full, clean))
        if self.wt is None:
            d = ticks_diff(t, self.tb)
            if not full or d < self.warmup or not (clean or d >= 2 * self.warmup):
                return
            self.wt, self.wb = t, total
        x, y, h = ticks_diff(t, self.wt), total - self.wb, self.h
        if x < 0 or (h and x <= h[-1][0]):
            return
        self.et = t
        self.n += 1
        if full:
            self.ft = x
        # drop the hull's last points while they lie on or under the chord to (x, y)
        while len(h) >= 2:
            a, b = h[-2], h[-1]
            if (b[1] - a[1]) * (x - a[0]) > (y - a[1]) * (b[0] - a[0]):
                break
            h.pop()
        h.append((x, y))

    def edge(self):
        # the hull edge over the middle of the fully loaded time: (x0, y0, x1, y1)
        h, m = self.h, self.ft // 2
        for i in range(1, len(h)):
            if h[i][0] >= m:
                return h[i - 1][0], h[i - 1][1], h[i][0], h[i][1]
        return None

    def rate(self):
        e = self.edge()
        if e is None or e[2] <= e[0]:
            return None
        return (e[3] - e[1]) * 8000 // (e[2] - e[0])

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
        self.tl = None        # when it last moved bytes


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
        self.warm_cap = warmup_ms
        if TRACE:
            self.win.pts = []
        self.buf = buf or bytearray(4096)
        self.mv = memoryview(self.buf)
        self.hv = self.mv[:HDR_READ]
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
        self.t1 = None        # first byte: the loop's busy share counts from here
        self.waited = 0       # ms blocked in poll() since t1
        self.clean = False    # the last periodic sample was clean (Window.sample)
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

    def _clean(self, now):
        # Every running stream moved in the last half sample: a stream that holds
        # bytes back behind a lost segment delivers (or, sending, frees) nothing.
        q = self.sample_ms // 2
        for s in self.ss:
            if s.st < 3 and (s.tl is None or ticks_diff(now, s.tl) > q):
                return False
        return True

    def step(self, max_ms=250):
        now = ticks_ms()
        el = ticks_diff(now, self.t0)
        # The time limit ends the test on a clean sample (no bytes held back), or
        # GRACE later at most.
        if self.stop is None and el >= self.limit and (self.clean or el >= self.limit + self.limit // GRACE):
            self._finish(now, "time")
        if self.stop is not None:
            return False
        wait = max_ms
        if self.nxt is not None:
            wait = min(wait, max(0, ticks_diff(self.nxt, now)))
        a = ticks_ms()
        evs = self.poll.poll(wait)
        if self.nxt is not None:
            self.waited += ticks_diff(ticks_ms(), a)
        for obj, ev in evs:
            s = self._find(obj)
            if s is not None:
                self._event(s, ev)
        now = ticks_ms()
        if self.nxt is not None and ticks_diff(now, self.nxt) >= 0:
            if self.up:
                for s in self.ss:
                    if s.st == 1:
                        self._send(s, now)
            self.clean = self._clean(now)
            self.win.sample(now, self.total, self._full(), self.clean)
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
            if self.win.tb is None and not self.up:
                self.win.warmup = warm_ms(s.rtt, self.rate, len(self.ss), self.warm_cap)
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
            s.tl = now
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
            # Small reads until the headers have ended: they are copied to be
            # searched, and a whole buffer's copy was the box's peak in a test.
            mv = self.mv if s.hdr == b"!" else self.hv
            try:
                n = rd(mv)
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
            if mv is not self.mv:
                h = s.hdr + bytes(mv[:n]) if len(s.hdr) < 2048 else s.hdr
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
            if body:
                s.tl = now
            self.total += body
            if s.n >= s.want:
                return self._done(s, now)

    def _go(self, now):
        if self.nxt is None:
            self.win.first(now)
            self.t1 = now
            self.nxt = now + self.sample_ms

    def _done(self, s, now):
        if s.n >= s.want or self.up:
            self.win.sample(now, self.total, self._full())
            self.tend = now
            self._end(s, 3)
        else:
            self._end(s, 4)

    def result(self):
        r = self._result()
        if self.win.pts is not None:
            r["trace"] = self.win.pts
        return r

    def _result(self):
        ms = ticks_diff(self.tend or ticks_ms(), self.treq) if self.treq is not None else 0
        rtts = [s.rtt for s in self.ss if s.rtt is not None]
        run = ticks_diff(self.tend or ticks_ms(), self.t1) if self.t1 is not None else 0
        e = self.win.edge()
        return {"goodput_bps": self.win.rate(), "edge_ms": e[2] - e[0] if e else 0,
                "cpu_busy": max(0, 100 - self.waited * 100 // run) if run > 0 else None, "mean_bps": self.total * 8000 // ms if ms > 0 else None,
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
            x["client_limited"] = bool(g and ceil and g >= ceil * 9 // 10) \
                or (x.get("cpu_busy") or 0) >= CPU_BUSY
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
        plan=(None, None), bufsize=4096, direction="both", trace=False):
    """One blocking measurement; `seconds` is the time limit of each direction."""
    global TRACE
    TRACE = trace
    host, base, addr, buf = _setup(url, streams, budget, seconds, warmup, sample, bufsize, plan, direction)
    d = u = None
    lim, wu, sm = int(seconds * 1000), int(warmup * 1000), int(sample * 1000)
    if direction in ("both", "down"):
        t = Transfer(addr, host, base, False, streams, per_stream(budget // 2 if direction == "both" else budget, streams),
                     lim, wu, sm, buf, plan[0] or 0)
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
    t = Transfer(addr, host, base, False, streams, per_stream(budget // 2, streams), lim, wu, sm, buf, plan[0] or 0)
    while t.step(20):
        await asyncio.sleep(0)
    d = t.result()
    t = None                 # its sockets and samples, before the upload's
    want, rate, rtt = _up_args(d, plan, streams, budget)
    await asyncio.sleep(SETTLE_MS / 1000)
    t = Transfer(addr, host, base, True, streams, want, lim, wu, sm, buf, rate, rtt)
    while t.step(20):
        await asyncio.sleep(0)
    return _result(url, streams, budget, window, plan, d, t.result())


BOX_BUF = 2048       # the box's socket buffer: its heap peak is the test (docs/performance.md)


def scheduled(c, budget, plan):
    """The scheduled test of agent/speedsched.py, from the box config `c` and the
    plan in force (down, up) bit/s: a coroutine. Reads of at most 2 KB (3 for a
    whole ESP32 TCP window): the 4 KB of a host run were a quarter of what a
    test adds to the box's heap."""
    return arun(c["speed_url"], c.get("speed_streams", 6), c.get("speed_seconds", 8), budget,
                plan=plan, window=c.get("speed_window_bytes", ESP32_WINDOW),
                bufsize=c.get("speed_buf", BOX_BUF))
