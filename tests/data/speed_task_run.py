# Drives agent.speedsched.task with a stand-in box, under CPython or MicroPython:
#     <interp> speed_task_run.py URL STATE_DIR
# Three sim nights; the box has no line_idle() (like the ESP32), so the connect-latency
# probe decides from the second run on. Prints one "REC <json>" per emitted record.
# After the second run the baseline is set lower than any connect can be, so on the
# third night the probe finds the line busy all night.
import asyncio
import json
import sys

from agent import fsutil, speedsched

DAY = 1767225600 + 23 * 3600    # 23:00 UTC: after any slot of a [0, 24] window


class Hal:
    def __init__(self):
        self.t = DAY

    def now(self):
        return self.t

    async def sleep(self, s):
        self.t += s
        await asyncio.sleep(0)


class Twin:
    applied = {"options": {"version": 2, "speed_tier": "5M"}}


class Box:
    def __init__(self, url, sd):
        self.id = "box-t"
        self.cfg = {"speed_url": url, "state_dir": sd, "speed_window": [0, 24],
                    "speed_seconds": 3, "speed_budget": 2000000, "speed_streams": 2}
        self.hal = Hal()
        self.twin = Twin()
        self.stop = asyncio.Event()
        self.recs = []

    def emit(self, kind, data):
        print("REC " + json.dumps(data))
        self.recs.append(data)
        if len(self.recs) == 2:
            st = fsutil.read_json(self.cfg["state_dir"] + "/speed.json", {})
            st["base_ms"] = -1000
            fsutil.write_json(self.cfg["state_dir"] + "/speed.json", st)
        if len(self.recs) >= 3:
            self.stop.set()
        self.hal.t = (self.hal.t // 86400 + 1) * 86400 + 23 * 3600   # the next sim night


async def main():
    b = Box(sys.argv[1], sys.argv[2])
    await asyncio.wait_for(speedsched.task(b), 120)

asyncio.run(main())
