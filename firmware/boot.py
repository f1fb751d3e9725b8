# This file is executed on every boot (including wake-boot from deepsleep).
# homebox: the agent starts in main.py. Here: which agent slot this boot runs
# (over-the-air releases, firmware/otaboot.py), first on sys.path; on a trial
# boot otaboot stays loaded for main.py (the health check).
import gc
import os
import sys

try:
    os.stat("/ota/boot.json")
    import otaboot
    d = otaboot.pick()
    if d:
        sys.path.insert(0, d)
    if otaboot.trial() is None:
        del sys.modules["otaboot"]
    del otaboot, d
except OSError:
    pass
gc.collect()
