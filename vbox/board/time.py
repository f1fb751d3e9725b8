# time for the emulated ESP32 board: the esp32 port's epoch is 2000-01-01, and
# its RTC counts from 0 at power-on until something (NTP) sets it. Box time
# runs at the board's speedup (vbox/board/_board.py): ticks, sleeps and time() alike. The
# unix port's own time is extended (utime).
import _board
import utime
from utime import *  # noqa: F401,F403

_E = 946684800     # 2000-01-01 in Unix time


# Ticks count from the unix port's own ticks at power-on, at the board's speed,
# and wrap at the unix port's period (2**62), not the chip's 2**30: the port's C
# event loop (_asyncio) stamps a task queued "now" with its own ticks_ms and
# compares keys with its own period, so the two must agree (a task stamped in
# real ticks is then due at once, never late). The 2**30 wrap is unit-tested.
def ticks_ms():
    return _board.T0 + _board.ms()


def ticks_us():
    return (_board.T0 + _board.ms()) * 1000


def ticks_cpu():
    return (_board.T0 + _board.ms()) * 1000


def sleep(seconds):
    utime.sleep_ms(_board.real(int(seconds * 1000)))


def sleep_ms(ms):
    utime.sleep_ms(_board.real(ms))


def sleep_us(us):
    utime.sleep_us(_board.real(us // 1000) * 1000 if us >= 1000 else us)


def time():
    return _board.ms() // 1000 + _board.rtc


def time_ns():
    return (_board.ms() + _board.rtc * 1000) * 1000000


def gmtime(secs=None):
    return utime.gmtime((time() if secs is None else secs) + _E)


localtime = gmtime


def mktime(local_time):
    return utime.mktime(local_time) - _E
