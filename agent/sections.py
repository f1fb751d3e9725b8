# The desired-document sections: validators, effects and their wiring into a Box.
# Each section's rules live in agent/sec_<section>.py, imported only when a
# document must be checked (a desired document arrives, or a stored one is
# re-checked at boot), so a quiet box does not hold them in its heap.
#
# A validator is validate(doc, err, ctx): it calls err(field, rule) for each
# violation. On the box err raises Invalid (the first violation rejects); the
# operator tools collect every violation. ctx is the twin's applied documents,
# for rules across sections (options name bouquets of the lineup); None skips
# those rules (boot re-check, validation of a file with no context). A box
# that is attach()ed validates with its applied documents as ctx.
import sys

from agent.twin import Invalid


def _raise(field, rule):
    raise Invalid(field, rule)


def module(section):
    name = "agent.sec_" + section
    if name not in sys.modules:
        __import__(name)
    return sys.modules[name]


def check(section, doc, err=_raise, ctx=None):
    """Run a section's validator on a document (the envelope is the twin's)."""
    module(section).validate(doc, err, ctx)


def errors(section, doc, ctx=None):
    """Every violation of a document, as [(field, rule)], envelope included."""
    out = []
    try:
        from agent.twin import check_envelope
        check_envelope(doc)
    except Invalid as e:
        out.append((e.field, e.rule))
    if isinstance(doc, dict):
        check(section, doc, lambda f, r: out.append((f, r)), ctx)
    return out


# ---- helpers shared by the section modules ----------------------------------------

def digits(s):
    """Only ASCII digits, at least one (str.isdigit also takes other scripts' digits)."""
    for c in s:
        if not "0" <= c <= "9":
            return False
    return len(s) > 0


def ident(s, n):
    """A short identifier: 1..n characters of a-z 0-9 - _."""
    if not isinstance(s, str) or not 1 <= len(s) <= n:
        return False
    for c in s:
        if not ("0" <= c <= "9" or "a" <= c <= "z" or c in "-_"):
            return False
    return True


def listof(doc, key, path, limit, err, empty=True):
    v = doc.get(key)
    if not isinstance(v, list):
        err(path, "must be a list")
        return None
    if len(v) > limit:
        err(path, "has %d items, the limit is %d" % (len(v), limit))
        return None
    if not v and not empty:
        err(path, "must not be empty")
        return None
    return v


ENVELOPE = ("version", "box", "sig")


def only(obj, keys, prefix, err):
    """Refuse fields not in keys (a typo must not pass silently). The envelope
    fields are always allowed at the top level (prefix "")."""
    for k in obj:
        if k not in keys and (prefix or k not in ENVELOPE):
            err(prefix + str(k)[:32], "is not a known field")


def _validator(section):
    return lambda doc: check(section, doc)


VALIDATORS = {
    "channels": _validator("channels"),
    "options": _validator("options"),
    "parental": _validator("parental"),
}


def verifier(box_id, key_hex):
    """A twin verify hook that loads agent/sign.py only while a document is checked."""
    def verify(section, doc):
        from agent import sign
        from agent.compat import release
        try:
            sign.Verifier(box_id, key_hex)(section, doc)
        finally:
            release()
    return verify


class Bound:
    """A twin's validators, checking with the applied documents as context
    (options name bouquets of the lineup in force); rules released after use."""

    def __init__(self, names, applied):
        self.names = names
        self.applied = applied

    def __contains__(self, s):
        return s in self.names

    def __iter__(self):
        return iter(self.names)

    def __getitem__(self, s):
        if s not in self.names:
            raise KeyError(s)
        applied = self.applied

        def check(doc):
            from agent import sections
            from agent.compat import release
            try:
                sections.check(s, doc, ctx=applied)
            finally:
                release()
        return check


def attach(box):
    """Wire the section rules into an object with a twin, a HAL and an id (the
    runtime's Box does the same with lazy hooks of its own): signature check,
    cross-section rules and the effects. Returns the Effects after a first
    pass; its `ev` is set on each apply."""
    import asyncio

    from agent.sec_effects import Effects
    box.twin.verify = verifier(box.id, box.cfg.get("hmac_key"))
    box.twin.validators = Bound(box.twin.validators, box.twin.applied)
    fx = Effects(box)
    fx.ev = asyncio.Event()
    inner = box.twin.on_apply

    def on_apply(section, doc):
        if inner:
            inner(section, doc)
        fx.ev.set()
    box.twin.on_apply = on_apply
    fx.tick(True)
    return fx
