# TIC decoder and reader, under CPython and MicroPython (tests/test_onbox.py).
from agent import tic
from agent.hal.sim_linky import SimLinky, group

_HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
REF = _HERE + "/../data/tic/"   # copied from shared/reference/tic (Apache-2.0, Enedis)


def _ref(name):
    with open(REF + name, "rb") as f:
        return f.read()


def _one(data, mode=None, keep=None):
    r = tic.Reader(mode, keep)
    frames = r.feed(data)
    assert len(frames) == 1, len(frames)
    return r, frames[0]


def test_reference_historic(tmp):
    data = _ref("enedis-historic-frame.bin")
    assert len(data) == 141
    r, f = _one(data)
    assert f.mode == "historic" and f.valid(), f.errors
    assert len(f.groups) == 9
    assert f.groups["ADCO"] == ["812164417227", None, True]
    assert f.groups["BASE"][0] == "000000104"
    assert f.groups["PTEC"][0] == "TH.."
    s = tic.summary(f)
    assert s["wh"] == {"BASE": 104} and s["va"] == 0 and s["sub"] == [15, "A"]
    assert s["period"] == "TH.." and s["meter"] == "812164417227"
    assert r.errors == {"checksum": 0, "malformed": 0, "interrupted": 0}
    # the same bytes read as standard: every group is malformed, nothing accepted
    r2 = tic.Reader("standard")
    f2 = r2.feed(data)[0]
    assert not f2.groups and r2.errors["malformed"] == 9


def test_reference_standard(tmp):
    data = _ref("enedis-standard-frame.bin")
    assert len(data) == 865
    r, f = _one(data)
    assert f.mode == "standard" and f.valid(), f.errors
    assert len(f.groups) == 38
    g = f.groups
    assert g["DATE"] == ["", "E170915101601", True]
    assert g["NGTF"] == ["H PLEINE/CREUSE ", None, True]
    assert g["LTARF"] == ["INDEX INACTIF 2 ", None, True]
    assert g["MSG1"][0] == "PAS DE          MESSAGE         "
    assert g["SMAXSN-1"] == ["00000", "E170913000000", True]
    assert g["STGE"][0] == "000A4411" and g["PCOUP"] == ["02", None, True]
    assert g["PJOURF+1"][0].startswith("00008002 0100C001")
    s = tic.summary(f)
    assert s["meter"] == "031664001115" and s["sub"] == [3, "kVA"] and s["status"] == "000A4411"
    assert s["wh"]["EASF01"] == 0 and s["va"] == 0
    r2 = tic.Reader("historic")
    assert not r2.feed(data)[0].groups


def test_reference_pcoup_invalid_flagged(tmp):
    good = _ref("enedis-standard-frame.bin")
    bad = _ref("enedis-standard-frame-pcoup-invalid.bin")
    assert good != bad
    r, f = _one(bad)
    assert not f.valid()
    assert f.errors == ["checksum:PCOUP"]
    assert f.groups["PCOUP"] == ["02", None, False]
    assert sum(1 for k in f.groups if f.groups[k][2]) == 37
    assert r.errors == {"checksum": 1, "malformed": 0, "interrupted": 0}
    assert r.frames_bad == 1 and r.frames_ok == 0
    # the consumer's reader keeps no bad group at all
    r3 = tic.Reader(None, tic.KEEP, False, False)
    f3 = r3.feed(bad)[0]
    assert "PCOUP" not in f3.groups and r3.errors["checksum"] == 1


def test_any_chunking_across_frames(tmp):
    h = _ref("enedis-historic-frame.bin")
    s = _ref("enedis-standard-frame.bin")
    p = _ref("enedis-standard-frame-pcoup-invalid.bin")
    stream = b"\x00\xffjunk" + s + b"\r\n garbage " + p + h + s
    ref = tic.Reader().feed(stream)
    assert [x.valid() for x in ref] == [True, False, True, True]
    assert [x.mode for x in ref] == ["standard", "standard", "historic", "standard"]
    for size in (1, 2, 3, 7, 64, 255, 1000):
        r = tic.Reader()
        out = []
        mv = memoryview(stream)
        for i in range(0, len(stream), size):
            out += r.feed(mv[i:i + size])
        assert len(out) == 4, size
        for a, b in zip(out, ref):
            assert a.groups == b.groups and a.errors == b.errors, size
    # partial read with a caller-owned buffer and a count
    buf = bytearray(300)
    r = tic.Reader()
    got = []
    for i in range(0, len(stream), 300):
        chunk = stream[i:i + 300]
        buf[0:len(chunk)] = chunk
        got += r.feed(buf, len(chunk))
    assert [x.valid() for x in got] == [True, False, True, True]


def test_checksum_can_be_a_space(tmp):
    # find a historic and a standard group whose checksum is SP
    for mode, label, v in (("historic", "BASE", "000000399"), ("historic", "IINST", "009"),
                           ("standard", "SINSTS", "00899")):
        g = group(mode, label, v)
        assert g[-2] == 0x20 and g[-3] == (0x20 if mode == "historic" else 9)
        r = tic.Reader()
        f = r.feed(b"\x02" + g + b"\x03")[0]
        assert f.valid() and f.mode == mode and f.groups[label][0] == v, (mode, g, f.errors)
        # the same group without its space checksum is malformed, not decoded
        r = tic.Reader()
        f = r.feed(b"\x02" + g[:-2] + b"\r\x03")[0]
        assert not f.valid() and label not in f.groups


def _sum(b):
    s = 0
    for c in b:
        s += c
    return (s & 0x3F) + 0x20


