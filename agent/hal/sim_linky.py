# A simulated Linky meter on the sim clock: valid TIC frames (historic or
# standard, single or three phase) at the line's byte rate, a UART rx buffer
# that overflows like the real one, and injectable faults per frame: dropped
# bytes, flipped bits, truncated frames. Deterministic for a seed.
from agent.hal.sim_rng import XorShift


def _ck(b):
    s = 0
    for c in b:
        s += c
    return (s & 0x3F) + 0x20


def group(mode, label, value, horo=None):
    if mode == "historic":
        body = ("%s %s" % (label, value)).encode()
        return b"\n" + body + b" " + bytes([_ck(body)]) + b"\r"
    body = label + "\t" + (horo + "\t" if horo else "") + value + "\t"
    body = body.encode()
    return b"\n" + body + bytes([_ck(body)]) + b"\r"


class SimLinky:
    """hal.tic_read(buf) -> n: the bytes the UART has received since the last call."""

    def __init__(self, now, mode="standard", seed=7, faults=0.0, three_phase=False,
                 rxbuf=2048, base_w=350, meter="031664001115", line=None):
        # line: the clock the bytes flow on, when not the sim clock. A sim home
        # passes real time (agent/hal/sim_homes.py): the meter then sends its
        # frames at 1200/9600 baud of real time, with the sim clock's values in
        # them, so that a fast sim clock does not overflow the UART by itself.
        self.now = now
        self.line = line
        self.mode = mode
        self.rng = XorShift(seed)
        self.frng = XorShift(seed * 7 + 1)
        self.faults = faults
        self.three = three_phase
        self.rxbuf = rxbuf
        self.base_w = base_w
        self.meter = meter
        self.cps = (1200 if mode == "historic" else 9600) / 10.0   # 7E1: 10 bits a byte
        self.wh = [0.0, 0.0]       # off-peak, peak (Wh, exact)
        self.t_e = None            # sim time the energy was integrated to
        self.t = None              # sim time of the next byte on the line
        self.cur = b""
        self.pos = 0
        self.frames = 0
        self.injected = {"drop": 0, "flip": 0, "truncate": 0}
        self.overflow = 0          # bytes lost to a full rx buffer
        self.last = None           # true (index off-peak, index peak, VA) of the last frame

    # ---- the home's load, a deterministic function of sim time --------------
    def power(self, t):
        m = int(t // 60)
        h = (m * 2654435761 + self.rng.s) & 0xFFFFFFFF
        h ^= h >> 15
        w = self.base_w + (h % 7) * 40
        if h % 11 == 0:
            w += 2000             # an oven, a kettle
        return w

    def _offpeak(self, t):
        hr = int(t // 3600) % 24
        return hr >= 22 or hr < 6

    def advance(self, t):
        if self.t_e is None:
            self.t_e = t
        while self.t_e < t:
            nxt = min(t, (self.t_e // 60 + 1) * 60)
            self.wh[0 if self._offpeak(self.t_e) else 1] += self.power(self.t_e) * (nxt - self.t_e) / 3600.0
            self.t_e = nxt

    # ---- frames ---------------------------------------------------------------
    def frame(self, t):
        """One clean frame at sim time t (bytes), and its truth."""
        self.advance(t)
        hc, hp = int(self.wh[0]), int(self.wh[1])
        va = int(self.power(t) * 1.05)
        off = self._offpeak(t)
        self.last = (hc, hp, va)
        parts = [b"\x02"]
        if self.mode == "historic":
            g = [("ADCO", self.meter), ("OPTARIF", "HC.."), ("ISOUSC", "30"),
                 ("HCHC", "%09d" % hc), ("HCHP", "%09d" % hp),
                 ("PTEC", "HC.." if off else "HP..")]
            if self.three:
                for i in (1, 2, 3):
                    g.append(("IINST%d" % i, "%03d" % (va // 690)))
                for i in (1, 2, 3):
                    g.append(("IMAX%d" % i, "060"))
                g += [("PMAX", "06000"), ("PAPP", "%05d" % va), ("HHPHC", "A"),
                      ("MOTDETAT", "000000"), ("PPOT", "00")]
            else:
                g += [("IINST", "%03d" % (va // 230)), ("IMAX", "090"),
                      ("PAPP", "%05d" % va), ("HHPHC", "A"), ("MOTDETAT", "000000")]
            for k, v in g:
                parts.append(group("historic", k, v))
        else:
            d = self._date(t)
            g = [("ADSC", self.meter, None), ("VTIC", "02", None), ("DATE", "", d),
                 ("NGTF", "H PLEINE/CREUSE ", None),
                 ("LTARF", " HEURE  CREUSE  " if off else " HEURE  PLEINE  ", None),
                 ("EAST", "%09d" % (hc + hp), None),
                 ("EASF01", "%09d" % hc, None), ("EASF02", "%09d" % hp, None)]
            for i in range(3, 11):
                g.append(("EASF%02d" % i, "000000000", None))
            g += [("EASD01", "%09d" % hc, None), ("EASD02", "%09d" % hp, None),
                  ("EASD03", "000000000", None), ("EASD04", "000000000", None)]
            phases = (1, 2, 3) if self.three else (1,)
            for i in phases:
                g.append(("IRMS%d" % i, "%03d" % (va // (230 * len(phases))), None))
            for i in phases:
                g.append(("URMS%d" % i, "230", None))
            g += [("PREF", "12" if self.three else "06", None), ("PCOUP", "12" if self.three else "06", None)]
            if self.three:
                for i in phases:
                    g.append(("SINSTS%d" % i, "%05d" % (va // 3), None))
            g.append(("SINSTS", "%05d" % va, None))
            if self.three:
                for i in phases:
                    g.append(("SMAXSN%d" % i, "%05d" % 4000, d))
                    g.append(("SMAXSN%d-1" % i, "%05d" % 4000, d))
            else:
                g += [("SMAXSN", "%05d" % 4000, d), ("SMAXSN-1", "%05d" % 4000, d)]
            g += [("CCASN", "%05d" % va, d), ("CCASN-1", "%05d" % va, d)]
            for i in phases:
                g.append(("UMOY%d" % i, "230", d))
            if self.three:
                for i in (1, 2, 3, 4):
                    g.append(("ERQ%d" % i, "000000000", None))
                for i in (1, 2, 3):
                    g.append(("DPM%d" % i, "00", d))
                    g.append(("FPM%d" % i, "00", d))
                g.append(("MSG2", "                ", None))
            g += [("STGE", "003A0001" if off else "003A4001", None),
                  ("MSG1", "PAS DE          MESSAGE         ", None),
                  ("PRM", "00000000000000", None), ("RELAIS", "000", None),
                  ("NTARF", "01" if off else "02", None), ("NJOURF", "00", None),
                  ("NJOURF+1", "00", None),
                  ("PJOURF+1", "00004001 06004002 22004001 NONUTILE NONUTILE NONUTILE "
                               "NONUTILE NONUTILE NONUTILE NONUTILE NONUTILE", None)]
            for k, v, h in g:
                parts.append(group("standard", k, v, h))
        parts.append(b"\x03")
        self.frames += 1
        return b"".join(parts)

    def _date(self, t):
        # The horodate: season letter and YYMMDDhhmmss (UTC here; the meter uses local time).
        import time
        tm = time.gmtime(int(t) - (946684800 if time.gmtime(0)[0] == 2000 else 0))
        return "H%02d%02d%02d%02d%02d%02d" % (tm[0] % 100, tm[1], tm[2], tm[3], tm[4], tm[5])

    def corrupt(self, fr):
        """Maybe one fault in this frame, chosen by the fault PRNG."""
        r = self.frng
        if self.faults <= 0 or r.random() >= self.faults:
            return fr
        kind = r.next() % 3
        i = 1 + r.next() % (len(fr) - 1)
        if kind == 0:
            self.injected["drop"] += 1
            return fr[:i] + fr[i + 1:]
        if kind == 1:
            self.injected["flip"] += 1
            b = bytearray(fr)
            b[i] ^= 1 << (r.next() % 7)
            return bytes(b)
        self.injected["truncate"] += 1
        return fr[:i]

    # ---- the UART -------------------------------------------------------------
    def tic_read(self, buf):
        now = self.line() if self.line else self.now()
        if self.t is None:
            self.t = now
        due = int((now - self.t) * self.cps)
        if due > self.rxbuf:
            # The agent did not read for too long: the rx buffer overflowed.
            self.overflow += due - self.rxbuf
            self.t = now - self.rxbuf / self.cps
            self.cur = b""
            self.pos = 0
            due = self.rxbuf
        n = 0
        room = len(buf)
        while n < room and due > 0:
            if self.pos >= len(self.cur):
                self.cur = self.corrupt(self.frame(self.now() if self.line else self.t))
                self.pos = 0
            k = min(room - n, due, len(self.cur) - self.pos)
            buf[n:n + k] = self.cur[self.pos:self.pos + k]
            n += k
            self.pos += k
            due -= k
            self.t += k / self.cps
        return n
