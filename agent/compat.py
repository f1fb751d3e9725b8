# The few places where MicroPython and CPython differ, in one module.
import os

# Re-exported: const (folded away by MicroPython's compiler) and the ticks_*.
try:
    from time import ticks_add, ticks_diff, ticks_ms  # noqa: F401

    from micropython import const  # noqa: F401
    MICROPYTHON = True
except ImportError:
    # CPython: the stand-ins live in their own module, not in the box's RAM.
    from agent.compat_cpy import const, ticks_add, ticks_diff, ticks_ms  # type: ignore[assignment]  # noqa: F401
    MICROPYTHON = False


def forget(name):
    # Drop a module from RAM once it is no longer needed: from sys.modules and
    # from its parent package, which keeps a reference of its own.
    import sys
    if sys.modules.pop(name, None) is None:
        return
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
