# agent/rules/sign.py: HMAC-SHA256 by hand (RFC 4231 vectors), the canonical form,
# key diversification and the twin's verify hook. Runs under CPython and MicroPython.
from binascii import hexlify

from agent.rules import sign
from agent.twin import Invalid, Twin


def _hex(b):
    return hexlify(b).decode()


def test_rfc4231_vectors(tmp):
    assert _hex(sign.hmac(b"\x0b" * 20, b"Hi There")) == \
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
    assert _hex(sign.hmac(b"Jefe", b"what do ya want for nothing?")) == \
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert _hex(sign.hmac(b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First")) == \
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"


def test_matches_cpython_hmac_when_available(tmp):
    try:
        import hashlib
        import hmac
    except ImportError:
        return  # MicroPython: the RFC vectors above are the reference
    for n in (0, 1, 31, 32, 63, 64, 65, 200):
        key = bytes((i * 7 + n) & 255 for i in range(n))
        msg = bytes(range(n % 97))
        assert sign.hmac(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()


def _canon(doc, skip=None):
    out = []
    sign.canonical(doc, out.append, skip)
    return b"".join(out)


def test_canonical_form(tmp):
    doc = {"b": [1, -2, True, False, None], "a": {"z": "x", "\u00e9": "caf\u00e9 \"q\" \\ \n\t\x01"}, "sig": "zz"}
    assert _canon(doc, "sig") == ('{"a":{"z":"x","\u00e9":"caf\u00e9 \\"q\\" \\\\ \\n\\t\\u0001"},'
                                  '"b":[1,-2,true,false,null]}').encode()
    # the same document built in another key order gives the same bytes
    doc2 = {"a": {"\u00e9": doc["a"]["\u00e9"], "z": "x"}, "b": doc["b"]}
    assert _canon(doc2) == _canon(doc, "sig")
    try:
        _canon({"x": 1.5})
        assert False, "floats cannot be signed"
    except ValueError:
        pass


def test_key_diversification(tmp):
    master = b"operator master secret, 32 bytes"
    k1 = sign.box_key(master, "hb-0001")
    k2 = sign.box_key(master, "hb-0002")
    assert len(k1) == 32 and k1 != k2
    assert k1 == sign.hmac(master, b"homebox-box-key:hb-0001")


def _signed(doc, key):
    d = dict(doc)
    d["sig"] = sign.sign(d, key)
    return d


def _rejects(v, doc, field):
    try:
        v("parental", doc)
    except Invalid as e:
        assert e.field == field, (e.field, e.rule)
        return e.rule
    assert False, "accepted %r" % (doc,)


def test_verifier(tmp):
    master = b"m" * 32
    key = sign.box_key(master, "hb-1")
    v = sign.Verifier("hb-1", _hex(key))
    good = _signed({"version": 3, "box": "hb-1", "profiles": []}, key)
    v("parental", good)                                          # accepted
    _rejects(v, {"version": 3, "box": "hb-1"}, "sig")             # unsigned
    t = dict(good)
    t["version"] = 4                                               # tampered
    assert "does not match" in _rejects(v, t, "sig")
    other = _signed({"version": 3, "box": "hb-2"}, sign.box_key(master, "hb-2"))
    assert "hb-2" in _rejects(v, other, "box")                     # another box's document
    forged = _signed({"version": 3, "box": "hb-1"}, sign.box_key(master, "hb-2"))
    _rejects(v, forged, "sig")                                     # right box, wrong key
    _rejects(v, {"version": 3, "sig": good["sig"]}, "box")        # no box id
    bad = dict(good)
    bad["sig"] = "g" * 64
    _rejects(v, bad, "sig")
    # a box without a key accepts unsigned documents but not another box's
    open_v = sign.Verifier("hb-1")
    open_v("parental", {"version": 1})
    _rejects(open_v, {"version": 1, "box": "hb-9"}, "box")


def test_twin_verify_hook(tmp):
    import json
    key = sign.box_key(b"k" * 32, "hb-1")
    t = Twin(tmp + "/docs", {"parental": lambda d: None}, verify=sign.Verifier("hb-1", _hex(key)))
    d1 = _signed({"version": 1, "box": "hb-1", "n": 1}, key)
    assert t.handle("parental", json.dumps(d1)) == "applied"
    assert t.handle("parental", json.dumps({"version": 2, "box": "hb-1"})) == "rejected"
    assert t.reported["parental"]["rejected"]["field"] == "sig"
    assert t.reported["parental"]["rejected"]["version"] == 2
    assert t.version("parental") == 1 and t.applied["parental"]["n"] == 1
    d2 = _signed({"version": 2, "box": "hb-1", "n": 2}, key)
    assert t.handle("parental", json.dumps(d2)) == "applied"
    # a replay of a correctly signed older document is ignored and reported
    assert t.handle("parental", json.dumps(d1)) == "replay"
    assert t.reported["parental"]["ignored"]["version"] == 1
    assert t.version("parental") == 2
    # the same document again (a retained re-delivery) changes nothing
    t.dirty[:] = []
    assert t.handle("parental", json.dumps(d2)) == "replay"
    assert t.dirty == []


def test_previous_key_passes_only_replays(tmp):
    # after a key rotation (agent/keys.py): documents the old key signed pass only as
    # replays (version <= applied), which the twin ignores; a new version needs the new key
    old, new = bytes(range(32)), bytes(range(1, 33))
    applied = {"options": 4}
    v = sign.Verifier("b1", _hex(new), _hex(old), lambda s: applied.get(s, 0))
    for ver, key, ok in ((4, old, True), (3, old, True), (5, old, False), (5, new, True), (9, bytes(32), False)):
        d = {"version": ver, "box": "b1"}
        d["sig"] = sign.sign(d, key)
        try:
            v("options", d)
            got = True
        except Invalid as e:
            assert e.field == "sig"
            got = False
        assert got == ok, (ver, ok)
    # without the twin's versions the previous key is not used at all
    d = {"version": 1, "box": "b1"}
    d["sig"] = sign.sign(d, old)
    try:
        sign.Verifier("b1", _hex(new), _hex(old))("options", d)
        raise AssertionError("accepted")
    except Invalid:
        pass
