# The box's serial console: a small line protocol for the bench station and a
# technician's terminal (docs/console.md). One command a line, no echo; one
# answer a line, "@<command> <JSON>" (info, selftest, log [N], help).
# Only this reader stays in RAM; the commands (agent/console_cmds.py) are
# loaded for each line and dropped after. No answer ever holds a secret.
import sys

MAX_LINE = 128


class Console:
    def __init__(self, box, fw=None, write=None):
        self.box = box
        self.fw = fw or {}
        self.write = write or print

    async def run(self, read):
        # read(): awaitable giving one byte (b"" at end of input). Bytes, not text:
        # a line noise byte (a baud mismatch, esptool's sync) must not end the reader.
        from agent.compat import cold
        buf = bytearray()
        while True:
            ch = await read()
            if not ch:
                return
            if isinstance(ch, str):
                ch = ch.encode()
            if ch in b"\r\n":
                line = bytes(buf)
                buf[:] = b""
                try:
                    line = line.decode().strip()
                except UnicodeError:
                    self.write('@error {"cmd": "?", "reason": "not text"}')
                    continue
                if line:
                    try:
                        await cold("agent.console_cmds", "handle", self, line)
                    except Exception as e:
                        self.write('@error {"cmd": "?", "reason": "%s"}' % type(e).__name__)
                    import gc
                    gc.collect()
            elif ch == b"\x03":
                raise KeyboardInterrupt
            elif len(buf) < MAX_LINE:
                buf += ch


async def serve(box, fw=None):
    """Run the box with its console on stdin/stdout (the board's UART)."""
    import asyncio

    from agent.compat import MICROPYTHON
    task = None
    try:
        if MICROPYTHON:
            s = asyncio.StreamReader(sys.stdin.buffer)
        else:
            from agent.compat_cpy import stdin_stream
            s = await stdin_stream()
        task = asyncio.create_task(Console(box, fw).run(lambda: s.read(1)))
    except Exception as e:
        from agent.log import log
        log("console_off", "reason", repr(e))
    try:
        await box.run()
    finally:
        if task is not None:
            task.cancel()
