# The serial console reads bytes: line noise (a baud mismatch, esptool's sync
# packet sent to a box that booted its app) is answered and forgotten, and the
# next command still works.
import asyncio

from agent.console import MAX_LINE, Console

# esptool's SYNC request, SLIP-framed, as it reaches a box that is not in the ROM loader
SYNC = b"\xc0\x00\x08\x24\x00\x00\x00\x00\x00\x07\x07\x12\x20" + b"\x55" * 32 + b"\xc0"


class _Box:
    cfg = {"mqtt_password": "never-shown"}


def _run(data):
    out = []
    con = Console(_Box(), {}, write=out.append)
    pos = [0]

    async def read():
        i = pos[0]
        pos[0] = i + 1
        return data[i:i + 1]
    asyncio.run(con.run(read))
    return out


def test_noise_then_a_command(tmp):
    out = _run(SYNC + b"\r\n" + SYNC + SYNC + b"\nhelp\r\n")
    assert len(out) == 3, out
    assert out[0] == '@error {"cmd": "?", "reason": "not text"}' and out[1] == out[0]
    assert out[2].startswith("@help "), out


def test_a_long_line_is_cut_and_answered_once(tmp):
    out = _run(b"x" * (MAX_LINE * 3) + b"\nhelp\n")
    assert len(out) == 2 and out[0].startswith("@error ") and out[1].startswith("@help "), out


def test_text_beyond_ascii_is_read_as_utf8(tmp):
    out = _run("caf\u00e9\n".encode())
    assert len(out) == 1 and out[0].startswith("@error ") and "caf" in out[0], out
    assert "unknown command" in out[0], out
