"""The world around a virtual box's emulated ESP32 board (vbox/board/), in the vbox
host process: the radio (neighbour APs, the stations on our AP, the uplink), the
Linky on the TIC UART, the water meter on its GPIO, an NTP server on the virtual
network, and the hardware watchdog. The simulated home's parts are the sim HAL's
own simulators (agent/hal/sim_wifi.py, sim_linky.py, sim_water.py), run here on
CPython in real time, so that none of them sits in the agent's heap.

One UDP socket (127.0.0.1, an ephemeral port given to the board in its argv):
  board -> host  b"H" hello (the board's control socket), b"U1,9600,7,0,1,17,16,2048"
                 a UART opened (its own socket), b"W5000" a WDT started, b"F" a feed,
                 b"A{json}" the AP's config, b"C<ssid>" a STA connect, b"M<bytes>"
                 the RTC memory, b"T<K>" box time now runs at K/1000 x real time,
                 a 48-byte SNTP request (answered in box time)
  host -> board  b"S{json}\n" the radio's state, b"E27\n" an edge on GPIO27, the
                 TIC bytes (to a UART's socket), an SNTP reply
Box time (the board's clock, its NTP server, the simulated home's clocks) runs at
a speedup: the vbox option (--speedup) at power-on, then what the board says (the
config's "speedup", vbox/board/_board.py). The bytes on the TIC line and the
watchdog run in real time (a sped-up box is not reset for being slow).
The box directory's board.json ({"uplink": false}) unplugs the uplink ({"hang": true}
hangs the Wi-Fi driver until the watchdog resets the chip); the host
writes ap.json (the AP as the board configured it, the key as its SHA-256) and wdt.json (bites).
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

NTP_DELTA = 2208988800          # 1900-01-01 to 1970-01-01
TIC_BAUD = {"historic": 1200, "standard": 9600}
UART_WIRE = 64                  # bytes per UART datagram: a count, then up to 63 bytes


class BoardHost:
    def __init__(self, box_dir: Path, scenario: dict | None, on_wdt: Callable[[], None], seed: int = 1,
                 speedup: float = 1.0):
        self.dir = Path(box_dir)
        self.sc = scenario or {}
        self.on_wdt = on_wdt
        self.seed = seed
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.02)
        self.port = self.sock.getsockname()[1]
        self.ctl: tuple | None = None
        self.uarts: dict[int, dict] = {}
        self.wdt: float | None = None    # timeout, s
        self.hang_reset = False          # board.json's hang has been ended by a bite
        self.fed = 0.0
        self.rtcmem = b""
        self.stop = threading.Event()
        self.t0 = time.time()
        self.k = float(speedup or 1.0)     # box time: v0 + (real - r0) x k
        self.r0 = self.v0 = self.t0
        self.wifi = self.linky = self.water = None
        self.edges = 0
        self.water_pin: int | None = None
        self.offset: float | None = None
        self._sims()
        self.thread = threading.Thread(target=self._run, daemon=True, name="boardhost")
        self.thread.start()

    def _sims(self) -> None:
        from agent.hal import sim_homes
        sc = self.sc
        if isinstance(sc, str):
            sc = self.sc = sim_homes.home(sc)
        w = sc.get("wifi")
        if w:
            from agent.hal.sim_wifi import SimWifi
            self.wifi = SimWifi(w, self.seed, self.t0, self.vnow)
        lk = sc.get("linky")
        if lk:
            from agent.hal.sim_linky import SimLinky
            self.linky = SimLinky(self.vnow, lk.get("mode", "standard"), seed=lk.get("seed", 6 + self.seed),
                                  faults=lk.get("faults", 0.0), three_phase=lk.get("three_phase", False),
                                  base_w=lk.get("base_w", 350), line=time.time,
                                  # the wire cannot overflow: the board's rx FIFO is
                                  # the UART's socket (a starved host sends late, in a burst)
                                  rxbuf=1 << 24)
        wt = sc.get("water")
        if wt:
            from agent.hal.sim_water import SimWater
            self.water = SimWater(self.vnow, seed=wt.get("seed", 2 + self.seed), leak_lph=wt.get("leak_lph", 0.0),
                                  use=wt.get("use", True), quiet=wt.get("quiet"))

    def vnow(self) -> float:
        """Box time: the host's clock at the board's speedup."""
        return self.v0 + (time.time() - self.r0) * self.k

    def set_rate(self, k: float) -> None:
        now = time.time()
        self.v0, self.r0, self.k = self.vnow(), now, k

    # --- the radio's state -------------------------------------------------
    def _faults(self) -> dict:
        try:
            d = json.loads((self.dir / "board.json").read_text())
        except (OSError, ValueError):
            return {}
        return d if isinstance(d, dict) else {}

    def uplink(self) -> bool:
        return self._faults().get("uplink") is not False

    def hang(self) -> bool:
        # A Wi-Fi driver call that never returns, once: the reset the watchdog
        # causes clears it, as a real chip's reset clears a stuck driver.
        return self._faults().get("hang") is True and not self.hang_reset

    def state(self) -> dict:
        st: dict = {"uplink": self.uplink()}
        if self.hang():
            st["hang"] = True
        if self.wifi is not None:
            st["stations"] = [m for m, _rssi, _s in self.wifi.stations()]
            # AUTH_WPA2_PSK (3), not hidden: the sim's neighbours are home routers.
            st["scan"] = [[s, b, c, r, 3, 0] for s, b, c, r in self.wifi.scan(self.vnow())]
        return st

    # --- the loop ----------------------------------------------------------
    def _run(self) -> None:
        last_state = 0.0
        sent = None
        while not self.stop.is_set():
            try:
                data, addr = self.sock.recvfrom(2048)
                self._rx(data, addr)
            except TimeoutError:
                pass
            except OSError:
                if self.stop.is_set():
                    return
            now = time.time()
            if self.ctl is not None and now - last_state >= 1.0:
                st = json.dumps(self.state()).encode()
                if st != sent or now - last_state >= 5.0:
                    self._send(b"S" + st + b"\n", self.ctl)
                    sent = st
                last_state = now
            self._tic()
            self._water()
            if self.wdt is not None and time.monotonic() - self.fed > self.wdt:
                self.wdt = None
                self.hang_reset = self.hang_reset or self.hang()
                self._log_wdt()
                self.on_wdt()

    def _send(self, data: bytes, addr) -> None:
        try:
            self.sock.sendto(data, addr)
        except OSError:
            pass

    def _rx(self, data: bytes, addr) -> None:
        k = data[:1]
        if len(data) == 48 and data[0] & 7 == 3:           # an SNTP client request
            t = self.vnow() + self.clock_offset() + NTP_DELTA
            sec, frac = int(t), int((t % 1) * 2 ** 32)
            reply = bytearray(48)
            reply[0] = 0x1C                                 # LI 0, version 3, server
            reply[1] = 2
            reply[24:32] = data[40:48]                      # originate = the client's transmit
            reply[32:40] = reply[40:48] = struct.pack("!II", sec, frac)
            self._send(bytes(reply), addr)
        elif k == b"H":
            self.ctl = addr
        elif k == b"U":
            f = data[1:].decode().split(",")
            self.uarts[int(f[0])] = {"addr": addr, "baud": int(f[1]), "bits": int(f[2]),
                                     "parity": f[3], "tx": f[5], "rx": f[6], "rxbuf": f[7], "t": time.time()}
            (self.dir / "uart.json").write_text(json.dumps({str(k): {x: v for x, v in u.items() if x != "addr"}
                                                            for k, u in self.uarts.items()}))
        elif k == b"W":
            self.wdt = int(data[1:]) / 1000.0
            self.fed = time.monotonic()
        elif k == b"F":
            self.fed = time.monotonic()
        elif k == b"A":
            # What a Wi-Fi adapter near the box can confirm: the SSID, security and
            # channel it beacons, and whether a key joins it. The key itself is never
            # written down (the box directory is no place for a secret): its SHA-256.
            tmp = self.dir / "ap.json.tmp"
            try:
                ap = json.loads(data[1:])
                key = ap.pop("key", None)
                ap["key_sha256"] = hashlib.sha256(key.encode()).hexdigest() if isinstance(key, str) and key else None
                tmp.write_text(json.dumps(ap))
            except (ValueError, AttributeError):
                return
            os.replace(tmp, self.dir / "ap.json")
        elif k == b"I":
            self.water_pin = int(data[1:])
        elif k == b"M":
            self.rtcmem = data[1:]
        elif k == b"T":
            self.set_rate(int(data[1:]) / 1000.0)

    def clock_offset(self) -> float:
        # board.json {"hour_end_in_s": N}: the virtual network's time is set, at its
        # first NTP answer, N seconds before the end of an hour (tests of the
        # hourly reports need not wait for one); fixed for the host's lifetime.
        if self.offset is None:
            n = None
            try:
                n = json.loads((self.dir / "board.json").read_text()).get("hour_end_in_s")
            except (OSError, ValueError, AttributeError):
                pass
            now = self.vnow()
            self.offset = 0.0 if n is None else (3600 - now % 3600) - float(n)
        return self.offset

    def _tic(self) -> None:
        # The Linky's line at its baud rate; a UART at another rate, or not 7E1,
        # reads garbage (what a misconfigured UART gets off the wire).
        lk = self.linky
        if lk is None or not self.uarts or self.sc.get("linky", {}).get("silent"):
            return          # no meter, no UART open, or a meter wired but silent
        u = next(iter(self.uarts.values()))
        ok = u["baud"] == TIC_BAUD.get(lk.mode) and u["bits"] == 7 and u["parity"] == "0"
        buf = bytearray(UART_WIRE - 1)
        while True:              # all that is due: a loaded host catches up at once
            n = lk.tic_read(buf)
            if not n:
                return
            out = bytes(buf[:n]) if ok else bytes((b * 37 + 0x80) & 0xFF for b in buf[:n])
            # one datagram of exactly UART_WIRE bytes: the count, then the bytes
            # (the board reads whole datagrams only: vbox/board/machine.py)
            self._send(bytes((n,)) + out + bytes(UART_WIRE - 1 - n), u["addr"])
            if n < len(buf):
                return

    def _water(self) -> None:
        if self.water is None or self.ctl is None or self.water_pin is None:
            return
        for _ in self.water.water_edges():
            self.edges += 1
            self._send(b"E%d\n" % self.water_pin, self.ctl)

    def _log_wdt(self) -> None:
        with open(self.dir / "wdt.json", "a") as f:
            f.write(json.dumps({"bite": time.time()}) + "\n")

    def booted(self) -> None:
        """A new boot of the board: its sockets and its watchdog are new."""
        self.ctl = None
        self.uarts = {}
        self.wdt = None
        self.water_pin = None

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
