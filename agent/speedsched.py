# When the box tests its line (docs/decisions/0006-speedtest.md). Resident while the
# speed-test schedule is on, and only this loop: the schedule and the bookkeeping
# (agent/speedsched_cold.py), the idle test and the plan (agent/speedtest_cold.py)
# and the measurement (agent/speedtest.py, ~9 KB on the unix port) are cold code,
# each loaded for its step and released after it, so that a test runs with nothing
# else of the speed test in RAM (it is the box's heap peak: docs/performance.md).
from agent.compat import cold


async def task(box):
    """Scheduled tests for the runtime: cfg speed_url (required), speed_window [start, end]
    UTC hours, speed_daily_budget, speed_budget, speed_streams, speed_seconds,
    speed_window_bytes, speed_buf. The plan is the options document's speed_tier."""
    while not box.stop.is_set():
        act, arg, how = await cold("agent.speedsched_cold", "decide", box)
        if act == "run":
            try:
                r = await cold("agent.speedtest", "scheduled", box.cfg, arg,
                               cold("agent.speedtest_cold", "plan_of", box))
            except Exception as e:
                r = {"error": str(e)[:80], "bytes": 0, "budget": arg}
            cold("agent.speedsched_cold", "record", box, r, how)
        elif act == "skip":
            box.emit("speed", {"skipped": arg, "bytes": 0, "budget": 0})
        else:
            await box.hal.sleep(arg)
