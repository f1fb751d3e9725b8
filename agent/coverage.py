# Wi-Fi coverage over one interval: per station SignalStrength (TR-181, dBm, -200..0)
# min/avg/max and the share of time in each quality band; association time; a
# neighbour scan (APs per channel, strongest RSSI) and a recommended channel among
# 1/6/11 with a score per channel and the reason. Where the HAL cannot give a value
# the report says "unsupported"; it never invents one. Station MACs leave the box only
# as sha256(salt + mac), truncated, with a per-box salt.
from agent.compat import cold

BANDS = (("excellent", -50), ("good", -67), ("fair", -75), ("weak", -85), ("unusable", -201))
CHANNELS = (1, 6, 11)
MARGIN = 10          # score points a channel must win by before we suggest a change
U = "unsupported"


def band(rssi):
    for i in range(5):
        if rssi >= BANDS[i][1]:
            return i
    return 4


# The report side (station ids, the scan summary, the channel recommendation) lives
# in agent/coverage_cold.py, loaded for a report and released after.


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
        return cold("agent.coverage_cold", "report", self, scan, current)


def collect(hal, t):
    f = getattr(hal, "stations", None)
    return f() if f else None


async def task(box):
    """Sample every cfg coverage_sample_s (default 10), report every coverage_interval
    (default telemetry_interval) as telemetry/coverage."""
    c = box.cfg
    dt = c.get("coverage_sample_s", 10)
    every = c.get("coverage_interval") or c.get("telemetry_interval", 300)
    cov = Coverage(cold("agent.coverage_cold", "salt", box))
    hal = box.hal
    while not box.stop.is_set():
        await hal.sleep(dt)
        cov.sample(collect(hal, None), dt)
        if cov.t >= every:
            sc = getattr(hal, "scan", None)
            ch = getattr(hal, "channel", None)
            box.emit("coverage", cov.report(sc() if sc else None, ch() if ch else None))
