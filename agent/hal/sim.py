# A deterministic simulated home. Same seed, same home, on CPython and MicroPython:
# it uses its own PRNG (xorshift32) because the two `random` modules differ.
import asyncio
import time

from agent import fsutil


class XorShift:
    def __init__(self, seed):
        self.s = (seed & 0xFFFFFFFF) or 0x9E3779B9

    def next(self):
        x = self.s
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.s = x
        return x

    def random(self):
        return self.next() / 4294967296.0

    def randint(self, a, b):
        return a + self.next() % (b - a + 1)


# 2026-01-01T00:00:00Z: where a fresh sim clock starts unless told otherwise.
DEFAULT_SIM_EPOCH = 1767225600


class SimClock:
    """Sim time = origin + real elapsed x speedup, persisted so it never goes back."""

    def __init__(self, state_dir, speedup=1.0, start=None):
        self.speedup = float(speedup) if speedup else 1.0
        path = state_dir + "/simclock.json"
        saved = fsutil.read_json(path)
        real = time.time()
        if isinstance(saved, dict) and "sim" in saved:
            # Resume from the last persisted sim time: a power cut costs the
            # time since the last save, never a jump backwards.
            self.origin_sim = saved["sim"]
        else:
            self.origin_sim = start if start is not None else DEFAULT_SIM_EPOCH
        self.origin_real = real
        self.path = path
        self.save()

    def now(self):
        return self.origin_sim + (time.time() - self.origin_real) * self.speedup

    def save(self):
        fsutil.write_json(self.path, {"sim": self.now()})

    async def sleep(self, seconds):
        if seconds > 0:
            await asyncio.sleep(seconds / self.speedup)


class SimHal:
    name = "sim"

    def __init__(self, config):
        self.config = config
        self.rng = XorShift(config.get("seed", 1))
        sc = config.get("scenario") or {}
        self.scenario = sc
        fsutil.makedirs(config["state_dir"])
        self.clock = SimClock(config["state_dir"], config.get("speedup", 1), sc.get("start"))
        self.enforced = {}
        self._mac = sc.get("mac") or self._mac_from_id(config["box_id"])

    @staticmethod
    def _mac_from_id(box_id):
        h = 0
        for c in box_id.encode():
            h = (h * 31 + c) & 0xFFFFFFFF
        return "24:0a:c4:%02x:%02x:%02x" % ((h >> 16) & 255, (h >> 8) & 255, h & 255)

    def now(self):
        return self.clock.now()

    async def sleep(self, seconds):
        await self.clock.sleep(seconds)

    def mac(self):
        return self._mac

    def health(self):
        stations = self.scenario.get("stations") or []
        return {"wifi_clients": len(stations), "flash_ok": True}

    def enforce(self, section, doc):
        self.enforced[section] = doc.get("version")

    def enforce_parental(self, state):
        self.enforced["parental_state"] = state

    def enforce_lineup(self, channels):
        self.enforced["lineup"] = len(channels)
