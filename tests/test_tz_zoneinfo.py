"""agent/rules/tz.py against CPython's zoneinfo: every hour from 2024 to 2035, under
CPython and under the real MicroPython interpreter (subprocess).

For each zone the two interpreters produce the same digest: the run-length list
of UTC offsets (one entry per change) and a SHA-256 of every hour's local wall
clock fields. The expectation comes from zoneinfo; the POSIX TZ string comes
from the zone's own tzdata file footer, so we evaluate what the tz database says.
"""
from __future__ import annotations

import calendar
import hashlib
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.helpers import ROOT, interpreter_cmd, interpreter_env

ZONES = ["Europe/Paris", "America/New_York", "Australia/Sydney", "Asia/Kolkata"]
# Extra zones for negative and beyond-24h rule times (RFC 8536) and a
# quarter-hour DST offset; same comparison, fewer years.
EXTRA = ["America/Nuuk", "Asia/Jerusalem", "Pacific/Chatham", "America/Santiago"]
T0 = calendar.timegm((2024, 1, 1, 0, 0, 0))
T1 = calendar.timegm((2036, 1, 1, 0, 0, 0))

DUMP = r"""
import sys
import hashlib
from agent.rules import tz

def dump(s, t0, t1):
    p = tz.parse(s)
    h = hashlib.sha256()
    runs = []
    last = None
    t = t0
    while t < t1:
        lt = tz.local(p, t)
        if lt[7] != last:
            runs.append("%d:%d" % ((t - t0) // 3600, lt[7]))
            last = lt[7]
        h.update(("%d %d %d %d %d %d\n" % (lt[0], lt[1], lt[2], lt[3], lt[4], lt[6])).encode())
        t += 3600
    return " ".join(runs) + " " + "".join("%02x" % b for b in h.digest())

for line in sys.stdin.read().splitlines():
    s, a, b = line.split("|")
    print(dump(s, int(a), int(b)))
"""


def posix_string(zone: str) -> str:
    """The footer of a TZif v2+ file: the POSIX TZ string for times after the table."""
    for base in ("/usr/share/zoneinfo",):
        p = Path(base) / zone
        if p.exists():
            return p.read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[1].decode()
    import importlib.resources as r
    pkg = "tzdata.zoneinfo." + ".".join(zone.split("/")[:-1])
    data = r.files(pkg).joinpath(zone.split("/")[-1]).read_bytes()
    return data.rstrip(b"\n").rsplit(b"\n", 1)[1].decode()


def expected(zone: str, t0: int, t1: int) -> str:
    z = ZoneInfo(zone)
    h = hashlib.sha256()
    runs, last = [], None
    for t in range(t0, t1, 3600):
        d = datetime.fromtimestamp(t, timezone.utc).astimezone(z)
        off = int(d.utcoffset().total_seconds())
        if off != last:
            runs.append(f"{(t - t0) // 3600}:{off}")
            last = off
        h.update(f"{d.year} {d.month} {d.day} {d.hour} {d.minute} {d.weekday()}\n".encode())
    return " ".join(runs) + " " + h.hexdigest()


def cases():
    out = [(z, T0, T1) for z in ZONES]
    out += [(z, calendar.timegm((2026, 1, 1, 0, 0, 0)), calendar.timegm((2029, 1, 1, 0, 0, 0))) for z in EXTRA]
    return out


def test_posix_strings_are_the_documented_ones():
    assert posix_string("Europe/Paris") == "CET-1CEST,M3.5.0,M10.5.0/3"
    assert posix_string("Asia/Kolkata") == "IST-5:30"
    assert posix_string("Australia/Sydney") == "AEST-10AEDT,M10.1.0,M4.1.0/3"


@pytest.mark.parametrize("interp", ["cpython", "micropython"])
def test_agrees_with_zoneinfo_every_hour(interp, tmp_path):
    cs = cases()
    script = tmp_path / "tzdump.py"
    script.write_text(DUMP)
    stdin = "".join(f"{posix_string(z)}|{a}|{b}\n" for z, a, b in cs)
    p = subprocess.run(interpreter_cmd(interp) + [str(script)], input=stdin, capture_output=True,
                       text=True, cwd=ROOT, env=interpreter_env(interp), timeout=120)
    assert p.returncode == 0, p.stderr
    got = p.stdout.splitlines()
    assert len(got) == len(cs), p.stdout + p.stderr
    for (zone, a, b), line in zip(cs, got):
        exp = expected(zone, a, b)
        assert line == exp, f"{zone} ({posix_string(zone)}) under {interp}:\n got {line[:300]}\n exp {exp[:300]}"
        # sanity: the zones with DST really change twice a year
        if zone in ("Europe/Paris", "America/New_York", "Australia/Sydney"):
            assert len(line.split()) - 1 == 1 + 2 * 12
        if zone == "Asia/Kolkata":
            assert line.split()[0] == "0:19800"
