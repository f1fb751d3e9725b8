# agent/rules/tz.py: POSIX TZ strings, DST gaps and overlaps, rule forms. Runs under
# CPython and MicroPython (the every-hour zoneinfo comparison is tests/test_tz_zoneinfo.py).
from agent.rules import tz

PARIS = "CET-1CEST,M3.5.0,M10.5.0/3"


def _utc(y, m, d, hh=0, mm=0):
    return tz.days(y, m, d) * 86400 + hh * 3600 + mm * 60


def test_parse_forms(tmp):
    assert tz.parse(PARIS) == (3600, 7200, ("M", 3, 5, 0, 7200), ("M", 10, 5, 0, 10800))
    assert tz.parse("IST-5:30") == (19800, 19800, None, None)
    assert tz.parse("<+0545>-5:45") == (20700, 20700, None, None)
    assert tz.parse("EST5EDT,M3.2.0,M11.1.0")[:2] == (-18000, -14400)
    assert tz.parse("<-02>2<-01>,M3.5.0/-1,M10.5.0/0")[2] == ("M", 3, 5, 0, -3600)
    assert tz.parse("IST-2IDT,M3.4.4/26,M10.5.0")[2] == ("M", 3, 4, 4, 26 * 3600)
    assert tz.parse("AAA3BBB2,J60/1:30:15,300")[2:] == (("J", 60, 0, 0, 5415), ("N", 300, 0, 0, 7200))
    assert tz.parse("<-0330>3:30<-0230>,M3.2.0,M11.1.0")[:2] == (-12600, -9000)


def test_parse_rejects(tmp):
    for s in ("", "CET", "CE-1", "CET-1CEST", "CET-1CEST,M3.5.0", "CET-1CEST,M13.5.0,M10.5.0",
              "CET-1CEST,M3.6.0,M10.5.0", "CET-1CEST,M3.5.7,M10.5.0", "CET-1CEST,M3.5.0,M10.5.0/168",
              "CET-25", "CET-1:60", "CET-1CEST,M3.5.0,M10.5.0x", "CET-1CEST,J0,J100", "<+05>", None, 5,
              "CET-\u0661", "X" * 65):
        try:
            tz.parse(s)
        except ValueError:
            continue
        assert False, "accepted %r" % (s,)


def test_calendar_roundtrip(tmp):
    for z in (-719468, -1, 0, 1, 59, 365, 11016, 20000, 24000, 47482, 2932896):
        assert tz.days(*tz.civil(z)) == z
    assert tz.civil(0) == (1970, 1, 1)
    assert tz.days(2000, 3, 1) == 11017
    assert tz.local(tz.parse("UTC0"), 0)[6] == 3   # 1970-01-01 was a Thursday


def test_paris_gap_and_overlap(tmp):
    p = tz.parse(PARIS)
    assert tz.transitions(p, 2025) == (_utc(2025, 3, 30, 1), _utc(2025, 10, 26, 1))
    assert tz.transitions(p, 2026) == (_utc(2026, 3, 29, 1), _utc(2026, 10, 25, 1))
    # spring: 01:59:59 CET is followed by 03:00:00 CEST (02:xx never happens)
    t = _utc(2025, 3, 30, 1)
    assert tz.local(p, t - 1)[:6] == (2025, 3, 30, 1, 59, 59)
    assert tz.local(p, t)[:6] == (2025, 3, 30, 3, 0, 0)
    # autumn: 02:00-02:59 happens twice, first CEST then CET
    t = _utc(2025, 10, 26, 0)
    assert tz.local(p, t)[3:5] + (tz.local(p, t)[7],) == (2, 0, 7200)
    assert tz.local(p, t + 3599)[3:5] == (2, 59)
    assert tz.local(p, t + 3600)[3:5] + (tz.local(p, t + 3600)[7],) == (2, 0, 3600)
    assert tz.local(p, t + 7200)[3:5] == (3, 0)


def test_southern_hemisphere(tmp):
    p = tz.parse("AEST-10AEDT,M10.1.0,M4.1.0/3")
    assert tz.offset(p, _utc(2025, 1, 15)) == 39600      # summer in January
    assert tz.offset(p, _utc(2025, 7, 15)) == 36000
    assert tz.offset(p, _utc(2025, 12, 31, 23)) == 39600   # across New Year
    s, e = tz.transitions(p, 2025)
    assert e == _utc(2025, 4, 5, 16) and s == _utc(2025, 10, 4, 16)
    assert tz.offset(p, e - 1) == 39600 and tz.offset(p, e) == 36000
    assert tz.offset(p, s - 1) == 36000 and tz.offset(p, s) == 39600


def test_negative_and_late_rule_times(tmp):
    nuuk = tz.parse("<-02>2<-01>,M3.5.0/-1,M10.5.0/0")
    s, e = tz.transitions(nuuk, 2026)
    # -1:00 on Sunday 29 March is Saturday 23:00 local standard time = 01:00 UTC
    assert s == _utc(2026, 3, 29, 1) and e == _utc(2026, 10, 25, 1)
    assert tz.local(nuuk, s - 1)[:5] == (2026, 3, 28, 22, 59)
    assert tz.local(nuuk, s)[:5] == (2026, 3, 29, 0, 0)
    jer = tz.parse("IST-2IDT,M3.4.4/26,M10.5.0")
    s, e = tz.transitions(jer, 2026)
    # 26:00 on the fourth Thursday (26 March) is Friday 02:00 = 00:00 UTC
    assert s == _utc(2026, 3, 27, 0)


def test_no_dst_and_half_hours(tmp):
    p = tz.parse("IST-5:30")
    for t in (0, _utc(2025, 3, 30, 1), _utc(2035, 12, 31, 23, 59)):
        assert tz.offset(p, t) == 19800
    assert tz.local(p, _utc(2025, 6, 1, 18, 30))[:5] == (2025, 6, 2, 0, 0)


def test_last_week_rule_in_short_months(tmp):
    # M2.5.0: the last Sunday of February, in leap and common years
    p = tz.parse("AAA0BBB,M2.5.0/0,M11.1.0/0")
    assert tz.transitions(p, 2024)[0] == _utc(2024, 2, 25)
    assert tz.transitions(p, 2026)[0] == _utc(2026, 2, 22)
    # J60 is 1 March even in leap years; 59 (zero-based) is 29 Feb in 2024
    q = tz.parse("AAA0BBB,J60/0,59/0")
    # (the end time is DST local time: 00:00 BBB is 23:00 UTC the day before)
    assert tz.transitions(q, 2024) == (_utc(2024, 3, 1), _utc(2024, 2, 29) - 3600)
