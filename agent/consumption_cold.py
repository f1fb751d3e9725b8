# The cold half of agent/consumption.py: the hour and day messages, built once an
# hour (loaded through compat.cold(), out of RAM after).


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
