# The speed-test schedule (docs/decisions/0006-speedtest.md): one test per night
# window, at a box-specific time, within a daily budget. Cold code: the resident
# loop (agent/speedsched.py) loads it for each decision and for each result, and
# releases it before the measurement runs.
from agent import fsutil
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




def _schedule(box):
    c = box.cfg
    w = c.get("speed_window") or (1, 5)
    return Schedule(box.id, w[0], w[1], c.get("speed_daily_budget", 50000000),
                    c.get("speed_budget", 20000000))


def _path(box):
    return box.cfg["state_dir"] + "/speed.json"


async def decide(box):
    """The next step of the schedule: ("run", budget, idle_by) | ("skip", reason, None)
    | ("wait", seconds, None). The state is persisted before the step is taken."""
    sch = _schedule(box)
    path = _path(box)
    st = fsutil.read_json(path, {}) or {}
    now = box.hal.now()
    act, arg = sch.decide(now, st)
    how = None
    if act == "run" and getattr(box, "ota_task", None) is not None:
        act, arg = sch.decide(now, st, False)   # the line carries a release (agent/ota_install.py)
    if act == "run":
        i, how = await cold("agent.speedtest_cold", "line_idle", box, box.cfg["speed_url"], st)
        if i is False:
            act, arg = sch.decide(now, st, False)
    fsutil.write_json(path, st)
    if act == "wait":
        now = box.hal.now()
        arg = 600 if arg is None or now is None else min(3600, max(1, arg - now))
    return act, arg, how


def record(box, r, how):
    """A test's result r (or its error): into the state, then telemetry/speed."""
    path = _path(box)
    st = fsutil.read_json(path, {}) or {}
    lat = r.get("latency_ms")
    if lat is not None and (st.get("base_ms") is None or lat < st["base_ms"]):
        st["base_ms"] = lat
    r["idle_by"] = how
    _schedule(box).record(st, r["bytes"])
    fsutil.write_json(path, st)
    box.emit("speed", r)
