# agent/rules/schedule.py: who is blocked now, the DNS profile, schedules in local time
# (DST included), pause, and the unknown-clock rule. CPython and MicroPython.
from agent.rules import schedule, tz

PARIS = "CET-1CEST,M3.5.0,M10.5.0/3"
KID = "aa:bb:cc:00:00:01"
ALL = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _utc(y, m, d, hh=0, mm=0):
    return tz.days(y, m, d) * 86400 + hh * 3600 + mm * 60


def _doc(windows, pause=None, filt="strict"):
    p = {"id": "kids", "macs": [KID.upper()], "filter": filt, "schedule": windows}
    if pause is not None:
        p["pause_until"] = pause
    return {"version": 1, "tz": PARIS, "filter": "moderate",
            "profiles": [p, {"id": "parents", "macs": ["aa:bb:cc:00:00:02"]}]}


def _blocked(doc, t):
    return KID in schedule.enforcement(doc, t)["blocked"]


def _flips(doc, t0, t1):
    # every minute from t0 to t1: the instants where the blocked state changes
    out = []
    last = _blocked(doc, t0)
    t = t0 + 60
    while t < t1:
        b = _blocked(doc, t)
        if b != last:
            out.append((t, b))
            last = b
        t += 60
    return out


def test_state_shape_and_dns(tmp):
    doc = _doc([{"days": ALL, "from": "07:00", "to": "21:00"}])
    st = schedule.enforcement(doc, _utc(2025, 6, 2, 12))   # 14:00 in Paris
    assert st == {"clock": "ok", "local": "2025-06-02T14:00", "blocked": [], "dns": "family",
                  "devices_dns": {KID: "child"}}
    st = schedule.enforcement(doc, _utc(2025, 6, 2, 20))   # 22:00
    assert st["blocked"] == [KID]
    assert schedule.enforcement(None, 0) == {"clock": "ok", "local": None, "blocked": [],
                                             "dns": "standard", "devices_dns": {}}


def test_window_crossing_midnight(tmp):
    # Friday 20:00 to Saturday 01:30 only
    doc = _doc([{"days": ["fri"], "from": "20:00", "to": "01:30"}])
    fri = (2025, 6, 6)   # a Friday, CEST (UTC+2)
    assert _blocked(doc, _utc(*fri, 17, 59))
    assert not _blocked(doc, _utc(*fri, 18, 0))
    assert not _blocked(doc, _utc(*fri, 23, 29))      # Saturday 01:29 local
    assert _blocked(doc, _utc(*fri, 23, 30))          # Saturday 01:30 local
    # Sunday early morning is not covered by Friday's window
    assert _blocked(doc, _utc(2025, 6, 7, 22, 30))
    # Sunday 22:00 -> Monday 07:00 wraps the week
    doc = _doc([{"days": ["sun"], "from": "22:00", "to": "07:00"}])
    assert not _blocked(doc, _utc(2025, 6, 9, 4, 59))  # Monday 06:59
    assert _blocked(doc, _utc(2025, 6, 9, 5, 0))
    # to 24:00 is the end of the day; an empty schedule blocks always
    doc = _doc([{"days": ["mon"], "from": "00:00", "to": "24:00"}])
    assert not _blocked(doc, _utc(2025, 6, 9, 21, 59)) and _blocked(doc, _utc(2025, 6, 9, 22, 0))
    assert _blocked(_doc([]), _utc(2025, 6, 9, 12))


def test_no_schedule_means_no_time_limit(tmp):
    doc = _doc(None)
    assert not _blocked(doc, _utc(2025, 6, 9, 3))


def test_pause_until(tmp):
    t = _utc(2025, 6, 2, 12)
    doc = _doc(None, pause=t + 1800)
    assert _blocked(doc, t) and _blocked(doc, t + 1799)
    assert not _blocked(doc, t + 1800)
    # a pause also blocks inside allowed hours
    doc = _doc([{"days": ALL, "from": "00:00", "to": "24:00"}], pause=t + 60)
    assert _blocked(doc, t) and not _blocked(doc, t + 60)


def test_clock_unknown_fails_closed(tmp):
    doc = _doc([{"days": ALL, "from": "00:00", "to": "24:00"}])
    st = schedule.enforcement(doc, None)
    assert st["clock"] == "unknown" and st["local"] is None
    assert st["blocked"] == [KID]                       # time rules: blocked
    assert st["devices_dns"] == {KID: "child"} and st["dns"] == "family"   # filtering applies
    assert schedule.enforcement(_doc(None), None)["blocked"] == []         # no time rule: untouched
    assert schedule.enforcement(_doc(None, pause=5), None)["blocked"] == [KID]


def test_flips_at_the_local_minute_around_dst_paris(tmp):
    doc = _doc([{"days": ALL, "from": "07:00", "to": "21:00"}])
    # 2025: 30 March (CET->CEST) and 26 October (CEST->CET); 2026: 29 March and 25 October
    for (y, m, d, before, after) in ((2025, 3, 30, 1, 2), (2025, 10, 26, 2, 1),
                                     (2026, 3, 29, 1, 2), (2026, 10, 25, 2, 1)):
        # the day before the change is on `before` hours, the day itself on `after`
        got = _flips(doc, _utc(y, m, d - 1, 0), _utc(y, m, d + 1, 0))
        assert got == [(_utc(y, m, d - 1, 7 - before), False), (_utc(y, m, d - 1, 21 - before), True),
                       (_utc(y, m, d, 7 - after), False), (_utc(y, m, d, 21 - after), True)], (y, m, d, got)


def test_windows_inside_the_gap_and_the_overlap(tmp):
    # spring 2026: 02:30 local does not exist; the window opens at 03:00 CEST (01:00 UTC)
    doc = _doc([{"days": ["sun"], "from": "02:30", "to": "06:00"}])
    assert _flips(doc, _utc(2026, 3, 28, 23), _utc(2026, 3, 29, 6)) == \
        [(_utc(2026, 3, 29, 1), False), (_utc(2026, 3, 29, 4), True)]
    # autumn 2025: a window until 02:30 (wall clock) covers both 02:00-02:30 periods
    doc = _doc([{"days": ["sat"], "from": "22:00", "to": "02:30"}])
    assert _flips(doc, _utc(2025, 10, 25, 19), _utc(2025, 10, 26, 3)) == \
        [(_utc(2025, 10, 25, 20), False), (_utc(2025, 10, 26, 0, 30), True),
         (_utc(2025, 10, 26, 1), False), (_utc(2025, 10, 26, 1, 30), True)]


def test_southern_and_no_dst_zones(tmp):
    doc = _doc([{"days": ALL, "from": "07:00", "to": "21:00"}])
    doc["tz"] = "IST-5:30"
    assert _blocked(doc, _utc(2025, 6, 2, 1, 29)) and not _blocked(doc, _utc(2025, 6, 2, 1, 30))
    doc["tz"] = "AEST-10AEDT,M10.1.0,M4.1.0/3"
    assert not _blocked(doc, _utc(2025, 1, 14, 20))     # 07:00 AEDT
    assert _blocked(doc, _utc(2025, 1, 14, 19, 59))
    assert not _blocked(doc, _utc(2025, 7, 14, 21)) and _blocked(doc, _utc(2025, 7, 14, 20, 59))
