# Rules of the channels document (docs/contract/schemas/desired-channels.json):
# the TV lineup, one entry per channel, LCNs unique.
from agent.rules.sections import ident, listof, only

MAX_CHANNELS = 200


def url_ok(u):
    if not isinstance(u, str) or not 8 <= len(u) <= 128:
        return False
    i = u.find("://")
    if i < 2 or i == len(u) - 3:
        return False
    for c in u[:i]:
        if not ("a" <= c <= "z" or "0" <= c <= "9" or c in "+.-"):
            return False
    for c in u:
        if c <= " " or c == "\x7f":
            return False
    return True


def validate(doc, err, ctx=None):
    only(doc, ("channels",), "", err)
    if "channels" not in doc:
        err("channels", "is required")
        return
    seen = {}
    for i, c in enumerate(listof(doc, "channels", "channels", MAX_CHANNELS, err, False) or ()):
        at = "channels[%d]" % i
        if not isinstance(c, dict):
            err(at, "must be an object")
            continue
        lcn = c.get("lcn")
        if not isinstance(lcn, int) or isinstance(lcn, bool) or not 1 <= lcn <= 999:
            err(at + ".lcn", "must be an integer 1..999")
        elif lcn in seen:
            err(at + ".lcn", "duplicates channels[%d].lcn (%d)" % (seen[lcn], lcn))
        else:
            seen[lcn] = i
        n = c.get("name")
        if not isinstance(n, str) or not 1 <= len(n) <= 40:
            err(at + ".name", "must be a string of 1 to 40 characters")
        if not url_ok(c.get("url")):
            err(at + ".url", "must be a stream address scheme://... of at most 128 characters, no spaces")
        if not ident(c.get("bouquet"), 24):
            err(at + ".bouquet", "must be 1-24 characters a-z 0-9 - _")
        only(c, ("lcn", "name", "url", "bouquet"), at + ".", err)
