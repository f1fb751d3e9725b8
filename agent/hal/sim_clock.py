# The sim home's clock: fast, persisted, never going back. Its own module so that
# the home's parts (agent/hal/sim_homes.py) use it without importing the HAL.
import asyncio
import time

from agent import fsutil

# 2026-01-01T00:00:00Z: where a fresh sim clock starts unless told otherwise.
DEFAULT_SIM_EPOCH = 1767225600


class SimClock:
    """Sim time = origin + real elapsed x speedup, persisted so it never goes back."""

    def __init__(self, state_dir, speedup=1.0, start=None):
        self.speedup = float(speedup) if speedup else 1.0
        path = state_dir + "/simclock.json"
        saved = fsutil.read_json(path)
        if isinstance(saved, dict) and "sim" in saved:
            # Resume from the last persisted sim time: a power cut costs the
            # time since the last save, never a jump backwards.
            self.origin_sim = saved["sim"]
        else:
            self.origin_sim = start if start is not None else DEFAULT_SIM_EPOCH
        self.origin_real = time.time()
        self.path = path
        self.save()

    def now(self):
        return self.origin_sim + (time.time() - self.origin_real) * self.speedup

    def save(self):
        fsutil.write_json(self.path, {"sim": self.now()})

    async def sleep(self, seconds):
        if seconds > 0:
            await asyncio.sleep(seconds / self.speedup)
