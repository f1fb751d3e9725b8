# Signed desired documents: HMAC-SHA256 (RFC 2104, by hand: MicroPython has no
# hmac module) over a canonical JSON form, with a per-box key derived from the
# operator's master secret (docs/decisions/0003-signing.md):
#     key_box = HMAC(master, "homebox-box-key:" + box_id)
#     doc["sig"] = hex(HMAC(key_box, canonical(doc without "sig")))
# The canonical form: keys sorted by code point, no whitespace, integers only
# (no floats), strings as raw UTF-8 with only '"', '\\' and controls escaped:
# byte for byte Python's json.dumps(doc, sort_keys=True, separators=(",", ":"),
# ensure_ascii=False).encode() for such documents.
import hashlib
from binascii import hexlify, unhexlify

PREFIX = b"homebox-box-key:"
_ESC = {0x22: b'\\"', 0x5C: b"\\\\", 0x0A: b"\\n", 0x0D: b"\\r", 0x09: b"\\t", 0x08: b"\\b", 0x0C: b"\\f"}


def _str(s, w):
    b = s.encode()
    for c in b:
        if c < 0x20 or c == 0x22 or c == 0x5C:
            break
    else:
        w(b'"' + b + b'"')
        return
    out = bytearray(b'"')
    for c in b:
        e = _ESC.get(c)
        if e:
            out += e
        elif c < 0x20:
            out += b"\\u%04x" % c
        else:
            out.append(c)
    out += b'"'
    w(bytes(out))


def canonical(v, w, skip=None):
    """Write the canonical form of v through w(bytes). Top-level key `skip` is left out."""
    if v is True:
        w(b"true")
    elif v is False:
        w(b"false")
    elif v is None:
        w(b"null")
    elif isinstance(v, int):
        w(b"%d" % v)
    elif isinstance(v, str):
        _str(v, w)
    elif isinstance(v, list):
        w(b"[")
        for i, x in enumerate(v):
            if i:
                w(b",")
            canonical(x, w)
        w(b"]")
    elif isinstance(v, dict):
        w(b"{")
        first = True
        for k in sorted(v):
            if k == skip:
                continue
            if not isinstance(k, str):
                raise ValueError("keys must be strings")
            if not first:
                w(b",")
            first = False
            _str(k, w)
            w(b":")
            canonical(v[k], w)
        w(b"}")
    else:
        raise ValueError("only integers, strings, booleans, null, lists and objects can be signed")


def _pads(key):
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key + bytes(64 - len(key))
    return bytes(c ^ 0x36 for c in key), bytes(c ^ 0x5C for c in key)


def hmac(key, msg=None, doc=None, skip=None):
    """HMAC-SHA256 of bytes `msg`, or of the canonical form of `doc`."""
    ipad, opad = _pads(key)
    h = hashlib.sha256(ipad)
    if doc is not None:
        canonical(doc, h.update, skip)
    else:
        h.update(msg)
    return hashlib.sha256(opad + h.digest()).digest()


def box_key(master, box_id):
    return hmac(master, PREFIX + box_id.encode())


def sign(doc, key):
    """Return the hex signature of doc (its `sig` field excluded) under key (bytes)."""
    return hexlify(hmac(key, doc=doc, skip="sig")).decode()


def same(a, b):
    # constant-time comparison of two byte strings
    if len(a) != len(b):
        return False
    r = 0
    for i in range(len(a)):
        r |= a[i] ^ b[i]
    return r == 0


class Verifier:
    """The twin's verify hook. With a key: a document must carry this box's id
    and a valid `sig`. Without a key: only a foreign `box` is refused.
    After a key rotation (agent/keys.py), `prev_hex` is the previous key: a document
    it signed passes only as a replay (version <= applied(section)), which the twin
    ignores: the retained documents signed before the rotation change nothing."""

    def __init__(self, box_id, key_hex=None, prev_hex=None, applied=None):
        self.box = box_id
        self.key = unhexlify(key_hex) if key_hex else None
        self.prev = unhexlify(prev_hex) if prev_hex and applied else None
        self.applied = applied

    def __call__(self, section, doc):
        from agent.twin import Invalid
        b = doc.get("box")
        if b is not None and b != self.box:
            raise Invalid("box", "addressed to box %s, this box is %s" % (str(b)[:64], self.box))
        if self.key is None:
            return
        if b is None:
            raise Invalid("box", "is required: this box only accepts signed documents")
        s = doc.get("sig")
        if not isinstance(s, str) or len(s) != 64:
            raise Invalid("sig", "is required: a hex HMAC-SHA256 (this box only accepts signed documents)")
        try:
            want = hmac(self.key, doc=doc, skip="sig")
            got = unhexlify(s)
        except ValueError:
            raise Invalid("sig", "is not hex, or the document holds a value that cannot be signed")
        if same(want, got):
            return
        v = doc.get("version")
        if self.prev is not None and isinstance(v, int) and v <= self.applied(section) and \
                same(hmac(self.prev, doc=doc, skip="sig"), got):
            return
        raise Invalid("sig", "does not match: tampered, or signed with another box's key")
