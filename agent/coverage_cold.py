# The cold half of agent/coverage.py: what runs once per coverage report (the
# station ids, the scan summary, the channel recommendation) and once per boot (the
# salt). Loaded for a report through compat.cold(), out of RAM after it.
import hashlib

from agent.coverage import BANDS, CHANNELS, MARGIN, U


def station_id(salt, mac):
    if not isinstance(mac, str):
        mac = ":".join("%02x" % b for b in mac)
    h = hashlib.sha256(salt + mac.lower().replace("-", ":").encode()).digest()
    return "".join("%02x" % b for b in h[:8])


def scores(scan):
    # Interference seen by each candidate channel: every neighbour weighs its signal
    # above -100 dBm by how much its 20 MHz channel overlaps (channels 5 MHz apart:
    # 5/5 same channel, 4/5 one away ... 0 from 5 away). Lower is better.
    out = {}
    for c in CHANNELS:
        s = 0
        for ap in scan:
            d = abs(c - ap[2])
            if d < 5 and ap[3] > -100:
                s += (5 - d) * (ap[3] + 100)
        out[str(c)] = s / 5
    return out


def recommend(scan, current):
    sc = scores(scan)
    best = None
    for c in CHANNELS:
        if best is None or sc[str(c)] < sc[str(best)]:
            best = c
    if not scan:
        rec, why = current if current in CHANNELS else best, "no neighbour APs seen"
    elif current in CHANNELS and sc[str(current)] - sc[str(best)] < MARGIN:
        rec, why = current, "keep %d: within %d of the best (%.1f vs %.1f on %d)" % (
            current, MARGIN, sc[str(current)], sc[str(best)], best)
    else:
        rec = best
        why = "channel %d has the least interference (%.1f" % (best, sc[str(best)])
        why += ", vs %.1f on current %d)" % (sc[str(current)], current) if current in CHANNELS else ")"
    return {"current": current, "recommended": rec, "scores": sc, "reason": why}


def channels(scan):
    per = {}
    for ap in scan:
        c = per.get(ap[2])
        if c is None:
            per[ap[2]] = [1, ap[3]]
        else:
            c[0] += 1
            if ap[3] > c[1]:
                c[1] = ap[3]
    return [{"channel": ch, "aps": per[ch][0], "strongest": per[ch][1]} for ch in sorted(per)]


def report(cov, scan, current):
    out = []
    for mac in cov.st:
        s = cov.st[mac]
        e = {"id": station_id(cov.salt, mac), "assoc_s": s[9], "seen_s": s[10]}
        if s[3]:
            e["signal_strength"] = {"min": s[0], "avg": round(s[2] / s[3], 1), "max": s[1]}
            e["bands"] = {}
            for i in range(5):
                e["bands"][BANDS[i][0]] = round(s[4 + i] / s[3], 3)
        else:
            e["signal_strength"] = e["bands"] = U
        out.append(e)
    out.sort(key=lambda e: e["id"])
    d = {"interval_s": cov.t, "samples": cov.n, "stations": out,
         "rssi": U if cov.rssi is False else "ok"}
    if scan is None:
        d["scan"] = d["channel"] = U
    else:
        d["scan"] = {"aps": len(scan), "channels": channels(scan)}
        d["channel"] = recommend(scan, current)
    cov.reset()
    return d


def salt(box):
    # the config's, else the box's own random salt (agent/keys.py, STATE/salt.json)
    s = box.cfg.get("station_salt")
    if s:
        return s
    from agent.compat import cold
    return cold("agent.keys", "salt", box.cfg)
