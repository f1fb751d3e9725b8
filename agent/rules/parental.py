# Rules of the parental document (docs/contract/schemas/desired-parental.json);
# what the schedule means at a given instant is agent/rules/schedule.py.
from agent.rules.schedule import DAYS, LEVELS, hm
from agent.rules.sections import ident as _ident
from agent.rules.sections import listof as _list
from agent.rules.sections import only

MAX_PROFILES = 16
MAX_MACS = 16
MAX_WINDOWS = 32


def _mac(s):
    if not isinstance(s, str) or len(s) != 17:
        return False
    for i, c in enumerate(s.lower()):
        if (c != ":") if i % 3 == 2 else (c not in "0123456789abcdef"):
            return False
    return True


def validate(doc, err, ctx=None):
    only(doc, ("tz", "filter", "profiles"), "", err)
    s = doc.get("tz")
    try:
        from agent.rules.tz import parse
        parse(s)
    except ValueError as e:
        err("tz", "must be a POSIX TZ string such as CET-1CEST,M3.5.0,M10.5.0/3 (%s)" % e)
    f = doc.get("filter")
    if f is not None and f not in LEVELS:
        err("filter", "must be one of off, moderate, strict")
    if "profiles" not in doc:
        err("profiles", "is required")
        return
    ps = _list(doc, "profiles", "profiles", MAX_PROFILES, err)
    if ps is None:
        return
    ids = {}
    macs = {}
    for i, p in enumerate(ps):
        at = "profiles[%d]" % i
        if not isinstance(p, dict):
            err(at, "must be an object")
            continue
        pid = p.get("id")
        if not _ident(pid, 24):
            err(at + ".id", "must be 1-24 characters a-z 0-9 - _")
        elif pid in ids:
            err(at + ".id", "duplicates profiles[%d].id" % ids[pid])
        else:
            ids[pid] = i
        f = p.get("filter")
        if f is not None and f not in LEVELS:
            err(at + ".filter", "must be one of off, moderate, strict")
        pu = p.get("pause_until")
        if pu is not None and (not isinstance(pu, int) or isinstance(pu, bool) or pu < 0):
            err(at + ".pause_until", "must be a Unix time (integer seconds) or null")
        ms = _list(p, "macs", at + ".macs", MAX_MACS, err, False)
        for j, m in enumerate(ms or ()):
            mp = "%s.macs[%d]" % (at, j)
            if not _mac(m):
                err(mp, "must be a MAC address aa:bb:cc:dd:ee:ff")
            elif m.lower() in macs:
                err(mp, "is already in %s" % macs[m.lower()])
            else:
                macs[m.lower()] = mp
        if p.get("schedule") is not None:
            _schedule(p, at + ".schedule", err)
        only(p, ("id", "macs", "filter", "schedule", "pause_until", "name"), at + ".", err)
        n = p.get("name")
        if n is not None and (not isinstance(n, str) or len(n) > 40):
            err(at + ".name", "must be a string of at most 40 characters")


def _schedule(p, at, err):
    ws = _list(p, "schedule", at, MAX_WINDOWS, err)
    for i, w in enumerate(ws or ()):
        wp = "%s[%d]" % (at, i)
        if not isinstance(w, dict):
            err(wp, "must be an object")
            continue
        ds = _list(w, "days", wp + ".days", 7, err, False)
        seen = []
        for j, d in enumerate(ds or ()):
            if d not in DAYS:
                err("%s.days[%d]" % (wp, j), "must be one of mon tue wed thu fri sat sun")
            elif d in seen:
                err("%s.days[%d]" % (wp, j), "is listed twice")
            else:
                seen.append(d)
        a, b = hm(w.get("from")), hm(w.get("to"))
        if a is None or a == 1440:
            err(wp + ".from", "must be a local time HH:MM from 00:00 to 23:59")
        if b is None:
            err(wp + ".to", "must be a local time HH:MM from 00:00 to 24:00")
        elif a == b:
            err(wp + ".to", "must differ from from (an empty window)")
        only(w, ("days", "from", "to"), wp + ".", err)
