# Rules of the options document (docs/contract/schemas/desired-options.json):
# the speed tier, the subscribed bouquets, the phone line and the tenant's
# consents. A bouquet must exist in the lineup in force (the applied channels,
# else the TNT default).
from agent.rules.sections import digits, ident, listof, only

MAX_BOUQUETS = 16


def validate(doc, err, ctx=None):
    only(doc, ("speed_tier", "bouquets", "phone", "consent"), "", err)
    t = doc.get("speed_tier")
    if not isinstance(t, str) or not 2 <= len(t) <= 5 or t[-1] != "M" or not digits(t[:-1]) \
            or t[0] == "0":
        err("speed_tier", "must be the downstream rate in Mbps, like 2M, 10M or 100M")
    bs = listof(doc, "bouquets", "bouquets", MAX_BOUQUETS, err) if "bouquets" in doc else []
    known = None
    if ctx is not None and bs:
        from agent.rules.lineup import lineup
        known = []
        for c in lineup(ctx):
            if c.get("bouquet") not in known:
                known.append(c.get("bouquet"))
    seen = []
    for i, b in enumerate(bs or ()):
        at = "bouquets[%d]" % i
        if not ident(b, 24):
            err(at, "must be 1-24 characters a-z 0-9 - _")
        elif b in seen:
            err(at, "is listed twice")
        elif known is not None and b not in known:
            err(at, "unknown bouquet %s (the lineup has: %s)" % (b, ", ".join(known)))
        else:
            seen.append(b)
    if "consent" in doc:
        c = doc["consent"]
        if not isinstance(c, dict):
            err("consent", "must be an object")
        else:
            if "detailed_consumption" in c and not isinstance(c["detailed_consumption"], bool):
                err("consent.detailed_consumption", "must be true or false")
            only(c, ("detailed_consumption",), "consent.", err)
    ph = doc.get("phone")
    if ph is not None:
        if not isinstance(ph, dict):
            err("phone", "must be an object")
            return
        if not isinstance(ph.get("enabled"), bool):
            err("phone.enabled", "must be true or false")
        n = ph.get("number")
        if n is not None and not (isinstance(n, str) and 8 <= len(n) <= 16 and n[0] == "+"
                                  and digits(n[1:]) and n[1] != "0"):
            err("phone.number", "must be an E.164 number such as +33299000000")
        only(ph, ("enabled", "number"), "phone.", err)
