# homebox board glue: start the agent from /config.json and /secrets.json.
# On an ESP32 the HAL is "esp32"; anywhere else (the virtual box, the unix
# port) it is the simulated home, whose scenario a virtual box may provide.
import sys


def _exists(path):
    import os
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _scenario():
    try:
        import vboxenv
        return vboxenv.scenario
    except (ImportError, AttributeError):
        return None


def run():
    import asyncio

    from agent import config
    from agent.hal import load as load_hal
    from agent.runtime import Box

    overrides = {"hal": "esp32" if sys.platform == "esp32" else "sim"}
    if overrides["hal"] == "sim":
        sc = _scenario()
        if sc is not None:
            overrides["scenario"] = sc
    secrets = "/secrets.json" if _exists("/secrets.json") else None
    cfg = config.load("/config.json", secrets, overrides)
    print("homebox: agent starting, box %s, hal %s" % (cfg["box_id"], cfg["hal"]))
    box = Box(cfg, load_hal(cfg["hal"], cfg))
    asyncio.run(box.run())


try:
    run()
except KeyboardInterrupt:
    pass
except Exception as e:
    sys.print_exception(e)
    if sys.platform == "esp32":
        import time

        import machine
        time.sleep(5)
        machine.reset()
    raise
