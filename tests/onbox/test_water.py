# Water pulse meter, under CPython and MicroPython (tests/test_onbox.py).
from agent import fsutil
from agent.hal.sim_water import SimWater
from agent.water import NightWatch, WaterMeter, tdiff


def test_debounce_rejects_bounces(tmp):
    w = WaterMeter(tmp + "/w.json", debounce_ms=80)
    edges = []
    t = 1000
    for i in range(20):
        edges += [t, t + 3, t + 11, t + 79]      # one pulse, three bounces within 80 ms
        t += 2000
    w.feed(edges)
    assert w.pulses == 20 and w.bounces == 60
    # an edge at exactly the debounce time is a new pulse; one just inside is not
    w.feed([t, t + 79, t + 80])
    assert w.pulses == 22


def test_tick_wrap(tmp):
    top = (1 << 30) - 40
    assert tdiff(5, top) == 45 and tdiff(top, 5) == -45
    w = WaterMeter(tmp + "/w.json")
    w.feed([top, (top + 30) & ((1 << 30) - 1), (top + 1000) & ((1 << 30) - 1)])
    assert w.pulses == 2 and w.bounces == 1


def test_index_persists_and_never_goes_back(tmp):
    p = tmp + "/w.json"
    w = WaterMeter(p, l_per_pulse=1, save_pulses=10)
    assert not w.restored and w.pulses == 0
    w.feed([i * 1000 for i in range(25)])
    assert w.pulses == 25 and w.saved == 20 and w.saves == 2
    assert fsutil.read_json(p)["p"] == 20
    # a power cut now loses 5 pulses (< save_pulses); the index is never lower
    w2 = WaterMeter(p)
    assert w2.restored and w2.pulses == 20
    # a pause in the flow saves what is unsaved
    w.tick(24 * 1000 + 59999)
    assert w.saved == 20
    w.tick(24 * 1000 + 60000)
    assert w.saved == 25 and fsutil.read_json(p)["p"] == 25
    # steady flow with no pause: saved at least every save_max_s
    w3 = WaterMeter(tmp + "/w3.json", save_pulses=1000, save_max_s=900)
    t = 0
    for i in range(20):
        w3.feed([t], t)
        t += 50000
    assert w3.saves >= 1 and w3.pulses - w3.saved < 19
    # the persisted index is atomic JSON, and a stray temp file changes nothing
    fsutil.atomic_write(p + ".tmp", "{broken")
    assert WaterMeter(p).pulses == 25


def test_litres_per_pulse(tmp):
    w = WaterMeter(tmp + "/w.json", l_per_pulse=10)
    w.feed([0, 1000, 2000])
    assert w.index_l() == 30


def test_leak_after_two_hours_of_flow(tmp):
    w = WaterMeter(tmp + "/w.json", leak_s=7200, gap_s=900)
    leaks = []
    t = 0
    for i in range(200):                # a pulse every 60 s for 200 min
        r = w.feed([t])
        if r:
            leaks.append((i, r))
        t += 60000
    assert len(leaks) == 1, leaks
    i, d = leaks[0]
    assert i == 120 and d["rule"] == "duration" and d["duration_s"] == 7200 and d["litres"] == 121
    # a pause longer than gap_s ends the run; a new leak needs another 2 h
    t += 901000
    leaks = [w.feed([t + k * 60000]) for k in range(100)]
    assert not [x for x in leaks if x]
    # ordinary use (20 min showers with long pauses) never raises it
    w2 = WaterMeter(tmp + "/w2.json")
    t = 0
    for day in range(3):
        for k in range(4):
            assert w2.feed([t + j * 5000 for j in range(240)]) is None
            t += 6 * 3600 * 1000


def test_night_watch(tmp):
    nw = NightWatch(1, 5)
    base = 1767225600           # midnight UTC
    alerts = []
    for m in range(0, 24 * 60, 10):
        now = base + m * 60
        hr = m // 60
        seen = (1 <= hr < 5) and m % 60 == 20     # one pulse each night hour
        a = nw.update(now, seen)
        if a:
            alerts.append((m, a))
    assert len(alerts) == 1 and alerts[0][0] == 300 and alerts[0][1]["rule"] == "night"
    # one night hour without flow: no alert
    nw = NightWatch(1, 5)
    got = []
    for m in range(0, 24 * 60, 10):
        hr = m // 60
        got.append(nw.update(base + m * 60, hr in (1, 2, 4) and m % 60 == 20))
    assert not [x for x in got if x]
    assert nw.update(None, True) is None


