# Pure logic of the speed test: URL, budget split, warm-up window, ceiling, schedule.
from agent import speedsched
from agent import speedtest as st


def test_parse_url(tmp):
    assert st.parse_url("http://10.0.0.1:8080") == ("10.0.0.1", 8080, "")
    assert st.parse_url("http://speed.example/st/") == ("speed.example", 80, "/st")
    try:
        st.parse_url("https://x")
        raise AssertionError("https accepted")
    except ValueError:
        pass


def test_budget_split_never_exceeds(tmp):
    for budget in (10000, 1000000, 20000001):
        for n in (1, 4, 6):
            per = st.per_stream(budget // 2, n)
            assert n * (per + st.HDR) <= budget // 2
    assert st.per_stream(100, 4) == 0


def test_window_excludes_warmup(tmp):
    w = st.Window(1000)
    # 1 MB/s during slow start (first second) then a steady 1.25 MB/s (10 Mbps).
    w.first(0)
    total = 0
    for t in range(250, 4001, 250):
        total += 250000 if t <= 1000 else 312500
        w.sample(t, total, True)
    assert w.rate() == 10000000
    assert w.ms() == 3000 and w.n == 13


def test_window_ends_when_a_stream_ends(tmp):
    w = st.Window(1000)
    w.first(0)
    w.sample(1000, 100, True)
    w.sample(1250, 100 + 31250, True)
    w.sample(1500, 100 + 62500, True)
    w.sample(1750, 100 + 70000, False)      # a stream finished: the load changed
    assert w.rate() == 1000000 and w.ms() == 500


def test_window_too_short(tmp):
    w = st.Window(1000)
    w.first(0)
    w.sample(500, 10, True)
    assert w.rate() is None
    w.sample(1000, 20, True)
    assert w.rate() is None


def test_regression_smooths_sender_buffer_wobble(tmp):
    w = st.Window(0)
    w.first(0)
    wob = (0, 3000, -3000, 2000, -2000, 0, 1000, -1000, 0)
    for i in range(9):
        w.sample(i * 250, i * 31250 + wob[i], True)
    assert abs(w.rate() - 1000000) < 30000


def test_ceiling_and_client_limited(tmp):
    # ESP32 window 5744 B, 20 ms: one stream <= 2.3 Mbps; 6 streams <= 13.8 Mbps.
    assert st.ceiling_bps(1, 5744, 20) == 2297600
    assert st.ceiling_bps(6, 5744, 20) == 13785600
    assert st.ceiling_bps(6, None, 20) is None
    d = {"goodput_bps": 2200000, "connect_ms": 20, "bytes": 10}
    r = st._result("http://h:1", 1, 100, 5744, (10000000, None), d, None)
    assert r["client_limited"] is True and d["client_limited"] is True
    assert r["ratio_down"] == 0.22 and r["ratio_up"] is None
    d = {"goodput_bps": 9500000, "connect_ms": 20, "bytes": 10}
    r = st._result("http://h:1", 6, 100, 5744, (10000000, None), d, None)
    assert r["client_limited"] is False and r["ceiling_bps"] == 13785600


DAY = 1767225600          # 2026-01-01T00:00Z


def test_schedule_slot_is_box_specific_and_in_window(tmp):
    s = speedsched.Schedule("box-1", 1, 5)
    w0, w1 = s.window(DAY + 3600 * 12)
    assert (w0, w1) == (DAY + 86400 + 3600, DAY + 86400 + 5 * 3600)
    slots = set()
    for i in range(200):
        b = speedsched.Schedule("box-%d" % i, 1, 5)
        x = b.slot(w0)
        assert w0 <= x < w0 + 3 * 3600
        slots.add(x // 60)
    assert len(slots) > 100          # 200 boxes over 180 minutes: ~120 distinct expected
    assert s.slot(w0) == speedsched.Schedule("box-1", 1, 5).slot(w0)


def test_schedule_wraps_midnight(tmp):
    s = speedsched.Schedule("b", 23, 3)
    assert s.window(DAY + 3600) == (DAY - 3600, DAY + 3 * 3600)
    assert s.window(DAY + 4 * 3600) == (DAY + 23 * 3600, DAY + 27 * 3600)


def test_schedule_decisions(tmp):
    s = speedsched.Schedule("box-1", 1, 5, daily=30000000, per_run=20000000)
    state = {}
    w0, w1 = s.window(DAY)
    slot = s.slot(w0)
    assert s.decide(None, state) == ("wait", None)
    assert s.decide(w0 - 100, state) == ("wait", slot)
    if slot > w0:
        assert s.decide(slot - 1, state) == ("wait", slot)
    act, nxt = s.decide(slot, state, idle=False)
    assert act == "wait" and slot + 900 <= nxt < slot + 960
    assert s.decide(nxt, state, idle=True) == ("run", 20000000)
    s.record(state, 19000000)
    act, nxt = s.decide(nxt + 1, state, idle=True)
    assert act == "wait" and nxt == s.slot(w0 + 86400)
    # Next night: a fresh daily budget.
    assert s.decide(w0 + 86400 + 3 * 3600, state, idle=None)[0] == "run"


def test_schedule_busy_all_night_and_budget(tmp):
    s = speedsched.Schedule("box-2", 1, 5, daily=500000)
    state = {}
    w0, w1 = s.window(DAY)
    assert s.decide(s.slot(w0), state) == ("skip", "budget")
    s = speedsched.Schedule("box-2", 1, 5)
    state = {}
    assert s.decide(w1 - 10, state, idle=False) == ("skip", "busy")
    assert state["done"] and state["why"] == "busy"
