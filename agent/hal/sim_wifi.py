# Simulated Wi-Fi for the sim HAL: stations that move between rooms, neighbour APs.
# Deterministic: a station's room and RSSI at sim time t depend only on the seed,
# the scenario and t (not on how often it is asked).
#
# Scenario keys (scenario["wifi"]):
#   channel      our AP's channel (default 6)
#   rssi         false: the HAL cannot give per-station RSSI (ESP32 in AP mode)
#   rooms        {"room": RSSI dBm at our AP}
#   jitter       +- dB of uniform noise per sample slot (default 0)
#   slot         seconds per noise slot (default 10)
#   stations     [{"mac", "rooms": [room, ...], "dwell": s per room, "since": assoc
#                  start (sim epoch s), "until": leaves at (optional)}]
#   neighbours   [{"ssid", "bssid", "channel", "rssi"}]
#   busy_bps     [down, up] bytes/s of a station in one of its "busy" UTC hours
#                ([[from_h, to_h], ...], streaming); idle_bps otherwise
#   idle_bps     [down, up] (default [2000, 500])
# A station visits its rooms in order, `dwell` seconds each, from `since`.
# As a HAL part (agent/hal/sim_homes.py), `now` gives the sim time: stations(),
# scan(), channel(), line_idle() and data_bytes() then need no argument.
from agent.hal.sim_rng import XorShift

SCENARIOS = {
    # The brief's tenant: the daughter's phone spends its evenings in a bedroom the
    # old box did not reach; neighbours crowd channels 1 and 6, 11 is clear.
    "weak_bedroom": {
        "channel": 6, "jitter": 0, "slot": 10,
        "rooms": {"living": -48, "kitchen": -62, "bedroom": -80},
        "stations": [
            {"mac": "a4:5e:60:11:22:33", "rooms": ["living", "bedroom"], "dwell": 120, "since": 0,
             "busy": [[18, 23]]},
            {"mac": "3c:22:fb:44:55:66", "rooms": ["kitchen"], "dwell": 600, "since": 0},
        ],
        "neighbours": [
            {"ssid": "Livebox-1A2B", "bssid": "00:11:22:00:00:01", "channel": 1, "rssi": -55},
            {"ssid": "SFR_77", "bssid": "00:11:22:00:00:02", "channel": 1, "rssi": -70},
            {"ssid": "Bbox-9", "bssid": "00:11:22:00:00:03", "channel": 6, "rssi": -60},
            {"ssid": "Freebox-X", "bssid": "00:11:22:00:00:04", "channel": 7, "rssi": -75},
            {"ssid": "far", "bssid": "00:11:22:00:00:05", "channel": 11, "rssi": -90},
        ],
    },
}


class SimWifi:
    def __init__(self, sc, seed=1, epoch=0, now=None):
        if isinstance(sc, str):
            sc = SCENARIOS[sc]
        self.sc = sc
        self.seed = seed
        self.epoch = epoch      # scenario times are relative to this sim epoch
        self.now = now          # the sim clock, when t is not given
        self.net = None         # [t, rx, tx]: the data counters, integrated up to t

    def channel(self):
        return self.sc.get("channel", 6)

    def _noise(self, i, t):
        j = self.sc.get("jitter", 0)
        if not j:
            return 0
        r = XorShift(self.seed * 7919 + i * 104729 + int(t) // self.sc.get("slot", 10))
        r.next()
        return r.randint(-j, j)

    def stations(self, t=None):
        """[(mac, rssi dBm or None, seconds associated)] at sim time t."""
        if t is None:
            t = self.now()
        out = []
        rooms = self.sc.get("rooms") or {}
        ok = self.sc.get("rssi", True)
        t = t - self.epoch
        for i, st in enumerate(self.sc.get("stations") or []):
            since = st.get("since", 0)
            until = st.get("until")
            if t < since or (until is not None and t >= until):
                continue
            rs = st.get("rooms") or []
            rssi = None
            if ok and rs:
                k = int((t - since) // st.get("dwell", 300)) % len(rs)
                rssi = max(-100, min(-10, rooms.get(rs[k], -70) + self._noise(i, t)))
            out.append((st["mac"], rssi, int(t - since)))
        return out

    def scan(self, t=None):
        """[(ssid, bssid, channel, rssi)] like network.WLAN.scan() without authmode/hidden."""
        out = []
        for i, n in enumerate(self.sc.get("neighbours") or []):
            out.append((n.get("ssid", ""), n["bssid"], n["channel"],
                        n["rssi"] + (self._noise(100 + i, t) if t is not None else 0)))
        return out

    # ---- the line: traffic of the stations ----------------------------------------
    def _rates(self, t):
        """(down, up) bytes/s of all stations present at sim time t, and whether
        one of them is busy (streaming)."""
        sc = self.sc
        hr = int(t // 3600) % 24
        t = t - self.epoch
        bd, bu = sc.get("busy_bps") or (250000, 12500)
        idd, idu = sc.get("idle_bps") or (2000, 500)
        down = up = 0
        busy = False
        for st in sc.get("stations") or ():
            until = st.get("until")
            if t < st.get("since", 0) or (until is not None and t >= until):
                continue
            b = False
            for w in st.get("busy") or ():
                if w[0] <= hr < w[1]:
                    b = True
            down += bd if b else idd
            up += bu if b else idu
            busy = busy or b
        return down, up, busy

    def line_idle(self, t=None):
        """True when no station streams (little traffic in the last minute)."""
        return not self._rates(self.now() if t is None else t)[2]

    def data_bytes(self, t=None):
        """(rx, tx) bytes since the first call, like an interface's counters."""
        if t is None:
            t = self.now()
        n = self.net
        if n is None:
            # [t, rx, tx, rx fraction, tx fraction]: integer counters (a float32
            # on an ESP32 could not count past 16 MB), the fractions carried
            n = self.net = [t, 0, 0, 0.0, 0.0]
        while n[0] < t:
            end = min(t, (n[0] // 3600 + 1) * 3600)   # rates change on the hour
            d, u, _b = self._rates(n[0])
            for i, r in ((1, d), (2, u)):
                x = r * (end - n[0]) + n[i + 2]
                k = int(x)
                n[i] += k
                n[i + 2] = x - k
            n[0] = end
        return n[1], n[2]
