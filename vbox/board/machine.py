# machine for the emulated ESP32 board (vbox/board/): what MicroPython's esp32
# port gives, with its quirks (UART.readinto returns None when nothing came).
# The unix port's own machine is extended, not replaced (umachine).
import _board
import vboxenv
from umachine import *  # noqa: F401,F403

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

_WIRE = 64         # vbox/boardhost.py UART_WIRE


def reset_cause():
    return vboxenv.reset or PWRON_RESET


def unique_id():
    # The eFuse base MAC, as the esp32 port gives it.
    return bytes(int(x, 16) for x in vboxenv.mac.split(":"))


def reset():
    raise SystemExit(3)           # the virtual box reboots on this code


def freq(hz=None):
    return 160000000


def disable_irq():
    _board.pump()                 # edges pending since the last poll fire first
    return 1


def enable_irq(state):
    pass


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, id, mode=-1, pull=-1, *, value=None):
        if 6 <= id <= 11:
            raise ValueError("GPIO%d is the SPI flash" % id)
        self.id = id
        self.v = 1

    def value(self, x=None):
        if x is None:
            return self.v
        self.v = 1 if x else 0

    def irq(self, handler=None, trigger=3, *, priority=1, wake=None, hard=False):
        _board.irqs[self.id] = [self, handler, trigger]
        _board.send(b"I%d" % self.id)


class UART:
    def __init__(self, id=1, baudrate=9600, bits=8, parity=None, stop=1, *, tx=None, rx=None,
                 txbuf=None, rxbuf=None, timeout=None, timeout_char=None, invert=None,
                 flow=None, rts=None, cts=None):
        self.id = id
        self.s = None
        self.stage = bytearray(_WIRE)
        self.mv = memoryview(self.stage)
        self.at = 0
        self.init(baudrate, bits, parity, stop, tx=tx, rx=rx, rxbuf=rxbuf)

    def init(self, baudrate=9600, bits=8, parity=None, stop=1, *, tx=None, rx=None,
             txbuf=None, rxbuf=None, timeout=None, timeout_char=None, invert=None,
             flow=None, rts=None, cts=None):
        import socket
        for p in (tx, rx):
            if p is not None and 6 <= p <= 11:
                raise ValueError("GPIO%d is the SPI flash" % p)
        self.deinit()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(_board.addr())
        s.setblocking(False)
        self.s = s
        # The line's settings go to the host: a meter at another baud rate or a
        # UART not in 7E1 reads as garbage, as on the wire.
        s.send(b"U%d,%d,%d,%s,%d,%s,%s,%s" % (self.id, baudrate, bits, parity, stop, tx, rx, rxbuf))

    def deinit(self):
        if self.s is not None:
            self.s.close()
            self.s = None

    def any(self):
        return 0

    def readinto(self, buf, nbytes=None):
        # None when nothing came (MicroPython's esp32 UART with timeout=0).
        # The wire comes in datagrams of exactly _WIRE bytes (a length, then the
        # bytes): a stream read of a UDP socket truncates a datagram longer than
        # the room left, so the socket is only ever read into the whole stage.
        n = 0
        end = len(buf) if nbytes is None else nbytes
        st = self.stage
        while n < end:
            if self.at >= st[0]:
                try:
                    k = self.s.readinto(st)
                except OSError:
                    k = 0
                if k != _WIRE:
                    st[0] = 0
                    break
                self.at = 0
            k = min(st[0] - self.at, end - n)
            buf[n:n + k] = self.mv[1 + self.at:1 + self.at + k]
            self.at += k
            n += k
        return n or None

    def read(self, nbytes=None):
        b = bytearray(nbytes or 256)
        n = self.readinto(b)
        return None if n is None else bytes(b[:n])

    def write(self, buf):
        return len(buf)


class WDT:
    def __init__(self, *, id=0, timeout=5000):
        if timeout < 1000:
            raise ValueError("WDT timeout too short")
        _board.send(b"W%d" % timeout)

    def feed(self):
        _board.send(b"F")
        _board.pump()


class RTC:
    def __init__(self, id=0):
        pass

    def datetime(self, datetimetuple=None):
        import time
        if datetimetuple is None:
            t = time.localtime()
            return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0)
        y, mo, d, wd, h, mi, s = datetimetuple[:7]
        # the board's clock (2000 epoch) is its box time plus _board.rtc
        _board.rtc = time.mktime((y, mo, d, h, mi, s, 0, 0)) - _board.ms() // 1000

    def init(self, datetime=None):
        if datetime is not None:
            self.datetime(tuple(datetime[:3]) + (0,) + tuple(datetime[3:6]))

    def memory(self, data=None):
        if data is None:
            return vboxenv.rtcmem or b""
        vboxenv.rtcmem = bytes(data)
        _board.send(b"M" + data)
