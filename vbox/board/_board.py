# The emulated ESP32 board's link to the vbox host process (vbox/boardhost.py):
# one UDP socket to the host, polled without blocking. The host sends
#   b"S" + JSON   the radio's state: {"uplink", "scan", "stations", "channel"}
#   b"E" + b"PIN" an edge on a GPIO (the Pin's irq handler runs at the next poll)
# each ended by b"\n",
# and receives b"H" (hello), b"F" (a watchdog feed), b"W" + JSON (a WDT start),
# b"A" + JSON (the AP's config), b"C" + JSON (an uplink connect), b"M" (RTC memory).
# Each UART has a socket of its own (machine.py): the kernel's socket buffer is
# the UART's rx FIFO, so the bytes never sit in the agent's heap.
# Everything here runs in the agent's heap: keep it small.
import socket

import vboxenv

state = {"uplink": True, "scan": [], "stations": [], "ntp": True}
irqs = {}         # GPIO number -> [Pin, handler, trigger]
_s = None


def addr():
    return socket.getaddrinfo("127.0.0.1", vboxenv.board)[0][-1]


def sock():
    global _s
    if _s is None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(addr())
        s.setblocking(False)
        _s = s
        send(b"H")
    return _s


def send(msg):
    try:
        sock().send(msg)
    except OSError:
        pass


def pump():
    # What the host sent since the last poll; a GPIO edge runs its handler now,
    # as the ISR would have when the edge came. The port's readinto reads every
    # datagram queued (one stream read), so each message ends with a newline.
    global _pend
    s = sock()
    b = _buf
    for _ in range(16):
        try:
            n = s.readinto(b)
        except OSError:
            return
        if not n:
            return
        d = _pend + bytes(b[:n]) if _pend else bytes(b[:n])
        ms = d.split(b"\n")
        _pend = ms.pop()
        for m in ms:
            _msg(m)


def _msg(m):
    k = m[0] if m else 0
    if k == 83:                   # S: the radio's state
        import json
        state.update(json.loads(m[1:]))
    elif k == 69:                 # E: an edge
        h = irqs.get(int(m[1:]))
        if h is not None and h[1] is not None:
            h[1](h[0])


_pend = b""
_buf = bytearray(512)


# The board's clock. Box time runs at a speedup (K board ms per 1000 real ms:
# the vbox option --speedup, or the config's "speedup" through rate()), so that
# tests that need days can run the ESP32 path; ticks, sleeps, the event loop's
# waits (board select.py) and the host's NTP answers share this one time base.
# ms(): board milliseconds since power-on. rtc: seconds to add to ms() // 1000
# for the board's time (2000 epoch): at power-on the board's clock reads 0.
import utime as _t  # noqa: E402

K = max(1000, int((getattr(vboxenv, "speedup", 1) or 1) * 1000))
_r0 = _t.time_ns() // 1000000
T0 = _t.ticks_ms()           # the port's ticks at power-on (vbox/board/time.py)
_v0 = 0
rtc = 0
del _t


def ms():
    import utime
    return _v0 + (utime.time_ns() // 1000000 - _r0) * K // 1000


def real(t):
    # board ms -> real ms (rounded up: a short wait is not a busy loop)
    return t if t <= 0 or K == 1000 else (t * 1000 + K - 1) // K


def rate(speedup):
    # From now on box time runs at `speedup`; the host's clock follows.
    global K, _r0, _v0
    import utime
    # never slower than real time: the port's C event loop stamps tasks in real ticks
    k = max(1000, int(speedup * 1000))
    v = ms()
    _r0 = utime.time_ns() // 1000000
    _v0 = v
    K = k
    send(b"T%d" % k)
