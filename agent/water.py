# Water pulse meter: software debounce, an index persisted so that it never goes
# backwards, and leak detection. Edge times are milliseconds on the HAL's
# monotonic base (ticks_ms on the ESP32, which wraps at 2**30).
#
# Persistence bound: the index is written (atomically) when `save_pulses`
# pulses are unsaved, and when any are unsaved and flow has paused for `save_idle_s`
# or `save_max_s` has passed. A power cut loses at most save_pulses - 1 pulses.
from agent import fsutil

_H = 1 << 29
_M = (1 << 30) - 1


def tdiff(a, b):
    # a - b, wrap-safe for 30-bit tick counters (and plain for unwrapped ones).
    return ((a - b + _H) & _M) - _H


class WaterMeter:
    def __init__(self, path, l_per_pulse=1, debounce_ms=80, save_pulses=10,
                 save_idle_s=60, save_max_s=900, leak_s=7200, gap_s=900):
        self.path = path
        self.lpp = l_per_pulse
        self.debounce = debounce_ms
        self.save_pulses = save_pulses
        self.save_idle = save_idle_s * 1000
        self.save_max = save_max_s * 1000
        self.leak_ms = leak_s * 1000
        self.gap_ms = gap_s * 1000
        st = fsutil.read_json(path)
        self.restored = isinstance(st, dict) and isinstance(st.get("p"), int)
        self.pulses = st["p"] if self.restored else 0
        self.saved = self.pulses
        self.last = None          # time of the last accepted pulse
        self.saved_at = None
        self.bounces = 0
        self.run_start = None     # first pulse of the current flow run
        self.run_pulses = 0
        self.leaking = False
        self.saves = 0

    def index_l(self):
        return self.pulses * self.lpp

    def feed(self, edges, now=None):
        """Count debounced pulses from edge times; returns a leak detail dict or None.
        Call it (or tick) at least every few days with `now`: the 30-bit tick
        counter wraps every 12.4 days, so a pulse older than a flow gap is forgotten
        while its age can still be told (see age_out)."""
        leak = None
        if now is not None:
            self.age_out(now)
        for t in edges:
            if self.last is not None and tdiff(t, self.last) < self.debounce:
                self.bounces += 1
                continue
            if self.run_start is None or self.last is None or tdiff(t, self.last) > self.gap_ms:
                self.run_start = t
                self.run_pulses = 0
                self.leaking = False
            self.last = t
            self.pulses += 1
            self.run_pulses += 1
            if self.saved_at is None:
                self.saved_at = t
            if self.pulses - self.saved >= self.save_pulses:
                self.save(t)
            dur = tdiff(t, self.run_start)
            if not self.leaking and dur >= self.leak_ms:
                self.leaking = True
                leak = {"rule": "duration", "duration_s": dur // 1000,
                        "litres": self.run_pulses * self.lpp, "index_l": self.index_l()}
        if now is not None:
            self.tick(now)
        return leak

    def tick(self, now):
        # Save on a pause in the flow, or at the latest save_max after the last save.
        if self.pulses != self.saved and self.last is not None:
            if tdiff(now, self.last) >= self.save_idle or tdiff(now, self.saved_at) >= self.save_max:
                self.save(now)
        self.age_out(now)

    def age_out(self, now):
        # Without this, after 6.2 days without water the wrapped tick difference to
        # the last pulse turns negative and every new pulse looks like a bounce.
        if self.last is not None and not 0 <= tdiff(now, self.last) <= self.gap_ms:
            if self.pulses != self.saved:
                self.save(now)
            self.last = None
            self.run_start = None
            self.leaking = False

    def flowing(self, now):
        return self.last is not None and tdiff(now, self.last) <= self.gap_ms

    def save(self, now=None):
        if self.pulses == self.saved:
            return
        fsutil.write_json(self.path, {"p": self.pulses, "lpp": self.lpp})
        self.saved = self.pulses
        self.saved_at = now
        self.saves += 1


class NightWatch:
    """Continuous overnight flow: at least one pulse in every hour of the night
    window [start_h, end_h) (UTC hours of the sim/box clock). One alert a night.
    A window may run past midnight (22-6); start == end watches nothing."""

    def __init__(self, start_h=1, end_h=5):
        self.a = int(start_h) % 24
        self.hours = (int(end_h) - self.a) % 24
        self.mask = 0
        self.night = None

    def update(self, now_s, pulses_seen):
        if now_s is None or not self.hours:
            return None
        # a night is named by the day on which its window opened
        night = int((now_s - self.a * 3600) // 86400)
        k = (int(now_s // 3600) - self.a) % 24
        if k < self.hours:
            if self.night != night:
                self.night = night
                self.mask = 0
            if pulses_seen:
                self.mask |= 1 << k
            return None
        if self.night == night and self.mask == (1 << self.hours) - 1:
            self.mask = 0
            return {"rule": "night", "duration_s": self.hours * 3600}
        return None
