"""Fuzzing the serial console (agent/console.py) with any lines (issue 9): one answer
line per command, valid JSON, never a secret. Budget and counts: tests/fuzzing.py."""
from __future__ import annotations

import asyncio
import json

from hypothesis import given
from hypothesis import strategies as st

from agent import console
from tests.fuzzing import count, fuzz

SECRET = "S3cret-pw-0123456789"


class _FakeBox:
    def __init__(self):
        class Hal:
            name = "sim"

            def mac(self):
                return "24:0a:c4:00:00:01"
        self.id = "fz-console"
        self.cfg = {"box_id": self.id, "broker_host": "127.0.0.1", "broker_port": 1883,
                    "mqtt_password": SECRET, "hmac_key": "00" * 32, "wifi_key": "wifi-" + SECRET}
        self.client = None
        self.hal = Hal()
        self.boot = 3

    def uptime(self):
        return 42


line_chars = st.sampled_from(list("info selftest log help 0123456789 -+xyz\t\x00\x7f\u00e9\u2028\r\n"))


def _answered(line: bytes) -> bool:
    # a line cut inside a character at MAX_LINE bytes is not text: answered with an error
    try:
        return bool(line.decode().strip())
    except UnicodeError:
        return True


# A quarter of the examples: the console collects garbage after every line (a
# box-sized heap), which costs ~50 ms a line in a CPython test process.
@fuzz(share=0.25)
@given(st.lists(st.one_of(st.sampled_from(["info", "help", "log", "log 3", "log -1", "log 99999999999",
                                           "log x", "", "   ", "info extra words"]),
                          st.text(line_chars, max_size=200), st.text(max_size=60)),
                min_size=1, max_size=6))
def fuzz_console_lines(lines):
    out: list[str] = []
    con = console.Console(_FakeBox(), {"firmware": "fz"}, write=out.append)
    data = "".join(ln.replace("selftest", "self-test").replace("\x03", "") + "\n" for ln in lines).encode()
    it = (data[i:i + 1] for i in range(len(data)))      # a UART gives bytes, one at a time

    async def read():
        return next(it, b"")
    asyncio.run(con.run(read))
    count("console lines", len(lines))
    commands = data.replace(b"\r", b"\n").split(b"\n")
    expected = sum(1 for c in commands[:-1] if _answered(c[:console.MAX_LINE]))
    assert len(out) == expected, (data, out)
    for ans in out:
        assert "\n" not in ans and ans.startswith("@"), ans
        cmd, _, body = ans[1:].partition(" ")
        assert cmd in ("info", "log", "help", "error"), ans
        obj = json.loads(body)
        if cmd == "error":
            assert obj.get("reason"), ans
        assert SECRET not in ans and "00" * 32 not in ans


def test_fuzz_console_lines():
    fuzz_console_lines()


TARGETS = [("console lines", fuzz_console_lines)]
