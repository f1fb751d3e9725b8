# The ESP32 HAL's cold code (agent/hal/esp32.py): the boot's reset facts, the
# meters, bringing up the AP and the uplink. Loaded when it runs, then released
# (agent/compat.py cold()). The hourly NTP sync is agent/hal/esp32_ntp.py.
import asyncio
import struct

import machine
import network

from agent.compat import ticks_diff, ticks_ms
from agent.log import log

# machine.reset_cause(): the esp32 port maps ESP_RST_BROWNOUT to PWRON_RESET, so a
# brownout reads as a power-on (telling them apart needs a C patch).
_CAUSES = {machine.PWRON_RESET: "power_on", machine.HARD_RESET: "hard", machine.WDT_RESET: "watchdog",
           machine.DEEPSLEEP_RESET: "deepsleep", machine.SOFT_RESET: "soft"}


def boot_info(hal) -> dict:
    # The reset cause, and the previous boot's uptime kept in RTC memory (it
    # survives every reset but a power-on: then it is unknown, null).
    cause = machine.reset_cause()
    prev = None
    try:
        m = machine.RTC().memory()
        if cause != machine.PWRON_RESET and len(m) >= 6 and m[:2] == b"up":
            prev = struct.unpack("<I", m[2:6])[0]
    except Exception:
        pass
    return {"reset_cause": _CAUSES.get(cause, "unknown"), "prev_uptime_s": prev}


def nvs_get(key: str) -> int | None:
    # The "homebox" namespace of the nvs partition: a filesystem re-flash keeps
    # it, erase_flash wipes it. None when the key was never set.
    import esp32
    try:
        return esp32.NVS("homebox").get_i32(key)
    except OSError:
        return None


def nvs_set(key: str, value: int) -> None:
    import esp32
    n = esp32.NVS("homebox")
    n.set_i32(key, value)
    n.commit()


# A blob at most this long (the secrets' JSON is ~300 bytes): NVS.get_blob fills
# a buffer the caller sizes.
_BLOB_MAX = 1024


def nvs_get_blob(key: str) -> bytes | None:
    import esp32
    buf = bytearray(_BLOB_MAX)
    try:
        n = esp32.NVS("homebox").get_blob(key, buf)
    except OSError:
        return None
    return bytes(buf[:n])


def nvs_set_blob(key: str, value: bytes) -> None:
    # NVS writes the new entry before it erases the old one: a power cut leaves
    # either, never a mix.
    import esp32
    if len(value) > _BLOB_MAX:
        raise ValueError("blob too long")
    n = esp32.NVS("homebox")
    n.set_blob(key, value)
    n.commit()


def attach_meters(hal, config: dict) -> None:
    # The meters the config enables, as the optional HAL methods (their bound
    # methods, and the pin's irq, keep the meter objects).
    mode = config.get("tic_mode")
    if not (mode or config.get("water_enabled")):
        return
    from agent.hal import esp32_meters as em
    if mode:
        tic = em.TicUart(config.get("tic_uart", 1), config.get("tic_rx_pin", 16), mode,
                         config.get("tic_tx_pin", 17))
        hal.tic_read = tic.read
        hal.tic_set_mode = tic.set_mode
    if config.get("water_enabled"):
        hal.water_edges = em.WaterPulses(config.get("water_pin", 27),
                                         config.get("water_debounce_ms", 80)).read


async def bring_up_ap(hal) -> None:
    # The tenant's access point, with the SSID and key on the sticker (WPA2).
    cfg = hal.config
    ssid = cfg.get("wifi_ssid")
    if not ssid:
        log("ap_off", "reason", "no wifi_ssid in the config")
        return
    ap = hal.ap
    ap.active(True)
    kw = {"ssid": ssid, "key": cfg.get("wifi_key") or "", "security": 3}   # AUTH_WPA2_PSK
    if cfg.get("ap_channel"):
        kw["channel"] = cfg["ap_channel"]
    ap.config(**kw)
    log("ap_up", "ssid", ssid, "channel", ap.config("channel"))


async def bring_up_uplink(hal) -> None:
    # One attempt: the uplink the config chooses, then up to 20 s for an address.
    cfg = hal.config
    up = hal.up
    if up is None:
        if cfg.get("uplink", "wifi") == "lan":
            lan: dict = dict(cfg.get("lan") or {})
            if "mdc" in lan:
                lan["mdc"] = machine.Pin(lan["mdc"])
            if "mdio" in lan:
                lan["mdio"] = machine.Pin(lan["mdio"])
            if "power" in lan and lan["power"] is not None:
                lan["power"] = machine.Pin(lan["power"])
            if "phy_type" not in lan:
                lan["phy_type"] = getattr(network, "PHY_LAN8720", 0)
            up = network.LAN(0, **lan)
        else:
            up = hal.sta
        hal.up = up
    up.active(True)
    if up is hal.sta:
        ssid = cfg.get("uplink_ssid")
        if not ssid:
            log("uplink_off", "reason", "no uplink_ssid in the config")
            await asyncio.sleep(60)
            return
        try:
            hal.sta.disconnect()
            hal.sta.connect(ssid, cfg.get("uplink_key") or "")
        except OSError as e:
            log("uplink_failed", "reason", e)
    t0 = ticks_ms()
    while ticks_diff(ticks_ms(), t0) < 20000:
        if up.isconnected():
            log("uplink_up", "ip", up.ifconfig()[0])
            return
        await asyncio.sleep(0.5)
    log("uplink_wait", "status", up.status())
    await asyncio.sleep(5)


def lost(hal) -> None:
    # The uplink went away: say so, and drop the MQTT session now instead of at
    # its keepalive timeout; the telemetry waits in the outbox.
    hal.online.clear()
    log("uplink_lost")
    c = getattr(hal.box, "client", None)
    if c is not None:
        asyncio.create_task(c.close("uplink lost"))
