# The few places where MicroPython and CPython differ, in one module; and the
# loading of cold code (cold(), forget()).
import os
import sys

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
    if sys.modules.pop(name, None) is None:
        return
    parent, _, child = name.rpartition(".")
    p = sys.modules.get(parent)
    if p is not None and hasattr(p, child):
        delattr(p, child)


# Calls under way into each cold module, by name: only the outermost forgets it.
_depth = {}


def cold(name, fn, *args):
    """Call function `fn` of the module `name` ("agent.twin_cold") and return
    its result: cold code, loaded when it runs and dropped from RAM after. The
    module is imported if it is not in sys.modules, and forgotten when the
    outermost call into it returns or raises; a nested call (a cold function
    that calls back into hot code that calls the same module) uses the copy
    already loaded instead of loading a second one. For a coroutine function
    the call returns the coroutine: the module leaves sys.modules at once and
    RAM once the coroutine is done."""
    d = _depth
    n = d.get(name, 0)
    d[name] = n + 1
    try:
        m = sys.modules.get(name)
        if m is None:
            __import__(name)         # returns the top package; the module is in sys.modules
            m = sys.modules[name]
        return getattr(m, fn)(*args)
    finally:
        if n:
            d[name] = n
        else:
            del d[name]
            forget(name)


def forget_asyncio_funcs():
    # MicroPython's asyncio loads asyncio.funcs (wait_for, gather) on first use
    # and keeps it (~0.9 KB on the unix port); a box needs it only around a
    # CONNECT and at shutdown. Its lazy loader brings it back when next used.
    if not MICROPYTHON:
        return
    a = sys.modules.get("asyncio")
    if a is None or sys.modules.get("asyncio.funcs") is None:
        return
    d = a.__dict__
    for n in ("wait_for", "wait_for_ms", "gather"):
        if n in d:
            del d[n]
    forget("asyncio.funcs")


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
