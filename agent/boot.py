# The one way a Box is built, on a board (firmware/main.py: board()) and on a
# host (agent/hostmain.py: build()): configuration, HAL, Box, then the heap
# hygiene that lets the agent live in 64 KiB. Everything here runs once per boot
# and then leaves RAM (the caller forgets this module).
import sys

from agent.compat import forget


def build(cfg_path, secrets_path=None, overrides=None, prepare=None):
    # prepare(cfg): the board's last word on the configuration before the HAL
    # is loaded (a virtual box's scenario and eFuse MAC).
    import gc

    # The long-lived modules load first, so the boot-only ones freed below
    # leave a hole at the top of the heap instead of fragmenting it.
    from agent.runtime import Box
    gc.collect()
    from agent import config
    from agent.hal import load as load_hal
    cfg = config.load(cfg_path, secrets_path, overrides)
    if prepare is not None:
        prepare(cfg)
    hal = load_hal(cfg["hal"], cfg)
    if getattr(hal, "nvs_set_blob", None) is not None:
        # the ESP32: the secrets live in NVS, /secrets.json only until it is copied there
        from agent.compat import cold
        cold("agent.secretstore", "boot", cfg, hal, secrets_path)
    del config, load_hal
    forget("agent.config")
    forget("agent.hal")
    gc.collect()
    box = Box(cfg, hal)
    gc.collect()
    if hasattr(gc, "threshold"):
        # MicroPython collects only when an allocation fails, by which time
        # the garbage of many cycles is scattered over the heap. Collecting
        # every 2 KiB keeps the freed holes few and large (fragmentation
        # was what broke a 64 KiB heap, not its size; 4 KiB failed now and
        # then on the board boot path: docs/performance.md).
        gc.threshold(2048)
    return box


def board():
    # A board's boot, from its filesystem: /config.json and /secrets.json (written
    # by the bench), /fw.json (what the bench built). On an ESP32, and on a
    # virtual box's emulated ESP32 board, the HAL is "esp32"; anywhere else (the
    # bare unix port) the simulated home.
    # Returns (box, fw) once the banner is out.
    from agent import VERSION
    fw = _fw()
    impl = sys.implementation
    print("homebox: firmware %s, MicroPython %s, agent %s build %s" % (
        fw.get("firmware") or "unknown", ".".join(str(x) for x in impl.version[:3]), VERSION,
        fw.get("agent_build") or "unknown"))
    hal = "esp32" if sys.platform == "esp32" or _vboxenv("board") else "sim"
    secrets = "/secrets.json" if _exists("/secrets.json") else None
    box = build("/config.json", secrets, {"hal": hal}, _sim_scenario if hal == "sim" else _vnet)
    print("homebox: agent starting, box %s, hal %s" % (box.cfg["box_id"], box.cfg["hal"]))
    return box, fw


def _exists(path):
    import os
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _fw():
    import json
    try:
        with open("/fw.json") as f:
            d = json.loads(f.read())
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def _vboxenv(name):
    try:
        import vboxenv
        return getattr(vboxenv, name)
    except (ImportError, AttributeError):
        return None


def _board_cfg(cfg):
    # On a board the agent's releases live in /ota (firmware/otaboot.py).
    if "ota_dir" not in cfg:
        cfg["ota_dir"] = "/ota"


def _vnet(cfg):
    # A virtual box's emulated board (vbox/board/): its virtual network's NTP
    # server is the vbox host, as a DHCP server would hand it out.
    # The config's speedup runs the board's box time fast (vbox/board/_board.py):
    # ticks, sleeps and the host's NTP answers alike.
    _board_cfg(cfg)
    port = _vboxenv("board")
    if port:
        cfg["ntp_servers"] = ["127.0.0.1:%d" % port]
        sp = cfg.get("speedup") or 1
        if sp != 1:
            import _board
            _board.rate(sp)


def _sim_scenario(cfg):
    # A virtual box's scenario file wins over the config's; the sim HAL then
    # reports the virtual chip's eFuse MAC, as machine.unique_id() does on an ESP32.
    _board_cfg(cfg)
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
