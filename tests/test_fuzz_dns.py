"""Fuzzing the box's DNS forwarder (agent/dns.py, issue 15) with any bytes, and with
valid queries and answers bent by flips, cuts and inserts, from a blocked and an
allowed device: it never raises; every packet is either dropped and counted or
handled (refused, blocklisted, answered from cache, or forwarded); every
reply to a device carries its query's id with QR set; nothing longer than a
query's limit is forwarded; an upstream answer goes back only to the device whose
query it matches. Budget and counts: tests/fuzzing.py."""
from __future__ import annotations

import sys

from hypothesis import given
from hypothesis import strategies as st

from agent import dns
from tests.fuzzing import count, fuzz
from tests.helpers import ROOT

sys.path.insert(0, str(ROOT / "tests" / "onbox"))
import test_dns as onbox  # noqa: E402  (the on-box test's stand-in sockets and packets)

NAMES = st.sampled_from(["example.org", "ads.bad.example", "a.b.c.d.e", "x" * 63 + ".org", "Ex.ORG"])


def bend(p: bytes, data) -> bytes:
    b = bytearray(p)
    for _ in range(data.draw(st.integers(0, 4))):
        op = data.draw(st.integers(0, 3))
        i = data.draw(st.integers(0, max(0, len(b) - 1)))
        if op == 0 and b:
            b[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == 1 and b:
            del b[i:i + data.draw(st.integers(1, 8))]
        elif op == 2:
            b[i:i] = data.draw(st.binary(max_size=8))
        else:
            b += data.draw(st.binary(min_size=1, max_size=700))
    return bytes(b)


def handled(f) -> int:
    return f.dropped + f.refused + f.nx + f.hits + f.fwd


@fuzz()
@given(st.data())
def fuzz_dns_packets(data):
    count("dns packets")
    f = onbox.fwd(dns_cache=3)
    sent_up = 0
    for _ in range(data.draw(st.integers(1, 12))):
        kind = data.draw(st.integers(0, 3))
        who = data.draw(st.sampled_from([onbox.TIP, onbox.PIP, ("10.0.0.99", 7)]))
        if kind == 0:
            pkt = data.draw(st.binary(max_size=600))
        else:
            pkt = onbox.query(data.draw(NAMES), data.draw(st.integers(0, 65535)), data.draw(st.sampled_from([1, 28, 255])))
            if kind == 2:
                pkt = bend(pkt, data)
        before, replies = handled(f), len(f.sock.sent)
        f.on_query(pkt, who)
        assert handled(f) == before + 1, (pkt, f.health())
        for r, a in f.sock.sent[replies:]:
            assert a == who and r[:2] == pkt[:2] and r[2] & 0x80, (r, pkt)
        if len(f.usock.sent) > sent_up:
            q, _ = f.usock.sent[-1]
            assert len(q) <= dns.MAXQ and len(pkt) == len(q)
            sent_up = len(f.usock.sent)
            if data.draw(st.booleans()):             # the upstream answers, maybe bent
                ans = onbox.answer(q, data.draw(st.integers(0, 2**32 - 1)))
                if data.draw(st.booleans()):
                    ans = bend(ans, data)
                n = len(f.sock.sent)
                d0 = f.dropped
                f.on_answer(ans)
                if len(f.sock.sent) > n:              # relayed: to that device, with its id
                    r, a = f.sock.sent[-1]
                    assert a == who and r[:2] == pkt[:2]
                else:
                    assert f.dropped == d0 + 1
        if data.draw(st.integers(0, 5)) == 0:        # a stray answer from anywhere
            d0, n = f.dropped, len(f.sock.sent)
            f.on_answer(data.draw(st.binary(max_size=1400)))
            assert f.dropped == d0 + 1 or len(f.sock.sent) == n + 1
    assert len(f.cache) <= 3


def test_fuzz_dns_packets():
    fuzz_dns_packets()


TARGETS = [("dns packets", fuzz_dns_packets)]
