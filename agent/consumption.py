# Consumption telemetry: electricity from the Linky TIC, water from a pulse
# meter, data usage where the HAL counts it. Imported only when enabled.
#
# A poll task drains the UART and the pulse input every `consumption_poll_ms`
# (real time). Energy comes from index differences between checksum-valid
# frames; an implausible difference (backwards, or over 12 Wh a second) is not
# used: the baseline is reset and it is counted. Deltas go into three buckets:
# curve slot (`consumption_curve_s`, 600 s), hour and day (UTC). Closed days
# are sent as kind "consumption". Every sub-daily figure is a load curve (CNIL):
# the hour messages, and the 10-minute curve in them, are sent only while
# options.consent.detailed_consumption is true; without it the box sends daily
# totals only (hours closed meanwhile are dropped, not held back). The leak alarm
# (an event) is a safety signal and is always sent.
# The meter number is hashed with a per-box random salt kept on the box
# (STATE/salt.json, agent/keys.py salt), or the config's hash_salt.
import asyncio
import binascii
import hashlib

from agent.compat import cold, ticks_diff, ticks_ms

MAX_WH_PER_S = 12          # 36 kVA, the largest residential supply, is 10 Wh/s
AUTOBAUD_MS = 10000        # auto mode: switch baud rate after this long without a frame
READS_PER_POLL = 8         # x 256-byte reads: the ESP32 HAL's 2048-byte UART rx buffer


def _bucket(start):
    # [start, {tariff: Wh}, VA max, litres, rx bytes, tx bytes]
    return [start, {}, None, 0, 0, 0]


def _add(b, wh, va, litres, rx, tx):
    d = b[1]
    for k in wh:
        d[k] = d.get(k, 0) + wh[k]
    if va is not None and (b[2] is None or va > b[2]):
        b[2] = va
    b[3] += litres
    b[4] += rx
    b[5] += tx