def test_sim_water_truth_and_leaking_tap(tmp):
    t = [1767225600.0]
    sw = SimWater(lambda: t[0], seed=5, leak_lph=6.0)
    w = WaterMeter(tmp + "/w.json", save_pulses=10)
    leak = None
    for step in range(3 * 360):         # 3 h in 10 s steps
        t[0] += 10
        r = w.feed(sw.water_edges())
        leak = leak or r
    assert sw.pulses > 18 and w.pulses == sw.pulses, (w.pulses, sw.pulses)
    assert sw.edges > sw.pulses and w.bounces == sw.edges - sw.pulses
    assert leak is not None and leak["rule"] == "duration"
    # no leak, no use: no pulse
    sw2 = SimWater(lambda: t[0], use=False)
    t[0] += 3600
    assert sw2.water_edges() == []


class _Twin:
    def __init__(self):
        self.applied = {}


class _Hal:
    name = "sim"

    def __init__(self, t):
        from agent.hal.sim_linky import SimLinky
        self.t = t
        self.linky = SimLinky(self.now, mode="historic", faults=0.02)
        self.water = SimWater(self.now, leak_lph=30.0)

    def now(self):
        return self.t[0]

    def tic_read(self, buf):
        return self.linky.tic_read(buf)

    def water_edges(self):
        return int(self.t[0] * 1000) & ((1 << 30) - 1), self.water.water_edges()


class _Box:
    def __init__(self, tmp, hal):
        self.id = "box-1"
        self.cfg = {"state_dir": tmp, "tic_mode": "auto", "water_enabled": True}
        self.hal = hal
        self.twin = _Twin()
        self.producers = []
        self.sent = []

    def emit(self, kind, data, prio=0, suffix=None):
        self.sent.append((kind, data))

    def event(self, etype, detail):
        detail["type"] = etype
        self.emit("event", detail)


def test_consumption_producer_on_both_interpreters(tmp):
    from agent import consumption
    t = [1767225600.0 + 3000]
    box = _Box(tmp, _Hal(t))
    c = consumption.Consumption(box)
    box.twin.applied["options"] = {"version": 1, "consent": {"detailed_consumption": True}}
    for i in range(2 * 360):             # 2 h in 10 s steps
        t[0] += 10
        c.poll()
        if i % 30 == 0:
            c.produce(box)
    c.produce(box)
    msgs = [d for k, d in box.sent if k == "consumption"]
    assert len(msgs) == 2, len(msgs)
    h = msgs[1]
    assert h["scope"] == "hour" and h["end"] - h["start"] == 3600 and h["detailed"]
    assert len(h["curve"]) == 6 and h["elec"]["mode"] == "historic"
    assert h["elec"]["wh_total"] > 0 and len(h["elec"]["meter"]) == 16
    assert h["water"]["l"] >= 30 and c.implausible == 0
    box.twin.applied["options"] = {"version": 2}
    for i in range(360):
        t[0] += 10
        c.poll()
    c.produce(box)
    # consent withdrawn: the next hour is not sent at all (daily totals only)
    assert len([d for k, d in box.sent if k == "consumption"]) == 2
    salt = c.salt
    assert len(salt) == 32 and salt != box.id       # the box's own random salt, kept
    assert consumption.Consumption(box).salt == salt


def _wrapped(ms):
    return ms & ((1 << 30) - 1)


def test_pulses_after_long_gaps_are_all_counted(tmp):
    # ticks_ms wraps every 2**30 ms (12.4 days); the box polls every second or so
    day = 86400 * 1000
    for gap_days in (5, 7, 10, 30):
        w = WaterMeter(tmp + "/g%d.json" % gap_days, debounce_ms=80)
        t = 1000
        w.feed([_wrapped(t)], _wrapped(t + 10))
        # quiet for gap_days: polls (every minute here) with no edges
        end = t + gap_days * day
        while t < end:
            t += 60000
            w.feed([], _wrapped(t))
        edges = []
        for i in range(20):
            edges.append(_wrapped(t + 1000 * i))
        w.feed(edges, _wrapped(t + 20000))
        assert w.pulses == 21, (gap_days, w.pulses, w.bounces)
        assert w.bounces == 0
        # the index was saved on the pause, and the flow is one new run
        assert w.run_pulses == 20


def test_night_window_across_midnight(tmp):
    nw = NightWatch(22, 6)
    base = 1767225600           # midnight UTC
    alerts = []
    for m in range(0, 3 * 24 * 60, 10):
        hr = (m // 60) % 24
        seen = (hr >= 22 or hr < 6) and m % 60 == 20    # flow every night hour
        a = nw.update(base + m * 60, seen)
        if a:
            alerts.append((m, a))
    # night 1 starts at 22:00 on day 0 (the first 0-6 is a partial night: no alert)
    assert [m for m, _ in alerts] == [30 * 60, 54 * 60]
    assert alerts[0][1]["duration_s"] == 8 * 3600
    # an empty window watches nothing and never fails
    assert NightWatch(3, 3).update(base, True) is None
