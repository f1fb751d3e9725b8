"""Fuzzing the TIC reader (agent/tic.py) with any bytes in any chunking (issue 9):
the result does not depend on the chunking, and a group reported good is in the
input verbatim. (tests/test_tic_fuzz.py checks decoded values against an
independent encoder.) Budget and counts: tests/fuzzing.py."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent import tic
from tests.fuzzing import TESTS, count, fuzz

REF = sorted((TESTS / "data" / "tic").glob("*.bin"))
FRAMES = [p.read_bytes() for p in REF]
TIC_BYTES = st.sampled_from(b"\x02\x03\x04\n\r\t ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789./-+\x7f\x80\xff")


@st.composite
def tic_stream(draw):
    parts = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.integers(0, 3))
        if kind == 0 and FRAMES:
            parts.append(draw(st.sampled_from(FRAMES)))
        elif kind == 1 and FRAMES:
            fr = bytearray(draw(st.sampled_from(FRAMES)))
            for _ in range(draw(st.integers(1, 4))):       # flips, drops and inserted bytes
                i = draw(st.integers(0, len(fr) - 1))
                op = draw(st.integers(0, 2))
                if op == 0:
                    fr[i] ^= 1 << draw(st.integers(0, 7))
                elif op == 1:
                    del fr[i]
                else:
                    fr.insert(i, draw(TIC_BYTES))
            parts.append(bytes(fr))
        elif kind == 2:
            parts.append(bytes(draw(st.lists(TIC_BYTES, max_size=300))))
        else:
            parts.append(draw(st.binary(max_size=200)))
    return b"".join(parts)


def _frames(reader, stream, cuts):
    out = []
    prev = 0
    for c in sorted(cuts) + [len(stream)]:
        out += reader.feed(stream[prev:c])
        prev = c
    return [(f.mode, sorted(f.groups.items()), list(f.errors), f.nbytes) for f in out]


def _encodings(mode, label, value, horo):
    def ck(body):
        return bytes([(sum(body) & 0x3F) + 0x20])
    out = []
    for m in ([mode] if mode else [tic.HISTORIC, tic.STANDARD]):
        if m == tic.HISTORIC:
            body = f"{label} {value}".encode()
            out.append(b"\n" + body + b" " + ck(body) + b"\r")
        else:
            body = (label + "\t" + (horo + "\t" if horo is not None else "") + value + "\t").encode()
            out.append(b"\n" + body + ck(body) + b"\r")
    return out


@fuzz()
@given(tic_stream(), st.lists(st.integers(0, 4000), max_size=8), st.sampled_from([None, tic.HISTORIC, tic.STANDARD]))
def fuzz_tic_streams(stream, cuts, mode):
    count("tic streams")
    cuts = [c for c in cuts if c < len(stream)]
    whole = _frames(tic.Reader(mode), stream, [])
    a = tic.Reader(mode)
    chunked = _frames(a, stream, cuts)
    assert whole == chunked                                     # chunking never matters
    assert a.bytes == len(stream)
    assert a.frames_ok + a.frames_bad == len(whole)
    for fmode, groups, _errors, _n in whole:
        for label, (value, horo, ok) in groups:
            if ok:                                              # never guess: it is in the input
                assert any(e in stream for e in _encodings(fmode, label, value, horo)), (label, value)


def test_fuzz_tic_streams():
    fuzz_tic_streams()


TARGETS = [("tic streams", fuzz_tic_streams)]
