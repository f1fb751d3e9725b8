# The ESP32 HAL's NTP sync (agent/hal/esp32.py), hourly: cold code of its own, so
# that each re-sync loads ~1 KB, not the whole of agent/hal/esp32_cold.py.
import asyncio
import struct
import time

import machine

from agent.compat import ticks_diff, ticks_ms
from agent.log import log

_NTP_DELTA = 2208988800      # 1900-01-01 to 1970-01-01


async def ntp_sync(hal) -> bool:
    # SNTP without blocking the loop: a non-blocking UDP socket polled from the
    # loop (ntptime.settime() blocks up to a second per try). The DNS lookup is
    # the one blocking step MicroPython leaves; give addresses to avoid it.
    import socket
    for srv in hal.config.get("ntp_servers") or ["pool.ntp.org"]:
        host, _, port = srv.partition(":")
        s = None
        try:
            addr = socket.getaddrinfo(host, int(port or 123))[0][-1]
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            q = bytearray(48)
            q[0] = 0x1B
            s.sendto(q, addr)
            t0 = ticks_ms()
            while ticks_diff(ticks_ms(), t0) < 2000:
                try:
                    m = s.recv(48)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                if len(m) >= 48 and m[1]:
                    _set_rtc(struct.unpack("!I", m[40:44])[0] - _NTP_DELTA)
                    first = not hal.synced
                    hal.synced = True
                    if first:
                        log("clock_set", "server", srv)
                    return True
        except Exception as e:
            log("ntp_failed", "server", srv, "reason", e)
        finally:
            if s is not None:
                s.close()
    return False


def _set_rtc(unix: int) -> None:
    t = time.gmtime(unix - (946684800 if time.gmtime(0)[0] == 2000 else 0))
    machine.RTC().datetime((t[0], t[1], t[2], t[6] + 1, t[3], t[4], t[5], 0))
