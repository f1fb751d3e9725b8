"""One box on one serial port, through esptool's Python API (esptool.cmds):
connect, read the chip, flash with MD5 verification while skipping what is
already there, reset. Like esptool's cmds.py, each function does one thing and
raises a typed failure (flashing.errors) instead of esptool's FatalError, so
the pipeline can answer each kind in its own way.

esptool's logger is one global object: use one process per port
(flashing.station does). `capture_esptool_log(fn)` routes that process's
esptool output to fn(line) and its progress bars to a callback.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import serial
from esptool import cmds
from esptool.logger import TemplateLogger, log
from esptool.util import FatalError

from flashing.errors import BadFlash, LinkLost, Md5Mismatch, NoSync, PortMissing

DEFAULT_BAUD = 921600
SAFE_BAUD = 115200
CHUNK = 0x10000            # the vfs goes in 64 KiB pieces: unchanged pieces are skipped by MD5
DEAD_FLASH_IDS = (0xFFFFFF, 0x000000)


@dataclass
class ChipInfo:
    chip: str
    description: str
    revision: str
    mac: str
    flash_id: str                 # JEDEC ID, 6 hex digits
    flash_size: str | None        # "4MB", ...; None if the ID names no size
    crystal_mhz: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class FlashReport:
    parts: int = 0
    skipped: int = 0
    bytes_total: int = 0
    bytes_written: int = 0        # uncompressed bytes actually rewritten
    retries: int = 0
    baud: int = DEFAULT_BAUD
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


# --- esptool's log --------------------------------------------------------------

class _Capture(TemplateLogger):
    def __init__(self, line: Callable[[str], None], progress: Callable[[int, int], None] | None):
        self.line = line
        self.progress = progress
        self.buf = ""

    def print(self, *args, **kwargs):
        end = kwargs.get("end", "\n")
        self.buf += " ".join(str(a) for a in args) + end
        while "\n" in self.buf:
            one, self.buf = self.buf.split("\n", 1)
            if one.strip():
                self.line(one.rstrip())

    def note(self, message):
        self.print("Note: " + message)

    def warning(self, message):
        self.print("Warning: " + message)

    def error(self, message):
        self.print("Error: " + message)

    def stage(self, finish=False):
        pass

    def progress_bar(self, cur_iter, total_iters, prefix="", suffix="", bar_length=30):
        if self.progress:
            self.progress(cur_iter, total_iters)

    def set_verbosity(self, verbosity):
        pass


def capture_esptool_log(line: Callable[[str], None], progress: Callable[[int, int], None] | None = None) -> _Capture:
    """Send this process's esptool output to line(text) and its progress bars
    to progress(done, total). Returns the logger (set .progress to change it)."""
    cap = _Capture(line, progress)
    log.set_logger(cap)
    return cap


# --- the device -----------------------------------------------------------------

def _open(port: str) -> serial.Serial:
    # timeout=3 as esptool's commands use it: over RFC 2217 every timeout
    # change renegotiates the port (docs/decisions/0002-virtual-box.md).
    try:
        return serial.serial_for_url(port, timeout=3)
    except (serial.SerialException, OSError, ValueError) as e:
        raise PortMissing(f"cannot open {port}: {e}") from None


class Device:
    """An esptool connection to one box. Use as a context manager."""

    def __init__(self, port: str, baud: int = DEFAULT_BAUD):
        self.port = port
        self.baud = baud
        self.esp = None
        self.info: ChipInfo | None = None

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.esp is not None:
            try:
                self.esp._port.close()
            except Exception:
                pass
            self.esp = None

    # step 1
    def connect(self, attempts: int = 3) -> None:
        """Sync with the ROM loader (esptool's classic reset), load the stub,
        raise the baud rate. NoSync if the chip never answers."""
        ser = _open(self.port)
        try:
            esp = cmds.detect_chip(ser, connect_attempts=attempts)
        except FatalError as e:
            ser.close()
            raise NoSync(_first_line(e)) from None
        except (serial.SerialException, OSError) as e:
            ser.close()
            raise NoSync(f"serial link error while connecting: {e}") from None
        try:
            esp = cmds.run_stub(esp)
            if self.baud != esp.ESP_ROM_BAUD:
                esp.change_baud(self.baud)
            cmds.attach_flash(esp)
        except FatalError as e:
            ser.close()
            raise NoSync(f"the chip answered but the flasher stub did not start: {_first_line(e)}") from None
        except (serial.SerialException, OSError) as e:
            ser.close()
            raise LinkLost(f"link lost while starting the flasher stub: {e}") from None
        self.esp = esp

    # step 2
    def identify(self) -> ChipInfo:
        """Chip, revision, MAC, flash ID and size. BadFlash (quarantine) for a
        flash that answers 0xFFFFFF or 0x000000."""
        esp = self.esp
        assert esp is not None
        try:
            mac = ":".join(f"{b:02x}" for b in esp.read_mac())
            fid = esp.flash_id() & 0xFFFFFF
            try:
                rev = f"v{esp.get_major_chip_version()}.{esp.get_minor_chip_version()}"
            except Exception:
                rev = "unknown"
            try:
                desc = esp.get_chip_description()
            except Exception:
                desc = esp.CHIP_NAME
            try:
                xtal = int(esp.get_crystal_freq())
            except Exception:
                xtal = None
        except FatalError as e:
            raise NoSync(f"the chip stopped answering: {_first_line(e)}") from None
        except (serial.SerialException, OSError) as e:
            raise LinkLost(f"link lost while reading the chip: {e}") from None
        size = None
        if fid not in DEAD_FLASH_IDS:
            size = cmds.DETECTED_FLASH_SIZES.get(fid >> 16)
        self.info = ChipInfo(esp.CHIP_NAME, desc, rev, mac, f"{fid:06x}", size, xtal)
        if fid in DEAD_FLASH_IDS:
            raise BadFlash(f"flash ID {fid:#08x}: the flash chip does not answer")
        if size is None:
            raise BadFlash(f"flash ID {fid:#08x} names no known flash size")
        return self.info

    # step 6
    def flash(self, parts: list[tuple[int, bytes]], progress: Callable[[float], None] | None = None,
              cap: _Capture | None = None, safe_baud: int = SAFE_BAUD, split: tuple[int, ...] = ()) -> FlashReport:
        """Write the parts, compressed and MD5-verified, skipping every piece
        whose MD5 on the box already matches. The parts at the offsets in
        `split` (the filesystem, which the box itself writes to) go in CHUNK
        pieces, so only the pieces that differ are written again. On an MD5
        mismatch, retry once at a lower baud; Md5Mismatch if it fails again."""
        pieces: list[tuple[int, bytes]] = []
        for off, data in parts:
            if off in split and len(data) > CHUNK:
                pieces += [(off + i, data[i:i + CHUNK]) for i in range(0, len(data), CHUNK)]
            else:
                pieces.append((off, data))
        pieces.sort()
        rep = FlashReport(parts=len(pieces), bytes_total=sum(len(d) for _, d in pieces), baud=self.baud)
        t0 = time.monotonic()
        for attempt in (1, 2):
            ok, skipped, written = self._write(pieces, progress, cap)
            rep.bytes_written += written
            if ok:
                rep.skipped = skipped
                rep.seconds = round(time.monotonic() - t0, 2)
                return rep
            if attempt == 2:
                break
            rep.retries += 1
            rep.baud = safe_baud
            try:
                self.esp.change_baud(safe_baud)
            except (FatalError, serial.SerialException, OSError) as e:
                raise LinkLost(f"link lost while lowering the baud rate: {e}") from None
        raise Md5Mismatch(f"MD5 mismatch after writing, also at {safe_baud} baud")

    def _write(self, pieces, progress, cap) -> tuple[bool, int, int]:
        """One write_flash pass: (verified, pieces skipped, bytes written);
        verified is False on an MD5 mismatch."""
        esp = self.esp
        assert esp is not None
        total = sum(len(d) for _, d in pieces) or 1
        where = {off: (sum(len(d) for o, d in pieces if o < off), len(data)) for off, data in pieces}
        state = {"cur": None, "skipped": 0, "written": 0}
        prev_line = cap.line if cap else None
        prev_prog = cap.progress if cap else None

        def line(text: str) -> None:
            m = re.match(r"Writing .* at (0x[0-9a-f]+)", text)
            if m:
                state["cur"] = int(m.group(1), 16)
            elif "already in flash, skipping write" in text:
                state["skipped"] += 1
                if progress and state["cur"] in where:
                    done, n = where[state["cur"]]
                    progress((done + n) / total)
            elif text.startswith("Wrote "):
                state["written"] += int(text.split()[1])
            if prev_line:
                prev_line(text)

        def prog(cur: int, n: int) -> None:
            if progress and state["cur"] in where and n:
                done, size = where[state["cur"]]
                progress((done + size * cur / n) / total)

        if cap:
            cap.line, cap.progress = line, prog
        try:
            if len(pieces) == 1:
                state["cur"] = pieces[0][0]
            cmds.write_flash(esp, pieces, skip_flashed=True, compress=True, flash_size="keep")
        except FatalError as e:
            msg = str(e)
            if "MD5 of file does not match" in msg or "written flash region is empty" in msg:
                return False, state["skipped"], state["written"]
            raise LinkLost(f"the box stopped answering during flashing: {_first_line(e)}") from None
        except (serial.SerialException, OSError) as e:
            raise LinkLost(f"link lost during flashing: {e}") from None
        finally:
            if cap:
                cap.line, cap.progress = prev_line, prev_prog
        if progress:
            progress(1.0)
        return True, state["skipped"], state["written"]

    # step 7
    def reset(self) -> None:
        """Hard reset through RTS: the box boots what was flashed."""
        esp = self.esp
        assert esp is not None
        try:
            cmds.reset_chip(esp, "hard-reset")
        except (FatalError, serial.SerialException, OSError) as e:
            raise LinkLost(f"link lost at reset: {e}") from None
        finally:
            self.close()


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__
