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


async def stdin_stream():
    # The serial console's input on a host: stdin as an asyncio stream.
    import asyncio
    import sys
    s = asyncio.StreamReader()
    await asyncio.get_event_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(s), sys.stdin)
    return s
