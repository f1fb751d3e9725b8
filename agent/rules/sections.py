# The desired-document sections' validators (the names: agent/rules SECTIONS).
# Each section's rules live in agent/rules/<section>.py, imported only when a
# document must be checked (a desired document arrives, or a stored one is
# re-checked at boot), so a quiet box does not hold them in its heap; the
# runtime releases the package after each check (agent/rules release).
#
# A validator is validate(doc, err, ctx): it calls err(field, rule) for each
# violation. On the box err raises Invalid (the first violation rejects); the
# operator tools collect every violation. ctx is the twin's applied documents,
# for rules across sections (options name bouquets of the lineup); None skips
# those rules (boot re-check, validation of a file with no context). The box
# (agent/runtime_cold.py check) validates with its applied documents as ctx.
import sys

from agent.rules import SECTIONS
from agent.twin import Invalid


def _raise(field, rule):
    raise Invalid(field, rule)


def module(section):
    if section not in SECTIONS:
        raise KeyError(section)
    name = "agent.rules." + section
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
