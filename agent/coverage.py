# Wi-Fi coverage over one interval: per station SignalStrength (TR-181, dBm, -200..0)
# min/avg/max and the share of time in each quality band; association time; a
# neighbour scan (APs per channel, strongest RSSI) and a recommended channel among
# 1/6/11 with a score per channel and the reason. Where the HAL cannot give a value
# the report says "unsupported"; it never invents one. Station MACs leave the box only
# as sha256(salt + mac), truncated, with a per-box salt.
import hashlib

BANDS = (("excellent", -50), ("good", -67), ("fair", -75), ("weak", -85), ("unusable", -201))
CHANNELS = (1, 6, 11)
MARGIN = 10          # score points a channel must win by before we suggest a change
U = "unsupported"


def band(rssi):
    for i in range(5):
        if rssi >= BANDS[i][1]:
            return i
    return 4


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


class Coverage:
    def __init__(self, salt):
        self.salt = salt if isinstance(salt, bytes) else salt.encode()
        self.reset()

    def reset(self):
        self.st = {}          # mac -> [min, max, sum(rssi*dt), dt with rssi, band dts x5, assoc, seen]
        self.n = 0
        self.t = 0
        self.rssi = None      # True: some RSSI seen; False: HAL gave none

    def sample(self, stations, dt):
        """stations: [(mac, rssi dBm or None, seconds associated)] or None (HAL lacks it)."""
        self.n += 1
        self.t += dt
        if stations is None:
            if self.rssi is None:
                self.rssi = False
            return
        for mac, rssi, assoc in stations:
            s = self.st.get(mac)
            if s is None:
                s = self.st[mac] = [0, -200, 0, 0, 0, 0, 0, 0, 0, 0, 0]
            s[9] = assoc
            s[10] += dt
            if rssi is None:
                if self.rssi is None:
                    self.rssi = False
                continue
            self.rssi = True
            rssi = max(-200, min(0, rssi))
            if not s[3] or rssi < s[0]:
                s[0] = rssi
            if rssi > s[1]:
                s[1] = rssi
            s[2] += rssi * dt
            s[3] += dt
            s[4 + band(rssi)] += dt

    def report(self, scan=None, current=None):
        """The interval's data for telemetry/coverage; then starts a new interval.
        scan: [(ssid, bssid, channel, rssi, ...)] or None when the HAL cannot scan."""
        out = []
        for mac in self.st:
            s = self.st[mac]
            e = {"id": station_id(self.salt, mac), "assoc_s": s[9], "seen_s": s[10]}
            if s[3]:
                e["signal_strength"] = {"min": s[0], "avg": round(s[2] / s[3], 1), "max": s[1]}
                e["bands"] = {}
                for i in range(5):
                    e["bands"][BANDS[i][0]] = round(s[4 + i] / s[3], 3)
            else:
                e["signal_strength"] = e["bands"] = U
            out.append(e)
        out.sort(key=lambda e: e["id"])
        d = {"interval_s": self.t, "samples": self.n, "stations": out,
             "rssi": U if self.rssi is False else "ok"}
        if scan is None:
            d["scan"] = d["channel"] = U
        else:
            d["scan"] = {"aps": len(scan), "channels": channels(scan)}
            d["channel"] = recommend(scan, current)
        self.reset()
        return d


def _salt(box):
    s = box.cfg.get("station_salt")
    if s:
        return s
    from agent import compat, fsutil
    path = box.cfg["state_dir"] + "/salt.json"
    d = fsutil.read_json(path, {}) or {}
    if not d.get("salt"):
        d = {"salt": "".join("%02x" % b for b in compat.urandom(16))}
        fsutil.write_json(path, d)
    return d["salt"]


def collect(hal, t):
    f = getattr(hal, "stations", None)
    return f() if f else None


async def task(box):
    """Sample every cfg coverage_sample_s (default 10), report every coverage_interval
    (default telemetry_interval) as telemetry/coverage."""
    c = box.cfg
    dt = c.get("coverage_sample_s", 10)
    every = c.get("coverage_interval") or c.get("telemetry_interval", 300)
    cov = Coverage(_salt(box))
    hal = box.hal
    while not box.stop.is_set():
        await hal.sleep(dt)
        cov.sample(collect(hal, None), dt)
        if cov.t >= every:
            sc = getattr(hal, "scan", None)
            ch = getattr(hal, "channel", None)
            box.emit("coverage", cov.report(sc() if sc else None, ch() if ch else None))
