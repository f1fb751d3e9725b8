# ntptime for the emulated ESP32 board: micropython-lib's, in short. Blocking:
# a DNS lookup, then up to `timeout` seconds for the answer (agent/hal/esp32.py
# has its own non-blocking client and uses this module for nothing else).
import socket
import struct

host = "pool.ntp.org"
timeout = 1

_DELTA = 3155673600       # 1900-01-01 to 2000-01-01


def time():
    q = bytearray(48)
    q[0] = 0x1B
    a = socket.getaddrinfo(host, 123)[0][-1]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.sendto(q, a)
        m = s.recv(48)
    finally:
        s.close()
    return struct.unpack("!I", m[40:44])[0] - _DELTA


def settime():
    import time as _time

    import machine
    tm = _time.gmtime(time())
    machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6] + 1, tm[3], tm[4], tm[5], 0))
