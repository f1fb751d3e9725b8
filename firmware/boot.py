# This file is executed on every boot (including wake-boot from deepsleep).
# homebox: the agent starts in main.py. Here: which agent slot this boot runs
# (over-the-air releases, firmware/otaboot.py), first on sys.path.
import gc
import os
import sys

try:
    os.stat("/ota/boot.json")
    import otaboot
    d = otaboot.pick()
    if d:
        sys.path.insert(0, d)
    del otaboot, d
    del sys.modules["otaboot"]
except OSError:
    pass
gc.collect()
