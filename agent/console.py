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
        self.write = write or _print

    async def handle(self, line):
        from agent.compat import cold
        try:
            await cold("agent.console_cmds", "handle", self, line)
        finally:
            import gc
            gc.collect()

    async def run(self, read):
        # read(): awaitable giving one character ("" at end of input).
        buf = ""
        while True:
            ch = await read()
            if not ch:
                return
            if isinstance(ch, bytes):
                ch = ch.decode()
            if ch in "\r\n":
                line, buf = buf, ""
                if line.strip():
                    try:
                        await self.handle(line)
                    except Exception as e:
                        self.write('@error {"cmd": "?", "reason": "%s"}' % type(e).__name__)
            elif ch == "\x03":
                raise KeyboardInterrupt
            elif len(buf) < MAX_LINE:
                buf += ch


def _print(s):
    print(s)


async def _stdin_reader():
    import asyncio
    if sys.implementation.name == "micropython":
        s = asyncio.StreamReader(sys.stdin)
    else:
        s = asyncio.StreamReader()
        await asyncio.get_event_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(s), sys.stdin)

    async def read():
        return await s.read(1)
    return read


async def serve(box, fw=None):
    """Run the box with its console on stdin/stdout (the board's UART)."""
    import asyncio
    task = None
    try:
        task = asyncio.create_task(Console(box, fw).run(await _stdin_reader()))
    except Exception as e:
        from agent.log import log
        log("console_off", "reason", repr(e))
    try:
        await box.run()
    finally:
        if task is not None:
            task.cancel()
