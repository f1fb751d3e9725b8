# time for the emulated ESP32 board: the esp32 port's epoch is 2000-01-01, and
# its RTC counts from 0 at power-on until something (NTP) sets it. The unix
# port's own time is extended (utime): ticks_* and sleep_* are the host's.
import _board
import utime
from utime import *  # noqa: F401,F403

_E = 946684800     # 2000-01-01 in Unix time


def time():
    return int(utime.time()) + _board.rtc


def time_ns():
    return (int(utime.time() * 1000000) + _board.rtc * 1000000) * 1000


def gmtime(secs=None):
    return utime.gmtime((time() if secs is None else secs) + _E)


localtime = gmtime


def mktime(local_time):
    return utime.mktime(local_time) - _E
