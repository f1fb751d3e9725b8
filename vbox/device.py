"""One virtual ESP32 devkit: the auto-reset circuit, the boot decision, the ROM
loader in download mode, and MicroPython (the real unix-port interpreter) in app
mode, with its console on the serial link.

Auto-reset circuit of a devkit (two transistors between the USB-UART's DTR/RTS
and the chip's EN/IO0; "asserted" = logical True in pyserial):
    EN  is pulled low  when RTS is asserted and DTR is not;
    IO0 is pulled low  when DTR is asserted and RTS is not;
    otherwise both float high.
The RC on EN delays the chip leaving reset; the chip samples IO0 then:
low -> ROM download mode, high -> boot from flash.
"""
from __future__ import annotations

import concurrent.futures
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from firmware import partitions as pt
from firmware import toolchain
from vbox import chip
from vbox.flash import Flash
from vbox.loader import Loader, SlipDecoder, slip_encode

# Time from EN going high to the strap sample (the EN RC delay). Over RFC 2217
# each modem-line change waits for the server's acknowledgement, which pyserial
# polls every 50 ms, so IO0 falls ~50 ms after EN rises in esptool's classic
# reset and stays low ~100 ms: the RC constant is scaled to that link, with room
# for a loaded host, and IO0 low at any moment before the sample counts.
STRAP_DELAY = 0.25
ROM_BANNER = "ets Jul 29 2019 12:21:46\r\n\r\n"
DOWNLOAD_BOOT = "boot:0x3 (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))"
FLASH_BOOT = "boot:0x13 (SPI_FAST_FLASH_BOOT)"
TRACE = bool(os.environ.get("VBOX_TRACE"))
# The heap a box's agent gets is the `heap` a Device is given, as on a board whose
# ROM boot (in C) leaves that much for main.py. The interpreter gets ALLOWANCE
# more for what the emulation of that boot (vbox/apprunner.py, in Python here)
# holds; apprunner.py measures it at each boot and fills the rest of the allowance
# with a ballast. Its figures go to stats.json ("rom_boot_heap"); a negative
# ballast (the emulation outgrew the allowance) fails tests/test_agent_footprint.py.
ROM_BOOT_ALLOWANCE = 4096
# On the emulated ESP32 board (board "esp32") the board's modules (vbox/board/:
# network, machine, time, select, esp32, _board), which a board has in C, are
# loaded by apprunner.py before its measurement: ~23 KB of the interpreter's
# heap (docs/performance.md), given on top of the ROM boot's allowance.
BOARD_ALLOWANCE = 24576
HEAP_LINE = b"vbox:heap "
MP_BANNER = "MicroPython v{version} on vbox; Generic ESP32 module with ESP32"
FLASH_DATA_OPS = (chip.FLASH_DATA, chip.FLASH_DEFL_DATA)


