# The sim homes a box can be given by name (config "scenario": "good_home"), and
# the glue that wires a scenario's parts into a SimHal at boot. Loaded once at
# boot, then forgotten: only the parts a home uses stay in RAM.
#
# A scenario (a home, or a dict in the config) may have:
#   start    sim epoch seconds where a fresh sim clock starts (2026-01-01 UTC)
#   mac      the box's MAC
#   wifi     agent/hal/sim_wifi.py scenario (or the name of one of its presets):
#            gives hal.stations(), scan(), channel(), line_idle(), data_bytes()
#   linky    {mode, base_w, faults, three_phase, seed}: with config tic_mode,
#            gives hal.tic_read(buf) (agent/hal/sim_linky.py); its bytes flow in
#            real time, its values follow the sim clock
#   water    {leak_lph, use, quiet, seed}: with config water_enabled, gives
#            hal.water_edges() (agent/hal/sim_water.py)
# A named home also brings config defaults (`config` below: coverage and the
# meters on); keys set in the box's config win.

HOMES = {
    # Everything works: the box reaches every room, channel 11 is clear, the
    # household draws water by day only. No alarm.
    "good_home": {
        "wifi": {
            "channel": 11, "jitter": 2, "slot": 10,
            "rooms": {"living": -42, "kitchen": -52, "bedroom": -58},
            "stations": [
                {"mac": "f0:99:b6:10:00:01", "rooms": ["living", "kitchen"], "dwell": 300, "since": 0},
                {"mac": "f0:99:b6:10:00:02", "rooms": ["bedroom"], "dwell": 900, "since": 0,
                 "busy": [[20, 23]]},
                {"mac": "f0:99:b6:10:00:03", "rooms": ["living"], "dwell": 900, "since": 0,
                 "busy": [[19, 22]]},
            ],
            "neighbours": [
                {"ssid": "Livebox-5C1D", "bssid": "00:11:22:00:10:01", "channel": 1, "rssi": -80},
                {"ssid": "SFR_WiFi_2", "bssid": "00:11:22:00:10:02", "channel": 6, "rssi": -84},
            ],
        },
        "linky": {"mode": "standard", "base_w": 300},
        "water": {"leak_lph": 0, "quiet": [0, 6], "seed": 11},
        "config": {"coverage": True, "tic_mode": "standard", "water_enabled": True},
    },
    # The brief's tenant: the daughter's phone spends half its time in a bedroom
    # at -80 dBm (a weak-coverage alarm); channels 1 and 6 are crowded. An older
    # Linky in historic mode, found by auto-detection.
    "weak_bedroom": {
        "wifi": "weak_bedroom",
        "linky": {"mode": "historic", "base_w": 420},
        "water": {"leak_lph": 0, "quiet": [0, 6], "seed": 23},
        "config": {"coverage": True, "tic_mode": "auto", "water_enabled": True},
    },
    # A tap that never stops dripping, 12 litres an hour: a water_leak event
    # after 2 h of flow (rule "duration"), another after the night (rule "night").
    "leaking_tap": {
        "wifi": {
            "channel": 1, "jitter": 2, "slot": 10,
            "rooms": {"living": -50, "kitchen": -58, "bedroom": -69},
            "stations": [
                {"mac": "5c:cf:7f:20:00:01", "rooms": ["living", "bedroom"], "dwell": 600, "since": 0,
                 "busy": [[21, 23]]},
                {"mac": "5c:cf:7f:20:00:02", "rooms": ["kitchen"], "dwell": 900, "since": 0},
            ],
            "neighbours": [
                {"ssid": "Bbox-31", "bssid": "00:11:22:00:20:01", "channel": 1, "rssi": -58},
                {"ssid": "Freebox-7", "bssid": "00:11:22:00:20:02", "channel": 2, "rssi": -66},
                {"ssid": "Livebox-A0", "bssid": "00:11:22:00:20:03", "channel": 11, "rssi": -72},
            ],
        },
        "linky": {"mode": "standard", "base_w": 380},
        "water": {"leak_lph": 12, "quiet": [0, 6], "seed": 37},
        "config": {"coverage": True, "tic_mode": "standard", "water_enabled": True},
    },
}


# A home whose Linky gives nothing (TIC cable unplugged): the bench self-test fails it.
HOMES["silent_linky"] = {
    "linky": {"mode": "standard", "silent": True},
    "config": {"tic_mode": "standard"},
}


def home(name):
    h = HOMES.get(name)
    if h is None:
        raise ValueError("unknown sim home %r (known: %s)" % (name, ", ".join(sorted(HOMES))))
    return h


def config_defaults(name):
    """The config keys a named home turns on (config.load applies them first)."""
    return dict(home(name)["config"])


def attach(hal, config, sc):
    """Give a SimHal its clock and the parts its scenario and config enable.
    Returns the scenario dict."""
    from agent.hal.sim_clock import DEFAULT_SIM_EPOCH, SimClock
    if isinstance(sc, str):
        sc = home(sc)
    hal.clock = SimClock(config["state_dir"], config.get("speedup", 1), sc.get("start"))
    now = hal.clock.now
    seed = config.get("seed", 1)
    w = sc.get("wifi")
    if w:
        from agent.hal.sim_wifi import SimWifi
        wf = hal.wifi = SimWifi(w, seed, sc.get("start") or DEFAULT_SIM_EPOCH, now)
        hal.stations = wf.stations
        hal.scan = wf.scan
        hal.channel = wf.channel
        hal.line_idle = wf.line_idle
        hal.data_bytes = wf.data_bytes
    mode = config.get("tic_mode")
    if mode:
        from agent.hal.sim_linky import SimLinky
        lk = sc.get("linky") or {}
        m = lk.get("mode") or ("standard" if mode == "auto" else mode)
        import time
        hal.linky = SimLinky(now, m, seed=lk.get("seed", 6 + seed), faults=lk.get("faults", 0.0),
                             three_phase=lk.get("three_phase", False), base_w=lk.get("base_w", 350),
                             line=time.time)
        # a "silent" Linky: wired in the settings, but nothing on the line
        hal.tic_read = (lambda buf: 0) if lk.get("silent") else hal.linky.tic_read
    if config.get("water_enabled"):
        from agent.hal.sim_water import SimWater
        wt = sc.get("water") or {}
        hal.water = SimWater(now, seed=wt.get("seed", 2 + seed), l_per_pulse=config.get("water_l_per_pulse", 1),
                             leak_lph=wt.get("leak_lph", 0.0), use=wt.get("use", True), quiet=wt.get("quiet"))
        hal.water_edges = hal.water.hal_edges
    return sc
