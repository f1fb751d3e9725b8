# The few places where MicroPython and CPython differ, in one module.
import os
import time

try:
    ticks_ms = time.ticks_ms
    ticks_diff = time.ticks_diff
    ticks_add = time.ticks_add
    MICROPYTHON = True
except AttributeError:
    MICROPYTHON = False

    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b

    def ticks_add(a, b):
        return a + b


def forget(name):
    # Drop a module from RAM once it is no longer needed: from sys.modules and
    # from its parent package, which keeps a reference of its own.
    import sys
    sys.modules.pop(name, None)
    parent, _, child = name.rpartition(".")
    p = sys.modules.get(parent)
    if p is not None and hasattr(p, child):
        delattr(p, child)


def urandom(n):
    return os.urandom(n)


def fsync(f):
    # CPython: make the data durable before the rename that publishes it.
    # MicroPython's littlefs commits on close.
    f.flush()
    fn = getattr(os, "fsync", None)
    if fn is not None:
        try:
            fn(f.fileno())
        except (AttributeError, OSError):
            pass


def mem():
    # (free, alloc, peak) of the heap; peak is None where the port cannot tell.
    import gc
    gc.collect()
    try:
        free, alloc = gc.mem_free(), gc.mem_alloc()
    except AttributeError:
        return (None, None, None)
    try:
        import micropython
        peak = micropython.mem_peak()
    except (ImportError, AttributeError):
        peak = None
    return (free, alloc, peak)
