# CPython stand-ins for what MicroPython has built in (agent/compat.py).
import time


def const(x):
    return x


def ticks_ms():
    return int(time.monotonic() * 1000)


def ticks_diff(a, b):
    return a - b


def ticks_add(a, b):
    return a + b
