# Parental enforcement on the sim clock, around both DST changes of 2025 and 2026
# in Europe/Paris. A real Box (agent/runtime.py) with the sim HAL applies a
# parental document through its twin and runs (no broker: it keeps enforcing
# offline) on a fast SimClock started just before the change. The HAL's enforcer
# must get each change at the right local minute: never before it, and at the
# box's first look at the clock after it. CPython and MicroPython.
#
# Spring: a window 01:50-03:10 local on the change day opens at 01:50 CET and
# closes at 03:10 CEST, 20 minutes apart. Autumn: a window 02:20-02:40 falls in
# the repeated hour, so it opens twice (CEST, then CET), as docs/operator.md says.
# A fixed UTC offset, or the wrong one, misses flips by an hour.
import asyncio
import json

from agent import config
from agent.hal.sim import SimHal
from agent.rules import tz
from agent.runtime import Box

PARIS = "CET-1CEST,M3.5.0,M10.5.0/3"
KID = "aa:bb:cc:00:00:01"
SPEEDUP = 1200           # 20 minutes of box time per real second
LATE = 180               # box seconds a minute tick may lag on a loaded host


def _utc(y, m, d, hh=0, mm=0):
    return tz.days(y, m, d) * 86400 + hh * 3600 + mm * 60


def _doc(frm, to):
    return {"version": 1, "tz": PARIS, "filter": "moderate",
            "profiles": [{"id": "kids", "macs": [KID], "schedule": [{"days": ["sun"], "from": frm, "to": to}]}]}


async def _drive(hal, box, end):
    run = asyncio.create_task(box.run())
    while hal.now() < end and not box.stop.is_set():
        await asyncio.sleep(0.02)
    box.stop.set()
    await run


def _run(tmp, name, doc, start, end):
    """The states the runtime handed to the HAL's enforcer: [(box time, kid blocked)]."""
    # port 1 refuses connections: the box runs offline, as with a broker outage
    cfg = config.load(overrides={"box_id": "dst-" + name, "state_dir": tmp + "/" + name,
                                 "broker_port": 1, "backoff_base": 5, "backoff_cap": 5,
                                 "shutdown_drain": 0, "speedup": SPEEDUP, "scenario": {"start": start}})
    hal = SimHal(cfg)
    handed = []

    def enforce_parental(state):
        handed.append((hal.now(), KID in state["blocked"]))

    hal.enforce_parental = enforce_parental
    box = Box(cfg, hal)
    assert box.twin.handle("parental", json.dumps(doc)) == "applied"
    asyncio.run(_drive(hal, box, end))
    assert box.failed is None, box.failed
    return handed


def _check(handed, start, first, flips):
    # at boot: the state of the applied document (perhaps after an empty one);
    # then exactly one hand-over per change, at the first tick of its minute
    boot = [h for h in handed if h[0] < start + 300]   # the first change is 10 minutes in
    later = handed[len(boot):]
    assert boot and boot[-1][1] == first, handed
    assert len(later) == len(flips), (handed, flips)
    for (t, state), (at, want) in zip(later, flips):
        assert state == want and at <= t < at + LATE, (t, state, at, want)


def _spring(tmp, y, m, d):
    # the change is at 01:00 UTC: 01:50 CET is 00:50 UTC, 03:10 CEST is 01:10 UTC
    start = _utc(y, m, d, 0, 40)
    handed = _run(tmp, "spring%d" % y, _doc("01:50", "03:10"), start, _utc(y, m, d, 1, 20))
    _check(handed, start, True, [(_utc(y, m, d, 0, 50), False), (_utc(y, m, d, 1, 10), True)])


def _autumn(tmp, y, m, d):
    # the change is at 01:00 UTC: 02:20-02:40 happens at 00:20-00:40 UTC (CEST)
    # and again at 01:20-01:40 UTC (CET)
    start = _utc(y, m, d, 0, 10)
    handed = _run(tmp, "autumn%d" % y, _doc("02:20", "02:40"), start, _utc(y, m, d, 1, 50))
    _check(handed, start, True, [(_utc(y, m, d, 0, 20), False), (_utc(y, m, d, 0, 40), True),
                                 (_utc(y, m, d, 1, 20), False), (_utc(y, m, d, 1, 40), True)])


def test_sim_clock_spring_2025(tmp):
    _spring(tmp, 2025, 3, 30)


def test_sim_clock_autumn_2025(tmp):
    _autumn(tmp, 2025, 10, 26)


def test_sim_clock_spring_2026(tmp):
    _spring(tmp, 2026, 3, 29)


def test_sim_clock_autumn_2026(tmp):
    _autumn(tmp, 2026, 10, 25)