class Consumption:
    def __init__(self, box):
        # The set-up runs once: cold code (agent/consumption_cold.py init).
        cold("agent.consumption_cold", "init", self, box)

    # ---- input ------------------------------------------------------------------
    def poll(self):
        now = self.hal.now()
        self._roll(now)
        wh = {}
        va = None
        r = self.reader
        if r is not None:
            buf = self.rbuf
            # A frame can span polls: its values arrived after the poll before the
            # one that saw its first byte, and by now. Index deltas are checked
            # against that widest interval, so a slow poll never flags real energy.
            t = now if now is not None else ticks_ms() / 1000.0
            t0 = self.t_poll if self.t_poll is not None else t
            self.t_poll = t
            # At most READS_PER_POLL buffers a poll (a full 2048-byte UART rx
            # buffer): a line that never pauses must not starve the other tasks.
            for _ in range(READS_PER_POLL):
                n = self.hal.tic_read(buf)
                if not n:
                    break
                for f in r.feed(buf, n):
                    v = self._frame(f, t, t0 if f.t is None else f.t, wh)
                    if v is not None and (va is None or v > va):
                        va = v
                if n < len(buf):
                    break
            if r.frame is not None and r.frame.t is None:
                r.frame.t = t0
            if self.autobaud:
                if r.frames_ok != self.seen[0]:
                    self.seen = (r.frames_ok, ticks_ms())
                elif ticks_diff(ticks_ms(), self.seen[1]) >= AUTOBAUD_MS:
                    self.baud_mode = "historic" if self.baud_mode == "standard" else "standard"
                    self.hal.tic_set_mode(self.baud_mode)
                    self.seen = (r.frames_ok, ticks_ms())
        litres = 0
        if self.wm is not None:
            tnow, edges = self.hal.water_edges()
            leak = self.wm.feed(edges, tnow)
            p = self.wm.pulses
            litres = (p - self.water_prev) * self.wm.lpp
            self.water_prev = p
            if self.night is not None:
                nl = self.night.update(now, litres > 0)
                if nl is not None:
                    nl["index_l"] = self.wm.index_l()
                    leak = leak or nl
            if leak is not None:
                self.box.event("water_leak", leak)
        rx = tx = 0
        if self.net:
            c = self.hal.data_bytes()
            if c is not None:
                p = self.net_prev
                if p is not None and c[0] >= p[0] and c[1] >= p[1]:
                    rx, tx = c[0] - p[0], c[1] - p[1]
                self.net_prev = c
        for b in (self.slot, self.hour, self.day):
            _add(b, wh, va, litres, rx, tx)

    def _frame(self, f, t, t0, acc):
        s = self.tic.summary(f)
        s["mode"] = f.mode
        if s["meter"] is None and not s["wh"] and s["va"] is None:
            return None
        self.last = s if self.last is None else self._merge(s)
        if s["meter"] and self.meter_hash is None:
            h = hashlib.sha256((self.salt + ":" + s["meter"]).encode()).digest()
            self.meter_hash = binascii.hexlify(h[:8]).decode()
        cur = s["wh"]
        if cur:
            if self.prev is None:
                self.prev = {}
                self.prev_t = {}
            prev = self.prev
            pt = self.prev_t
            for k in cur:
                if k in prev:
                    dt = t - pt[k]
                    d = cur[k] - prev[k]
                    if d < 0 or d > MAX_WH_PER_S * (dt if dt > 1 else 1) + 2:
                        self.implausible += 1
                    elif d:
                        acc[k] = acc.get(k, 0) + d
                prev[k] = cur[k]
                pt[k] = t0
        return s["va"]

    def _merge(self, s):
        old = self.last
        for k in s:
            if s[k] is not None:
                old[k] = s[k]
        return old

    # ---- buckets ----------------------------------------------------------------
    def _roll(self, now):
        if now is None:
            if self.slot is None:
                self.slot, self.hour, self.day = _bucket(None), _bucket(None), _bucket(None)
            return
        t = int(now)
        keys = (t // self.curve_s, t // 3600, t // 86400)
        old = self.keys
        if old is None:
            self.keys = keys
            if self.slot is None:
                self.slot, self.hour, self.day = _bucket(None), _bucket(None), _bucket(None)
            self.slot[0] = keys[0] * self.curve_s
            self.hour[0] = keys[1] * 3600
            self.day[0] = keys[2] * 86400
            return
        if keys[0] != old[0]:
            s = self.slot
            self.curve.append([s[0], sum(s[1].values()), s[2], s[3]])
            self.slot = _bucket(keys[0] * self.curve_s)
        if keys[1] != old[1]:
            # [scope, bucket, end, curve]: rendered at send time, when consent is known
            self.ready.append(["hour", self.hour, old[1] * 3600 + 3600, self.curve, self._idx()])
            self.curve = []
            self.hour = _bucket(keys[1] * 3600)
        if keys[2] != old[2]:
            self.ready.append(["day", self.day, old[2] * 86400 + 86400, None, self._idx()])
            self.day = _bucket(keys[2] * 86400)
        self.keys = keys

    def _idx(self):
        # the meters' indexes when a period closes
        e = self.prev or {}
        return (dict((k, e[k]) for k in e if e[k]), self.wm.index_l() if self.wm else 0)

    # ---- the runtime's hooks -------------------------------------------------------
    def produce(self, box):
        if self.task is None:
            self._spawn()
        if not self.ready:
            return
        # Once an hour: the messages are built by agent/consumption_cold.py.
        cold("agent.consumption_cold", "produce", self, box)

    def _spawn(self):
        # Under the runtime's guard when there is one: a poll task that dies stops
        # the box (to be restarted) rather than leave it silently without meters.
        g = getattr(self.box, "guard", None)
        coro = g("consumption", self.run) if g else self.run()
        try:
            self.task = asyncio.create_task(coro)
        except RuntimeError:        # CPython, no running loop yet: the producer retries
            coro.close()
            self.task = None

    async def run(self):
        try:
            while not self.box.stop.is_set():
                t0 = ticks_ms()
                self.poll()
                left = self.poll_ms - ticks_diff(ticks_ms(), t0)
                await asyncio.sleep(max(left, 1) / 1000.0)
        finally:
            if self.wm is not None:
                self.wm.save()


def start(box):
    c = Consumption(box)
    box.producers.append(c.produce)
    box.consumption = c
    c._spawn()
    return c
