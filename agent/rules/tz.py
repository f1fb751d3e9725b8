# POSIX TZ strings (IEEE 1003.1 section 8.3, with the RFC 8536 extension of
# rule times from -167 to 167 hours), evaluated without a tz database:
#     CET-1CEST,M3.5.0,M10.5.0/3     IST-5:30     <-02>2<-01>,M3.5.0/-1,M10.5.0/0
# parse(s) -> (std_off, dst_off, start, end) in seconds east of UTC; start and
# end are rules (kind, a, b, c, time) or None when there is no DST.
# Offsets follow the POSIX sign: "CET-1" is one hour EAST of UTC.


def _num(s, i, hi):
    j = i
    while j < len(s) and "0" <= s[j] <= "9":
        j += 1
    if j == i or j - i > 3:
        raise ValueError("number expected at %d" % i)
    n = int(s[i:j])
    if n > hi:
        raise ValueError("number out of range at %d" % i)
    return n, j


def _hms(s, i, hmax):
    # [+-]hh[:mm[:ss]] -> seconds (POSIX sign kept), next index
    sign = 1
    if i < len(s) and s[i] in "+-":
        sign = -1 if s[i] == "-" else 1
        i += 1
    h, i = _num(s, i, hmax)
    t = h * 3600
    for mul in (60, 1):
        if i < len(s) and s[i] == ":":
            n, i = _num(s, i + 1, 59)
            t += n * mul
        else:
            break
    return sign * t, i


def _name(s, i):
    if i < len(s) and s[i] == "<":
        j = s.find(">", i)
        if j < i + 4:
            raise ValueError("bad quoted name at %d" % i)
        return j + 1
    j = i
    while j < len(s) and ("a" <= s[j] <= "z" or "A" <= s[j] <= "Z"):
        j += 1
    if j - i < 3:
        raise ValueError("name of 3+ letters expected at %d" % i)
    return j


def _rule(s, i):
    # Mm.w.d | Jn | n, then optional /time (default 02:00)
    if s[i] == "M":
        m, i = _num(s, i + 1, 12)
        if s[i:i + 1] != ".":
            raise ValueError("'.' expected at %d" % i)
        w, i = _num(s, i + 1, 5)
        if s[i:i + 1] != ".":
            raise ValueError("'.' expected at %d" % i)
        d, i = _num(s, i + 1, 6)
        if m < 1 or w < 1:
            raise ValueError("month 1-12 and week 1-5 expected")
        r = ["M", m, w, d]
    elif s[i] == "J":
        n, i = _num(s, i + 1, 365)
        if n < 1:
            raise ValueError("Julian day 1-365 expected")
        r = ["J", n, 0, 0]
    else:
        n, i = _num(s, i, 365)
        r = ["N", n, 0, 0]
    t = 7200
    if i < len(s) and s[i] == "/":
        t, i = _hms(s, i + 1, 167)
    r.append(t)
    return tuple(r), i


def parse(s):
    if not isinstance(s, str) or not 4 <= len(s) <= 64:
        raise ValueError("a string of 4 to 64 characters expected")
    try:
        return _parse(s)
    except IndexError:
        raise ValueError("truncated")


def _parse(s):
    i = _name(s, 0)
    off, i = _hms(s, i, 24)
    std = -off
    if i == len(s):
        return (std, std, None, None)
    i = _name(s, i)
    dst = std + 3600
    if i < len(s) and s[i] != ",":
        off, i = _hms(s, i, 24)
        dst = -off
    if s[i:i + 1] != ",":
        raise ValueError("DST needs ',start,end' rules")
    start, i = _rule(s, i + 1)
    if s[i:i + 1] != ",":
        raise ValueError("',end' rule expected at %d" % i)
    end, i = _rule(s, i + 1)
    if i != len(s):
        raise ValueError("unexpected text at %d" % i)
    return (std, dst, start, end)


# ---- calendar (proleptic Gregorian, days since 1970-01-01) -----------------------

def days(y, m, d):
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def civil(z):
    # days since epoch -> (y, m, d)
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (yoe + era * 400 + (m <= 2), m, d)


def _leap(y):
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


def _rule_day(r, y):
    # the local date of a rule in year y, as days since epoch
    k = r[0]
    if k == "J":
        n = r[1]
        return days(y, 1, 1) + n - 1 + (1 if _leap(y) and n >= 60 else 0)
    if k == "N":
        return days(y, 1, 1) + r[1]
    m, w, d = r[1], r[2], r[3]
    first = days(y, m, 1)
    day = first + (d - (first + 4) % 7) % 7 + 7 * (w - 1)
    nxt = days(y + (m == 12), m % 12 + 1, 1)
    while day >= nxt:
        day -= 7
    return day


def transitions(tz, y):
    """(dst_start_utc, dst_end_utc) of year y, or None without DST."""
    std, dst, a, b = tz
    if a is None:
        return None
    return (_rule_day(a, y) * 86400 + a[4] - std, _rule_day(b, y) * 86400 + b[4] - dst)


def offset(tz, t):
    """Seconds east of UTC in force at Unix time t."""
    std, dst, a, b = tz
    if a is None:
        return std
    y = civil((int(t) + std) // 86400)[0]
    s, e = transitions(tz, y)
    if s < e:
        on = s <= t < e
    else:
        on = not (e <= t < s)
    return dst if on else std


def local(tz, t):
    """(y, m, d, hh, mm, ss, wday Monday=0, offset) of the wall clock at Unix time t."""
    off = offset(tz, t)
    lt = int(t) + off
    z = lt // 86400
    s = lt - z * 86400
    y, m, d = civil(z)
    return (y, m, d, s // 3600, s // 60 % 60, s % 60, (z + 3) % 7, off)
