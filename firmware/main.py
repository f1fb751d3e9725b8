# homebox board glue: start the agent from /config.json and /secrets.json,
# with the serial console (agent/console.py) on the board's UART.
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


def _vboxenv(name):
    try:
        import vboxenv
        return getattr(vboxenv, name)
    except (ImportError, AttributeError):
        return None


def _fw():
    # /fw.json: what the bench built (firmware and agent versions); optional.
    import json
    try:
        with open("/fw.json") as f:
            d = json.loads(f.read())
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def _sim_scenario(cfg):
    # A virtual box's scenario file wins over the config's; the sim HAL then
    # reports the virtual chip's eFuse MAC, as machine.unique_id() does on an ESP32.
    sc = _vboxenv("scenario")
    if sc is None:
        sc = cfg.get("scenario")
    mac = _vboxenv("mac")
    if mac:
        if isinstance(sc, str):
            try:
                from agent.hal import sim_homes
                sc = sim_homes.home(sc)
            except (ImportError, AttributeError, ValueError):
                cfg["scenario"] = sc
                return
        sc = dict(sc or {})
        sc.setdefault("mac", mac)
    if sc is not None:
        cfg["scenario"] = sc


def run():
    import asyncio

    from agent import VERSION, config
    from agent.hal import load as load_hal
    from agent.runtime import Box

    hal = "esp32" if sys.platform == "esp32" else "sim"
    secrets = "/secrets.json" if _exists("/secrets.json") else None
    cfg = config.load("/config.json", secrets, {"hal": hal})
    if hal == "sim":
        _sim_scenario(cfg)
    fw = _fw()
    impl = sys.implementation
    print("homebox: firmware %s, MicroPython %s, agent %s build %s" % (
        fw.get("firmware") or "unknown", ".".join(str(x) for x in impl.version[:3]), VERSION,
        fw.get("agent_build") or "unknown"))
    print("homebox: agent starting, box %s, hal %s" % (cfg["box_id"], cfg["hal"]))
    box = Box(cfg, load_hal(hal, cfg))
    if cfg.get("console", True):
        from agent import console
        asyncio.run(console.serve(box, fw))
    else:
        asyncio.run(box.run())
    if box.failed:
        # A dead task (already logged) would leave a box that reports nothing for
        # years: restart, as the task watchdog of a real deployment would.
        print("homebox: an agent task failed; restarting")
        _restart()


def _restart():
    if sys.platform == "esp32":
        import time

        import machine
        time.sleep(5)
        machine.reset()
    raise SystemExit(3)          # the virtual box reboots on this code


try:
    run()
except KeyboardInterrupt:
    pass
except Exception as e:
    sys.print_exception(e)
    if sys.platform == "esp32":
        _restart()
    raise
