# The TV lineup: the default one (the free TNT channels), and the effective one
# (the channels of the free and the subscribed bouquets only). One module, used
# by the options validator and by the effects pass.
import json

FREE_BOUQUETS = ("tnt",)


def default_lineup():
    """The 27 free TNT channels (agent/rules/channels_tnt.json): the lineup until a
    channels document is applied. Parsed from the file as a stream."""
    d = __file__.rsplit("/", 1)[0] if "/" in __file__ else "agent/rules"
    try:
        with open(d + "/channels_tnt.json") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return []
    return doc["channels"] if isinstance(doc, dict) else []


def lineup(applied):
    doc = applied.get("channels")
    return doc["channels"] if doc else default_lineup()


def bouquets(applied):
    """The bouquets exposed: the free ones and the subscribed ones."""
    b = list(FREE_BOUQUETS)
    for x in (applied.get("options") or {}).get("bouquets") or ():
        if x not in b:
            b.append(x)
    return b


def effective(applied):
    """The effective lineup: channels whose bouquet is free or subscribed."""
    ok = bouquets(applied)
    return [c for c in lineup(applied) if c.get("bouquet") in ok]
