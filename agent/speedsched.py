# When the box tests its line: one test per night window, at a box-specific time,
# within a daily budget (docs/decisions/0006-speedtest.md). Resident while the
# speed-test schedule is on; the measurement itself (agent/speedtest.py, ~11 KB on
# the unix port) is loaded for a test and released after it.
from agent.compat import cold


def fnv(s):
    h = 2166136261
    for c in s.encode():
        h = ((h ^ c) * 16777619) & 0xFFFFFFFF
    return h


class Schedule:
    """One scheduled test per night window (UTC hours [start, end), may wrap midnight),
    at a box-specific pseudo-random time, only on an idle line, within a daily budget.
    state is a dict the caller persists: {"day", "done", "used"}."""

    def __init__(self, box_id, start_h=1, end_h=5, daily=50000000, per_run=20000000,
                 retry_s=900, min_budget=1000000):
        self.box = box_id
        self.start = start_h * 3600
        self.width = ((end_h - start_h) % 24 or 24) * 3600
        self.daily = daily
        self.per_run = per_run
        self.retry = retry_s
        self.min = min_budget

    def window(self, now):
        # (start, end) of the window containing now, or else of the next one.
        d = int(now) // 86400 * 86400
        for w in (d - 86400, d, d + 86400):
            if now < w + self.start + self.width:
                return w + self.start, w + self.start + self.width

    def slot(self, w0):
        # Within the first 3/4 of the window, so busy-line retries still fit.
        return w0 + fnv("%s/%d" % (self.box, w0 // 86400)) % (self.width * 3 // 4)

    def decide(self, now, state, idle=None):
        """-> ("run", budget) | ("wait", ts) | ("skip", reason). idle: True/False/None
        (None: the HAL cannot tell, so the test runs)."""
        if now is None:
            return ("wait", None)         # clock unknown: never test
        w0, w1 = self.window(now)
        if state.get("day") != w0:
            state["day"], state["done"], state["used"] = w0, False, 0
            state.pop("why", None)
        s = self.slot(w0)
        if state["done"] or now < w0:
            nw = self.window(w1) if state["done"] else (w0, w1)
            return ("wait", self.slot(nw[0]) if state["done"] else s)
        if now < s:
            return ("wait", s)
        left = self.daily - state["used"]
        if left < self.min:
            state["done"], state["why"] = True, "budget"
            return ("skip", "budget")
        if idle is False:
            nxt = now + self.retry + fnv(self.box) % 60
            if nxt >= w1:
                state["done"], state["why"] = True, "busy"
                return ("skip", "busy")
            return ("wait", nxt)
        return ("run", min(self.per_run, left))

    def record(self, state, used):
        state["used"] = state.get("used", 0) + used
        state["done"] = True


async def task(box):
    """Scheduled tests for the runtime: cfg speed_url (required), speed_window [start, end]
    UTC hours, speed_daily_budget, speed_budget, speed_streams, speed_seconds,
    speed_window_bytes. The plan is the options document's speed_tier; the idle test and
    the plan are cold code (agent/speedtest_cold.py), as is the measurement."""
    from agent import fsutil
    c = box.cfg
    w = c.get("speed_window") or (1, 5)
    sch = Schedule(box.id, w[0], w[1], c.get("speed_daily_budget", 50000000),
                   c.get("speed_budget", 20000000))
    path = c["state_dir"] + "/speed.json"
    url = c["speed_url"]
    while not box.stop.is_set():
        st = fsutil.read_json(path, {}) or {}
        now = box.hal.now()
        act, arg = sch.decide(now, st)
        how = None
        if act == "run":
            i, how = await cold("agent.speedtest_cold", "line_idle", box, url, st)
            if i is False:
                act, arg = sch.decide(now, st, False)
        fsutil.write_json(path, st)
        if act == "run":
            try:
                # The measurement (agent/speedtest.py) is loaded for the test and
                # out of RAM once the coroutine is done.
                r = await cold("agent.speedtest", "scheduled", c, arg,
                               cold("agent.speedtest_cold", "plan_of", box))
                lat = r["latency_ms"]
                if lat is not None and (st.get("base_ms") is None or lat < st["base_ms"]):
                    st["base_ms"] = lat
            except Exception as e:
                r = {"error": str(e)[:80], "bytes": 0, "budget": arg}
            r["idle_by"] = how
            sch.record(st, r["bytes"])
            fsutil.write_json(path, st)
            box.emit("speed", r)
            continue
        if act == "skip":
            box.emit("speed", {"skipped": arg, "bytes": 0, "budget": 0})
            continue
        now = box.hal.now()
        await box.hal.sleep(600 if arg is None or now is None else min(3600, max(1, arg - now)))