def test_other_modes_rule_never_accepted(tmp):
    # historic-shaped group whose checksum follows the standard rule (includes the final SP)
    body = b"PAPP 01234 "
    ck = _sum(body)
    assert ck != _sum(body[:-1])
    r = tic.Reader()
    f = r.feed(b"\x02\n" + body + bytes([ck]) + b"\r\x03")[0]
    assert not f.valid() and r.errors["checksum"] + r.errors["malformed"] == 1
    assert "PAPP" not in f.groups or not f.groups["PAPP"][2]
    # standard-shaped group whose checksum follows the historic rule (excludes the last HT)
    body = b"SINSTS\t01234\t"
    ck = _sum(body[:-1])
    assert ck != _sum(body)
    r = tic.Reader()
    f = r.feed(b"\x02\n" + body + bytes([ck]) + b"\r\x03")[0]
    assert not f.valid() and not ("SINSTS" in f.groups and f.groups["SINSTS"][2])
    # a frame is one mode: a historic group inside a standard frame is malformed
    r = tic.Reader()
    f = r.feed(b"\x02" + group("standard", "VTIC", "02") + group("historic", "PAPP", "00100") + b"\x03")[0]
    assert f.mode == "standard" and "PAPP" not in f.groups and r.errors["malformed"] == 1


def test_eot_interrupts_frame(tmp):
    s = _ref("enedis-standard-frame.bin")
    cut = s[:400] + b"\x04" + s
    r = tic.Reader()
    out = r.feed(cut)
    assert len(out) == 2
    assert not out[0].valid() and "interrupted" in out[0].errors
    assert out[1].valid()
    assert r.errors["interrupted"] == 1 and r.errors["malformed"] == 1
    # a frame cut short by the next STX counts as interrupted too
    r = tic.Reader()
    out = r.feed(s[:300] + s)
    assert [x.valid() for x in out] == [False, True] and r.errors["interrupted"] == 1


def test_lost_bytes_reject_the_group_never_guess(tmp):
    s = _ref("enedis-standard-frame.bin")
    truth = tic.Reader().feed(s)[0].groups
    for i in range(1, len(s) - 1):
        r = tic.Reader()
        out = r.feed(s[:i] + s[i + 1:] + s)
        assert out[-1].valid()
        first = out[0]
        assert not first.valid(), i
        for k in first.groups:
            v = first.groups[k]
            if v[2]:
                assert truth[k] == v, (i, k, v)
        errs = r.errors
        assert errs["checksum"] + errs["malformed"] + errs["interrupted"] >= 1


def test_flipped_bits_never_accepted(tmp):
    h = _ref("enedis-historic-frame.bin")
    truth = tic.Reader().feed(h)[0].groups
    for i in range(1, len(h) - 1):
        for bit in range(7):
            b = bytearray(h)
            b[i] ^= 1 << bit
            r = tic.Reader()
            out = r.feed(bytes(b) + h)
            # a flip can make an STX (LF ^ 8): then there are three frames
            assert out[-1].valid() and 1 <= len(out) <= 3, (i, bit, len(out))
            for fr in out[:-1]:
                assert not fr.valid(), (i, bit)
                for k in fr.groups:
                    v = fr.groups[k]
                    assert not v[2] or truth.get(k) == v, (i, bit, k, v)
            assert sum(r.errors[k] for k in r.errors) >= 1


def test_three_phase_frame_over_1300_bytes(tmp):
    t = [1767225600.0]
    lk = SimLinky(lambda: t[0], mode="standard", three_phase=True)
    fr = lk.frame(t[0] + 7200)
    assert len(fr) > 1300
    r = tic.Reader()
    got = []
    for i in range(0, len(fr), 37):
        got += r.feed(fr[i:i + 37])
    assert len(got) == 1 and got[0].valid(), got[0].errors
    assert "SINSTS3" in got[0].groups and "UMOY3" in got[0].groups


def test_overlong_group_and_garbage_recover(tmp):
    s = _ref("enedis-historic-frame.bin")
    junk = b"\x02\n" + b"A" * 500 + b"\r" + b"xyz\r\r\n\x03"
    r = tic.Reader()
    out = r.feed(junk + s)
    assert len(out) == 2 and not out[0].valid() and out[1].valid()
    assert r.errors["malformed"] >= 2


def test_forced_mode_and_keep(tmp):
    s = _ref("enedis-standard-frame.bin")
    r = tic.Reader("standard", tic.KEEP)
    f = r.feed(s)[0]
    assert f.valid() and "MSG1" not in f.groups and "EASF01" in f.groups


def test_sim_linky_stream_with_faults(tmp):
    t = [1767225600.0]
    for mode in ("historic", "standard"):
        lk = SimLinky(lambda: t[0], mode=mode, faults=0.05, seed=11)
        r = tic.Reader(None, tic.KEEP, False, False)
        buf = bytearray(256)
        truth = set()
        ok = 0
        for step in range(120):
            t[0] += 1.5
            while True:
                n = lk.tic_read(buf)
                for f in r.feed(buf, n):
                    s = tic.summary(f)
                    if f.valid():
                        ok += 1
                    if s["wh"]:
                        idx = s["wh"].get("HCHP", s["wh"].get("EASF02"))
                        if idx is not None:
                            truth.add(idx)
                if n < len(buf):
                    break
        assert lk.frames > 20 and ok > 0, (mode, lk.frames, ok)
        assert lk.overflow == 0
        assert max(truth) <= lk.last[1]
