# Builds a Box from its configuration, then leaves RAM: everything here runs
# once per boot. Used by agent/hostmain.py (hosts) and firmware/main.py (boxes).
from agent.compat import forget


def build(cfg_path, secrets_path=None):
    import gc

    # The long-lived modules load first, so the boot-only ones freed below
    # leave a hole at the top of the heap instead of fragmenting it.
    from agent.runtime import Box
    gc.collect()
    from agent import config
    from agent.hal import load as load_hal
    cfg = config.load(cfg_path, secrets_path)
    hal = load_hal(cfg["hal"], cfg)
    del config, load_hal
    forget("agent.config")
    forget("agent.hal")
    gc.collect()
    box = Box(cfg, hal)
    gc.collect()
    if hasattr(gc, "threshold"):
        # MicroPython collects only when an allocation fails, by which time
        # the garbage of many cycles is scattered over the heap. Collecting
        # every few KiB keeps the freed holes few and large (fragmentation
        # was what broke a 64 KiB heap, not its size).
        gc.threshold(4096)
    return box
