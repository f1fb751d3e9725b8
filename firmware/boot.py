# This file is executed on every boot (including wake-boot from deepsleep).
# homebox: nothing to do before main.py; the agent starts there.
import gc

gc.collect()
