# A simulated pulse water meter on the sim clock: household draws (showers,
# flushes, taps) chosen per sim minute by a seeded hash, an optional leaking tap
# (a steady flow in litres per hour), and contact bounce on every pulse.
# Edge times are sim milliseconds masked to 30 bits, like ticks_ms on an ESP32.
# quiet=(from_h, to_h): UTC hours when the household sleeps (no draws; a leak
# still flows).
_M = (1 << 30) - 1


class SimWater:
    """hal.water_edges() -> [ms, ...] of every edge since the last call."""

    def __init__(self, now, seed=3, l_per_pulse=1.0, leak_lph=0.0, use=True, bounce=True,
                 quiet=None):
        self.now = now
        self.quiet = quiet
        self.seed = (seed * 2654435761) & 0xFFFFFFFF
        self.lpp = float(l_per_pulse)
        self.leak = leak_lph / 3600.0      # litres per second
        self.use = use
        self.bounce = bounce
        self.t = None
        self.acc = 0.0                     # litres not yet pulsed
        self.pulses = 0                    # truth: pulses the meter produced
        self.edges = 0

    def _hash(self, m):
        h = (m * 2246822519 + self.seed) & 0xFFFFFFFF
        h ^= h >> 13
        h = (h * 3266489917) & 0xFFFFFFFF
        return h ^ (h >> 16)

    def flow(self, t):
        """Litres per second at sim time t."""
        f = self.leak
        q = self.quiet
        # a quiet window may run past midnight (23-6)
        if self.use and not (q and (int(t // 3600) - q[0]) % 24 < (q[1] - q[0]) % 24):
            h = self._hash(int(t // 60))
            if h % 29 == 0:
                f += (6 + h % 7) / 60.0     # a shower or a tap: 6-12 l/min
        return f

    def water_edges(self):
        now = self.now()
        out = []
        if self.t is None:
            self.t = now
        while self.t < now:
            end = min(now, (self.t // 60 + 1) * 60)
            f = self.flow(self.t)
            if f > 0:
                t = self.t
                while self.acc + f * (end - t) >= self.lpp:
                    dt = (self.lpp - self.acc) / f
                    t += dt
                    self.acc = 0.0
                    self.pulses += 1
                    ms = int(t * 1000)
                    out.append(ms & _M)
                    if self.bounce:
                        for k in range(self._hash(ms) % 4):
                            out.append((ms + 2 + 9 * k) & _M)
                self.acc += f * (end - t)
            self.t = end
        self.edges += len(out)
        return out

    def hal_edges(self):
        """The HAL's water_edges(): (now in ms, [edge ms, ...]), as on the ESP32."""
        out = self.water_edges()
        return int(self.now() * 1000) & _M, out
