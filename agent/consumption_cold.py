# The cold half of agent/consumption.py: the set-up, and the hour and day messages,
# built once an hour (loaded through compat.cold(), out of RAM after).
from agent.compat import cold, ticks_ms


def init(cons, box):
    # Consumption.__init__ (agent/consumption.py): once per boot, so not resident.
    cfg = box.cfg
    hal = box.hal
    cons.box = box
    cons.hal = hal
    cons.salt = str(cfg.get("hash_salt") or cold("agent.keys", "salt", cfg))
    cs = int(cfg.get("consumption_curve_s") or 600)
    cons.curve_s = cs if cs >= 60 and 3600 % cs == 0 else 600
    cons.poll_ms = int(cfg.get("consumption_poll_ms") or 250)
    cons.reader = None
    mode = cfg.get("tic_mode")
    if mode and hasattr(hal, "tic_read"):
        from agent import tic
        cons.tic = tic
        cons.reader = tic.Reader(None if mode == "auto" else mode, tic.KEEP, False, False)
        cons.rbuf = bytearray(256)
        # auto mode on a real UART: try the other baud rate after 10 s without a frame
        cons.autobaud = mode == "auto" and hasattr(hal, "tic_set_mode")
        cons.baud_mode = "standard"
        cons.seen = (0, ticks_ms())
    cons.wm = None
    if cfg.get("water_enabled") and hasattr(hal, "water_edges"):
        from agent import water
        cons.wm = water.WaterMeter(cfg["state_dir"] + "/water.json",
                                   cfg.get("water_l_per_pulse", 1),
                                   cfg.get("water_debounce_ms", 80),
                                   cfg.get("water_save_pulses", 10),
                                   save_idle_s=cfg.get("water_save_idle_s", 60),
                                   save_max_s=cfg.get("water_save_max_s", 900),
                                   leak_s=cfg.get("water_leak_s", 7200),
                                   gap_s=cfg.get("water_gap_s", 900))
        nw = cfg.get("water_night_utc", [0, 4])
        cons.night = water.NightWatch(nw[0], nw[1]) if nw else None
    cons.net = hasattr(hal, "data_bytes")
    cons.net_prev = None
    cons.prev = None           # last accepted indexes {tariff: Wh}
    cons.prev_t = None
    cons.t_poll = None
    cons.implausible = 0
    cons.last = None           # last summary (mode, meter, period, sub, status)
    cons.meter_hash = None
    cons.water_prev = cons.wm.pulses if cons.wm else 0
    cons.keys = None
    cons.slot = cons.hour = cons.day = None
    cons.curve = []
    cons.ready = []
    cons.task = None


def consent(box):
    doc = box.twin.applied.get("options") or {}
    c = doc.get("consent") if isinstance(doc, dict) else None
    return isinstance(c, dict) and c.get("detailed_consumption") is True


def produce(cons, box):
    # Without consent only the day's totals leave the box: an hour is a sub-daily
    # figure (issue 19), dropped rather than held back.
    detailed = consent(box)
    while cons.ready:
        m = cons.ready.pop(0)
        if detailed or m[0] == "day":
            box.emit("consumption", render(cons, m, detailed))


def render(cons, m, detailed):
    scope, b, end, curve, idx = m
    d = {"scope": scope, "start": b[0], "end": end if b[0] is not None else None,
         "detailed": bool(detailed and curve is not None)}
    if cons.reader is not None:
        r = cons.reader
        s = cons.last or {}
        sub = s.get("sub")
        e = {"mode": s.get("mode"), "meter": cons.meter_hash,
             "wh": b[1], "wh_total": sum(b[1].values()), "va_max": b[2],
             "index_wh": idx[0],
             "period": s.get("period"), "status": s.get("status"),
             "subscribed": None if sub is None else {"value": sub[0], "unit": sub[1]},
             "frames_ok": r.frames_ok, "frames_bad": r.frames_bad,
             "errors": {"checksum": r.errors["checksum"], "malformed": r.errors["malformed"],
                        "interrupted": r.errors["interrupted"],
                        "implausible": cons.implausible}}
        d["elec"] = e
    if cons.wm is not None:
        d["water"] = {"l": b[3], "index_l": idx[1], "restored": cons.wm.restored,
                      "bounces": cons.wm.bounces}
    if cons.net:
        d["net"] = {"rx_bytes": b[4], "tx_bytes": b[5]}
    if d["detailed"]:
        d["curve"] = curve
    return d