class Device:
    def __init__(self, box_dir: Path, flash_size: int, mac: bytes, scenario: Path | None = None,
                 heap: str = "128k", micropython: str | None = None, mp_version: str = "1.29.0",
                 board: str = "none", speedup: float = 1.0):
        self.speedup = speedup       # box time on the emulated board (vbox/boardhost.py)
        self.dir = Path(box_dir)
        self.flash_size = flash_size
        self.flash = Flash(self.dir / "flash.bin", flash_size)
        self.mac = mac
        self.scenario = scenario
        self.heap = heap
        self.micropython = micropython or toolchain.micropython_exe()
        self.mp_version = mp_version
        self.lock = threading.RLock()
        self.spawner = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="cpu")
        self.tx: Callable[[bytes], None] = lambda data: None
        self.console = open(self.dir / "console.log", "ab", buffering=0)
        self.dtr = False
        self.rts = False
        self.en_low = False
        self.mode = "off"            # off, reset, download, app, halted
        self.uart_baud = 115200
        self.loader: Loader | None = None
        self.slip = SlipDecoder()
        self.app: subprocess.Popen | None = None
        self.boot_timer: threading.Timer | None = None
        self.strap_low = False
        self.generation = 0
        self.boots = 0
        self.stats = {"rx_bytes": 0, "tx_bytes": 0, "flash_bytes_written": 0, "loader_payload_bytes": 0}
        self.flash_rx = 0            # flash data bytes received in this download session
        self.link_down = False       # the link must drop now (a fault fired)
        # board "esp32": the CPU has the emulated ESP32 board (vbox/board/, its world
        # in vbox/boardhost.py) and the agent runs its ESP32 HAL; "none": the bare
        # unix port, where the agent falls back to the sim HAL.
        self.board = board
        self.host = None
        self.reset_cause = 1         # machine.reset_cause() of the next app boot

    # --- faults (tests and benches): faults.json in the box directory --------
    #   {"drop_link_after": N}  after N bytes of flash data the USB link drops and
    #                           the box stays unplugged ("unplugged": true) until
    #                           the file is removed (the technician re-plugs it)
    #   {"flash_id": "ffffff"}  the SPI flash answers this JEDEC ID (a dead chip)
    #   {"corrupt_write": 1}    the next flash write is corrupted once (MD5 mismatch)
    @property
    def faults_path(self) -> Path:
        return self.dir / "faults.json"

    def faults(self) -> dict:
        try:
            d = json.loads(self.faults_path.read_text())
            return d if isinstance(d, dict) else {}
        except (OSError, ValueError):
            return {}

    def _set_faults(self, d: dict) -> None:
        tmp = self.dir / "faults.json.tmp"
        tmp.write_text(json.dumps(d))
        os.replace(tmp, self.faults_path)

    def unplugged(self) -> bool:
        return bool(self.faults().get("unplugged"))

    # --- output ------------------------------------------------------------
    def emit(self, data: bytes | str, log: bool = True) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.stats["tx_bytes"] += len(data)
        if log:                      # console.log keeps the text, not the SLIP traffic
            try:
                self.console.write(data)
            except ValueError:
                pass
        self.tx(data)

    # --- power and pins ----------------------------------------------------
    def power_on(self) -> None:
        with self.lock:
            self._boot(reason="0x1 (POWERON_RESET)")

    def set_pins(self, dtr: bool | None = None, rts: bool | None = None) -> None:
        with self.lock:
            if dtr is not None:
                self.dtr = dtr
            if rts is not None:
                self.rts = rts
            en_low = self.rts and not self.dtr
            if TRACE:
                print(f"{time.monotonic():.4f} pins dtr={self.dtr} rts={self.rts} en_low={en_low} io0_low={self.io0_low()}",
                      file=sys.stderr, flush=True)
            if en_low and not self.en_low:
                self._enter_reset()
            elif self.en_low and not en_low:
                self._schedule_boot()
            elif not en_low and self.boot_timer is not None and self.io0_low():
                self.strap_low = True
            self.en_low = en_low

    def io0_low(self) -> bool:
        return self.dtr and not self.rts

    def _enter_reset(self) -> None:
        self.generation += 1
        if self.boot_timer:
            self.boot_timer.cancel()
            self.boot_timer = None
        self._stop_app()
        self.loader = None
        self.mode = "reset"

    def _schedule_boot(self) -> None:
        # IO0 low at any moment before the strap sample selects the ROM loader: on
        # a loaded host the sample may come after esptool has released IO0 (the
        # chip would boot the app and esptool's sync bytes reach the console)
        gen = self.generation
        self.strap_low = self.io0_low()

        def fire():
            with self.lock:
                if gen == self.generation and not self.en_low:
                    self.boot_timer = None
                    self._boot(reason="0x1 (POWERON_RESET)", download=self.strap_low or self.io0_low())

        self.boot_timer = threading.Timer(STRAP_DELAY, fire)
        self.boot_timer.daemon = True
        self.boot_timer.start()

    def _boot(self, reason: str, download: bool | None = None) -> None:
        self.generation += 1
        self._stop_app()
        self.boots += 1
        self.uart_baud = 115200
        # machine.reset_cause(): PWRON_RESET 1 (EN, power; the esp32 port reports a
        # brownout as this too), WDT_RESET 3, SOFT_RESET 5 (machine.reset()).
        self.reset_cause = 3 if "WDT" in reason else 5 if "SW_CPU" in reason else 1
        if self.reset_cause == 1 and self.host is not None:
            self.host.rtcmem = b""   # RTC memory does not survive a power-on reset
        if download is None:
            download = self.io0_low()
        if TRACE:
            print(f"{time.monotonic():.4f} boot download={download}", file=sys.stderr, flush=True)
        if download:
            self.mode = "download"
            self.slip = SlipDecoder()
            fid = self.faults().get("flash_id")
            self.flash_rx = 0
            self.loader = Loader(self.flash, chip.Registers(self.mac, self.flash_size, lambda: self.uart_baud,
                                                            None if fid is None else int(str(fid), 16)),
                                 self._send_packet, self._loader_event)
            self.emit(ROM_BANNER + f"rst:{reason},{DOWNLOAD_BOOT}\r\nwaiting for download\r\n")
        else:
            self.loader = None
            self.emit(ROM_BANNER + f"rst:{reason},{FLASH_BOOT}\r\n")
            self._boot_flash()

    # --- download mode -----------------------------------------------------
    def _send_packet(self, pkt: bytes) -> None:
        self.emit(slip_encode(pkt), log=False)

    def _loader_event(self, kind: str, value) -> None:
        if kind == "baud":
            self.uart_baud = int(value)
        elif kind == "exit":
            self._collect_loader_stats()
            if value == "run":
                self.mode = "app"
                threading.Thread(target=self._deferred_boot, args=(False, "0xc (SW_CPU_RESET)"), daemon=True).start()
            else:
                threading.Thread(target=self._deferred_boot, args=(True, "0xc (SW_CPU_RESET)"), daemon=True).start()

    def _deferred_boot(self, download: bool, reason: str) -> None:
        time.sleep(0.01)            # the reply goes out before the reset
        with self.lock:
            if not self.en_low:
                self._boot(reason, download=download)

    def _collect_loader_stats(self) -> None:
        if self.loader:
            self.stats["flash_bytes_written"] += self.loader.stats["flash_bytes_written"]
            self.stats["loader_payload_bytes"] += self.loader.stats["wire_payload_bytes"]
            self.loader.stats = {"flash_bytes_written": 0, "wire_payload_bytes": 0}

    def save_stats(self) -> None:
        """Counters for benches and tests, in stats.json (atomically replaced)."""
        self._collect_loader_stats()
        tmp = self.dir / "stats.json.tmp"
        tmp.write_text(json.dumps({"mode": self.mode, "boots": self.boots, **self.stats}))
        os.replace(tmp, self.dir / "stats.json")

    def rx(self, data: bytes) -> None:
        with self.lock:
            self.stats["rx_bytes"] += len(data)
            if self.mode == "download" and self.loader:
                for pkt in self.slip.feed(data):
                    if len(pkt) > 8 and pkt[0] == 0 and pkt[1] in FLASH_DATA_OPS and self._data_fault(pkt):
                        return
                    self.loader.handle(pkt)
                    if pkt[1:2] in (b"\x04", b"\x12", b"\x13") and self.loader:   # FLASH_END, DEFL_END, MD5
                        self.save_stats()
            elif self.mode == "app" and self.app and self.app.stdin:
                try:
                    self.app.stdin.write(data)
                    self.app.stdin.flush()
                except (BrokenPipeError, ValueError, OSError):
                    pass

    def _data_fault(self, pkt: bytes) -> bool:
        """Apply the faults that hit flash data; True if the link dropped."""
        self.flash_rx += len(pkt) - 8
        f = self.faults()
        if not f:
            return False
        after = f.get("drop_link_after")
        if after is not None and self.flash_rx >= int(after):
            f.pop("drop_link_after")
            f["unplugged"] = True
            self._set_faults(f)
            self.link_down = True
            self.slip = SlipDecoder()
            return True
        if f.get("corrupt_write") and self.loader is not None:
            f.pop("corrupt_write")
            self._set_faults(f)
            self.loader.corrupt_next = True
        return False

    # --- app mode ----------------------------------------------------------
    def _halt(self, lines: list[str]) -> None:
        """What a real chip does with nothing bootable: print and go round again."""
        self.mode = "halted"
        gen = self.generation

        def loop():
            for _ in range(5):
                with self.lock:
                    if gen != self.generation:
                        return
                    self.emit("".join(line + "\r\n" for line in lines))
                time.sleep(1.0)

        threading.Thread(target=loop, daemon=True).start()

    def _boot_flash(self) -> None:
        hdr = self.flash.read(pt.BOOTLOADER_OFFSET, 4)
        if hdr[0] != 0xE9:
            self._halt([f"invalid header: 0x{int.from_bytes(hdr, 'little'):08x}"])
            return
        try:
            table = pt.parse_table(self.flash.read(pt.PARTITION_TABLE_OFFSET, pt.PARTITION_TABLE_SIZE))
        except pt.PartitionError as e:
            self._halt([f"E (52) flash_parts: {e}", "E (56) boot: Failed to verify partition table",
                        "E (61) boot: load partition table error!"])
            return
        factory = next((p for p in table if p.type == pt.TYPE_APP), None)
        if factory is None or self.flash.read(factory.offset, 1) != b"\xe9":
            where = f"{factory.offset:#x}" if factory else "?"
            self._halt([f"E (468) esp_image: image at {where} has invalid magic byte (nothing flashed here?)",
                        "E (476) boot: Factory app partition is not bootable", "E (481) boot: No bootable app partitions in the partition table"])
            return
        try:
            vfs_off, vfs_size = pt.vfs_region(table, self.flash_size)
        except pt.PartitionError as e:
            self._halt([f"E (500) vbox: {e}"])
            return
        self.emit(f"I (30) boot: Loaded app from partition at offset {factory.offset:#x}\r\n")
        self.mode = "app"
        self._start_app(vfs_off, vfs_size)

    def _start_app(self, vfs_off: int, vfs_size: int) -> None:
        runner = Path(__file__).with_name("apprunner.py")
        banner = MP_BANNER.format(version=self.mp_version)
        allowance = ROM_BOOT_ALLOWANCE + (BOARD_ALLOWANCE if self.board == "esp32" else 0)
        cmd = [self.micropython, "-X", f"heapsize={heap_bytes(self.heap) + allowance}", str(runner), str(self.flash.path),
               str(vfs_off), str(vfs_size), str(self.scenario) if self.scenario else "-", banner,
               ":".join(f"{b:02x}" for b in self.mac), str(interpreter_base(self.micropython)),
               str(allowance)]
        if self.board == "esp32":
            if self.host is None:
                from vbox.boardhost import BoardHost
                sc = json.loads(self.scenario.read_text()) if self.scenario else None
                self.host = BoardHost(self.dir, sc, self._wdt_bite, speedup=self.speedup)
            self.host.booted()
            cmd += [str(self.host.port), str(self.reset_cause), self.host.rtcmem.hex() or "-", repr(float(self.speedup))]
        env = dict(os.environ)
        env["MICROPYPATH"] = ".frozen"
        # PR_SET_PDEATHSIG fires when the *thread* that forked exits, so the
        # interpreter is always started from one long-lived thread.
        self.app = self.spawner.submit(
            subprocess.Popen, cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=env, cwd=str(self.dir), preexec_fn=_die_with_parent).result()
        proc = self.app
        threading.Thread(target=self._pump_app, args=(proc,), daemon=True).start()

    def _pump_app(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        first = b""                  # until the emulation's heap line is through
        while True:
            try:
                data = os.read(fd, 4096)
            except OSError:
                break
            if not data:
                break
            if first is not None:
                first += data
                if b"\n" not in first and len(first) < 4096:
                    continue
                data, first = self._take_heap_line(first), None
                if not data:
                    continue
            with self.lock:
                if proc is self.app:
                    self.emit(data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
        # firmware/main.py exits with 3 where a real board would machine.reset()
        if proc.wait() == 3 and proc is self.app:
            threading.Thread(target=self._deferred_boot, args=(False, "0xc (SW_CPU_RESET)"), daemon=True).start()

    def _take_heap_line(self, data: bytes) -> bytes:
        if not data.startswith(HEAP_LINE):
            return data
        line, _, rest = data.partition(b"\n")
        fields = dict(kv.split(b"=", 1) for kv in line[len(HEAP_LINE):].split() if b"=" in kv)
        with self.lock:
            try:
                self.stats["rom_boot_heap"] = {k.decode(): int(v) for k, v in fields.items()}
            except ValueError:
                pass
            self.save_stats()
        return rest

    def _wdt_bite(self) -> None:
        """The hardware watchdog was not fed in time: the chip resets."""
        with self.lock:
            if self.mode == "app" and not self.en_low:
                self.emit("\r\n")
                self._boot(reason="0x7 (TG0WDT_SYS_RESET)", download=False)

    def _stop_app(self) -> None:
        proc, self.app = self.app, None
        if proc and proc.poll() is None:
            # EN low is a power cut for the CPU: no clean shutdown.
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        if proc:
            for s in (proc.stdin, proc.stdout):
                try:
                    if s:
                        s.close()
                except OSError:
                    pass

    def status(self) -> dict:
        with self.lock:
            self._collect_loader_stats()
            return {"mode": self.mode, "boots": self.boots, "stub": bool(self.loader and self.loader.stub),
                    "uart_baud": self.uart_baud, **self.stats}

    def close(self) -> None:
        with self.lock:
            self.generation += 1
            self._stop_app()
            if self.host is not None:
                self.host.close()
            self.flash.close()
            self.console.close()


@functools.cache
def interpreter_base(micropython: str) -> int:
    """What the interpreter itself holds of its heap at the start of a script: a
    board's runtime holds about as much before its boot runs."""
    r = subprocess.run([micropython, "-c", "import gc; gc.collect(); print(gc.mem_alloc())"],
                       capture_output=True, text=True, timeout=30)
    try:
        return int(r.stdout.strip())
    except ValueError:
        return 0


def heap_bytes(size: str) -> int:
    """ "64k" -> 65536, as MicroPython's -X heapsize reads it (k or m suffix)."""
    s = size.strip().lower()
    mult = {"k": 1024, "m": 1024 * 1024}.get(s[-1:], 1)
    return int(s[:-1] if mult > 1 else s) * mult


def _load_prctl():
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Resolved once here: dlopen in a forked child of a threaded process can deadlock.
_PRCTL = _load_prctl() if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """The CPU loses power with its box: if the vbox process dies (even by
    kill -9), the kernel kills the interpreter too (Linux PR_SET_PDEATHSIG)."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)            # PR_SET_PDEATHSIG


def load_identity(box_dir: Path, name: str) -> bytes:
    """The box's MAC, made once and kept in box.json (its eFuses)."""
    path = Path(box_dir) / "box.json"
    if path.exists():
        return chip.parse_mac(json.loads(path.read_text())["mac"])
    mac = chip.mac_for(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"name": name, "mac": ":".join(f"{b:02x}" for b in mac)}))
    return mac
