# The sim homes and their wiring into the sim HAL, under CPython and MicroPython
# (tests/test_onbox.py): a named home turns on its features, the HAL gets the
# optional methods of the parts it simulates and no others.
from agent import config
from agent.hal.sim import SimHal

OPTIONAL = ("stations", "scan", "channel", "line_idle", "data_bytes", "tic_read", "water_edges")


def _hal(tmp, name, **over):
    o = {"box_id": "hb-" + name, "state_dir": tmp + "/" + name, "scenario": name}
    o.update(over)
    cfg = config.load(overrides=o)
    return cfg, SimHal(cfg)


def test_default_box_has_no_optional_part(tmp):
    cfg = config.load(overrides={"box_id": "hb-plain", "state_dir": tmp + "/plain"})
    assert not cfg["coverage"] and cfg["tic_mode"] is None and not cfg["water_enabled"]
    assert cfg["speed_url"] is None
    hal = SimHal(cfg)
    for m in OPTIONAL:
        assert not hasattr(hal, m), m
    assert hal.health()["wifi_clients"] == 0


def test_named_homes_turn_on_their_features(tmp):
    for name, mode in (("good_home", "standard"), ("weak_bedroom", "auto"), ("leaking_tap", "standard")):
        cfg, hal = _hal(tmp, name)
        assert cfg["coverage"] is True and cfg["water_enabled"] is True and cfg["tic_mode"] == mode
        for m in OPTIONAL:
            assert hasattr(hal, m), (name, m)
        assert hal.health()["wifi_clients"] == len(hal.stations()) >= 2
    # what the config says wins over the home's defaults
    cfg, hal = _hal(tmp, "leaking_tap", coverage=False, tic_mode=None, **{"state_dir": tmp + "/lt2"})
    assert cfg["coverage"] is False and not hasattr(hal, "tic_read") and hasattr(hal, "water_edges")
    try:
        _hal(tmp, "castle")
        raise AssertionError("an unknown home must be refused")
    except ValueError as e:
        assert "good_home" in str(e)


def test_parts_answer_like_the_esp32_hal(tmp):
    _cfg, hal = _hal(tmp, "leaking_tap")
    buf = bytearray(256)
    hal.data_bytes()
    hal.water_edges()
    hal.tic_read(buf)                         # the counters and the lines start now
    hal.clock.origin_sim += 3 * 3600          # three hours of box time go by
    st = hal.stations()
    assert st and all(len(s) == 3 and -100 <= s[1] <= -10 for s in st)
    assert [a[2] for a in hal.scan()] == [1, 2, 11] and hal.channel() == 1
    rx, tx = hal.data_bytes()
    assert rx >= 2 * 2000 * 3 * 3600 and tx > 0
    assert hal.line_idle() in (True, False)
    ms, edges = hal.water_edges()             # the tap ran for the whole three hours
    assert isinstance(ms, int) and 0 <= ms < (1 << 30)
    assert len(edges) >= 35                   # 12 l/h at 1 l a pulse, plus bounces
    t = hal.linky.t
    hal.linky.line = lambda: t + 1.0          # one second of the line at 9600 baud
    assert hal.tic_read(buf) == 256           # 960 bytes are waiting


def test_line_is_busy_only_when_a_station_streams(tmp):
    _cfg, hal = _hal(tmp, "weak_bedroom")
    day = 1767225600
    # the phone streams 18:00-23:00 UTC (sim_wifi "busy"), the laptop never does
    assert hal.line_idle(day + 12 * 3600) is True
    assert hal.line_idle(day + 19 * 3600) is False
    w = hal.wifi
    a = w.data_bytes(day)
    b = w.data_bytes(day + 3600)              # an idle hour: 2000 + 2000 B/s down
    c = w.data_bytes(day + 19 * 3600)
    d = w.data_bytes(day + 20 * 3600)         # a busy hour: the phone streams
    assert b[0] - a[0] == 2 * 2000 * 3600
    assert d[0] - c[0] == (250000 + 2000) * 3600
