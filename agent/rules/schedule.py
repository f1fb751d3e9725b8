# The parental schedule: what is enforced at a given instant (the document's
# rules are agent/rules/parental.py).
#     enforcement(doc, utc_now) -> {"clock", "local", "blocked", "dns", "devices_dns"}
# Schedules are allowed hours in the home's local time (the document's POSIX TZ
# string, agent/rules/tz.py). A device in a profile with a schedule is blocked outside
# its windows; a window whose end is before its start runs past midnight into
# the next day. "pause_until" (Unix time) blocks a profile until that instant.
# The filtering level maps to a DNS profile, per device and for the home.
#
# Clock unknown (utc_now None, no NTP yet): fail closed for restrictions that
# need time. Every device whose profile has a schedule or a pause_until is
# blocked; filtering levels apply as usual; devices without time rules are not
# touched. The state says "clock": "unknown". It lifts on the first call with a time.
from agent.rules import tz

DNS = {"off": "standard", "moderate": "family", "strict": "child"}
LEVELS = ("off", "moderate", "strict")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def digits(s):
    for c in s:
        if not "0" <= c <= "9":
            return False
    return len(s) > 0


def hm(s):
    """'HH:MM' (00:00..24:00) -> minutes, or None."""
    if not isinstance(s, str) or len(s) != 5 or s[2] != ":" or not digits(s[:2] + s[3:]):
        return None
    h, m = int(s[:2]), int(s[3:])
    if m > 59 or h > 24 or (h == 24 and m):
        return None
    return h * 60 + m


def allowed(schedule, wday, minute):
    """Is local (weekday Monday=0, minute of day) inside one of the windows?"""
    for w in schedule:
        f, t = hm(w["from"]), hm(w["to"])
        for d in w["days"]:
            d = DAYS.index(d)
            if f < t:
                if d == wday and f <= minute < t:
                    return True
            elif (d == wday and minute >= f) or ((d + 1) % 7 == wday and minute < t):
                return True
    return False


def enforcement(doc, utc_now):
    home = DNS[(doc or {}).get("filter") or "off"]
    st = {"clock": "unknown" if utc_now is None else "ok", "local": None,
          "blocked": [], "dns": home, "devices_dns": {}}
    if not doc:
        return st
    if utc_now is not None:
        lt = tz.local(tz.parse(doc["tz"]), utc_now)
        st["local"] = "%04d-%02d-%02dT%02d:%02d" % lt[:5]
    blocked = []
    for p in doc.get("profiles") or ():
        sch = p.get("schedule")
        pause = p.get("pause_until")
        if utc_now is None:
            block = sch is not None or pause is not None
        else:
            block = (pause is not None and utc_now < pause) or \
                (sch is not None and not allowed(sch, lt[6], lt[3] * 60 + lt[4]))
        dns = DNS[p.get("filter") or (doc.get("filter") or "off")]
        for mac in p["macs"]:
            mac = mac.lower()
            if block:
                blocked.append(mac)
            if dns != home:
                st["devices_dns"][mac] = dns
    blocked.sort()
    st["blocked"] = blocked
    return st
