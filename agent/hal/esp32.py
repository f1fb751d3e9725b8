# The ESP32 HAL: only what MicroPython's `network`, `machine` and `esp32` give.
# It cannot run on a host; `make check` type-checks it against micropython-esp32-stubs.
import asyncio
import time

import machine
import network

# MicroPython's epoch on the ESP32 is 2000-01-01; the contract uses Unix time.
_EPOCH_OFFSET = 946684800


class Esp32Hal:
    name = "esp32"

    def __init__(self, config: dict) -> None:
        self.config = config
        self.ap = network.WLAN(network.AP_IF)
        self._synced = False

    def now(self):
        # Unknown until NTP has set the RTC: the agent then sends ts=null.
        if not self._synced:
            try:
                import ntptime
                ntptime.settime()
                self._synced = True
            except Exception:
                return None
        return time.time() + _EPOCH_OFFSET

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def mac(self) -> str:
        raw = machine.unique_id()
        return ":".join("%02x" % b for b in raw)

    def health(self) -> dict:
        # status('stations') gives MACs only: no per-station RSSI in AP mode.
        try:
            stations = self.ap.status("stations")
            count = len(stations) if isinstance(stations, list) else 0
        except Exception:
            count = None
        return {"wifi_clients": count, "flash_ok": True}

    def enforce(self, section: str, doc: dict) -> None:
        # The enforcer (firewall and DNS rules) lives in the router firmware; the
        # ESP32 prototype only records what is in force.
        pass
