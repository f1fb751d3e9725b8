# The ESP32 HAL: only what MicroPython's `network`, `machine`, `esp32`, `time`
# (and `socket` for NTP) give. `make check` type-checks it against
# micropython-esp32-stubs; a virtual box runs it on the emulated board (vbox/board/).
#
# Its task (start(), run by agent/runtime_cold.py) brings the network up: the
# tenant AP (wifi_ssid/wifi_key, WPA2), the uplink (config "uplink": "wifi" with
# uplink_ssid/uplink_key, or "lan" with config "lan": {phy, mdc, mdio, ...}), then
# the time (NTP, servers in "ntp_servers"), and watches both: a lost uplink is
# seen, the MQTT session is dropped at once (its outbox keeps the telemetry) and
# the link is brought back without a reboot. The connection waits in ready().
# It also feeds the hardware watchdog (machine.WDT, "wdt_ms") while the event
# loop and every guarded task are alive. The rarely-run parts are in
# agent/hal/esp32_cold.py, the hourly NTP sync in agent/hal/esp32_ntp.py.
import asyncio
import struct
import time

import machine
import network

from agent.compat import cold, ticks_add, ticks_diff, ticks_ms

# MicroPython's epoch on the ESP32 is 2000-01-01; the contract uses Unix time.
_EPOCH = 946684800 if time.gmtime(0)[0] == 2000 else 0
_MOD = "agent.hal.esp32_cold"


class Esp32Hal:
    name = "esp32"

    def __init__(self, config: dict) -> None:
        self.config = config
        self.synced = False          # the RTC was set by NTP
        self.online = asyncio.Event()  # the uplink has an address
        self.up_ms = 0               # uptime, accumulated over the ticks wrap
        self.t_ms = ticks_ms()
        self.ap = network.WLAN(network.AP_IF)
        # The STA interface scans the neighbours even when the uplink is Ethernet.
        self.sta = network.WLAN(network.STA_IF)
        self.up: object = None       # the uplink interface (WLAN or LAN)
        self.box: object = None
        self.boot_info: dict | None = cold(_MOD, "boot_info", self)
        cold(_MOD, "attach_meters", self, config)

    # ---- time -----------------------------------------------------------------
    def now(self):
        # Unknown until NTP has set the RTC: the agent then sends ts=null. Never blocks.
        return time.time() + _EPOCH if self.synced else None

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def uptime_s(self) -> int:
        t = ticks_ms()
        self.up_ms += ticks_diff(t, self.t_ms)
        self.t_ms = t
        return self.up_ms // 1000

    # ---- identity and health ------------------------------------------------------
    def mac(self) -> str:
        return ":".join("%02x" % b for b in machine.unique_id())

    def health(self) -> dict:
        # status('stations') gives MACs only: no per-station RSSI in AP mode.
        try:
            n: int | None = len(self.ap.status("stations"))  # type: ignore[arg-type]
        except Exception:
            n = None
        h = {"wifi_clients": n, "uptime_s": self.uptime_s(), "uplink": bool(self.online.is_set()),
             "clock_synced": self.synced}
        if self.boot_info is not None:
            # The first report: why the chip reset, how long the previous boot ran.
            h.update(self.boot_info)
            self.boot_info = None
        return h

    # ---- NVS (the boot counter's copy outside the filesystem) ----------------------
    def nvs_get(self, key: str) -> int | None:
        return cold(_MOD, "nvs_get", key)

    def nvs_set(self, key: str, value: int) -> None:
        cold(_MOD, "nvs_set", key, value)

    # ---- NVS blobs (the box's secrets, agent/secretstore.py) ----------------------
    def nvs_get_blob(self, key: str) -> bytes | None:
        return cold(_MOD, "nvs_get_blob", key)

    def nvs_set_blob(self, key: str, value: bytes) -> None:
        cold(_MOD, "nvs_set_blob", key, value)

    def enforce(self, section: str, doc: dict) -> None:
        # Nothing on the chip enforces parental rules or a lineup: the router
        # firmware does. The ESP32 only records what is in force.
        pass

    def leases(self) -> dict | None:
        # MicroPython gives no MAC to IP map: ESP-IDF's DHCP server keeps its
        # leases in C, and status('stations') has MACs only. The DNS forwarder
        # (agent/dns.py) then enforces per device nothing, and says so.
        return None

    # ---- coverage -------------------------------------------------------------------
    def stations(self) -> list:
        # MACs only (micropython#3818): rssi None, association time unknown.
        try:
            st: list = self.ap.status("stations")  # type: ignore[assignment]  # a list of (mac,) on the esp32
        except Exception:
            return []
        return [(s[0], None, None) for s in st]

    def scan(self) -> list:
        try:
            if not self.sta.active():
                self.sta.active(True)
            return self.sta.scan()
        except Exception:
            return []

    def channel(self) -> int:
        return self.ap.config("channel")

    def ap_info(self) -> dict:
        # What the AP interface itself says (the bench's AP check); its key
        # cannot be read back from the chip, only whether it asks for one.
        ap = self.ap
        up = bool(ap.active())
        sec = ap.config("security") if up else None
        return {"ssid": ap.config("ssid") if up else None, "up": up,
                "security": "open" if sec == 0 else "wpa2"}

    # ---- the network task and the watchdog ---------------------------------------------
    async def ready(self, tls: bool = False) -> None:
        # The connection waits for an address, and for a known clock before TLS
        # (certificate dates).
        await self.online.wait()
        while tls and not self.synced:
            await asyncio.sleep(1)

    async def start(self, box, tasks: list) -> None:
        self.box = box
        tasks.append(asyncio.create_task(box.guard("network", self.network_task)))
        await self.watchdog(box, tasks)

    async def network_task(self) -> None:
        cfg = self.config
        await cold(_MOD, "bring_up_ap", self)
        resync = ticks_ms()
        while True:
            up = self.up
            if up is None or not up.isconnected():  # type: ignore[attr-defined]
                if self.online.is_set():
                    cold(_MOD, "lost", self)
                await cold(_MOD, "bring_up_uplink", self)
                continue
            if not self.online.is_set():
                self.online.set()
            if ticks_diff(ticks_ms(), resync) >= 0:
                ok = await cold("agent.hal.esp32_ntp", "ntp_sync", self)
                # re-sync hourly; after a failure retry in 10 s, backing off to 5 min
                resync = ticks_add(ticks_ms(), 1000 * (cfg.get("ntp_resync_s", 3600) if ok else min(300, 10 + self.up_ms // 6000)))
            await asyncio.sleep(2)

    async def watchdog(self, box, tasks: list) -> None:
        ms = self.config.get("wdt_ms", 60000)
        if not ms:
            return
        wdt = machine.WDT(timeout=ms)
        n = 0
        while True:
            # Fed only from the event loop, and only while every guarded task runs:
            # a blocked loop, or a dead task, lets the chip reset.
            if box.failed is None and all(not t.done() for t in tasks):
                wdt.feed()
            n += 1
            if n % 10 == 0:
                # The uptime in RTC memory, for the reset cause after a bite (boot_info):
                # here, not in the cold half, which would load ~5 KB each time.
                try:
                    machine.RTC().memory(b"up" + struct.pack("<I", self.uptime_s()))
                except Exception:
                    pass
            await asyncio.sleep(ms / 4000)
