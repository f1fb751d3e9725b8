"""The ESP32 serial download protocol, as the ROM loader and then the esptool
flasher stub answer it. Requests and responses are SLIP packets:

    request:  0x00, op (u8), size (u16), checksum (u32), data
    response: 0x01, op (u8), size (u16), value (u32), data + status

The ROM's status is 4 bytes (status, error, 0, 0), the stub's is 2. The stub is
"uploaded" with MEM_BEGIN/MEM_DATA/MEM_END like any RAM image; we accept it and
from then on answer as the stub does (greeting "OHAI", compressed writes sized
in uncompressed bytes, erase as it writes, READ_FLASH with flow control, binary
MD5). The stub code itself never runs: the vbox only swaps the CPU.
"""
from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections.abc import Callable

from vbox import chip
from vbox.flash import SECTOR, Flash, FlashError

SLIP_END, SLIP_ESC = 0xC0, 0xDB
TRACE = bool(os.environ.get("VBOX_TRACE"))


def slip_encode(packet: bytes) -> bytes:
    return b"\xc0" + packet.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + b"\xc0"


class SlipDecoder:
    def __init__(self):
        self.buf = bytearray()
        self.in_frame = False
        self.esc = False

    def feed(self, data: bytes) -> list[bytes]:
        out = []
        for b in data:
            if b == SLIP_END:
                if self.in_frame and self.buf:
                    out.append(bytes(self.buf))
                self.buf.clear()
                self.in_frame = True
                self.esc = False
            elif not self.in_frame:
                continue
            elif self.esc:
                self.buf.append({0xDC: 0xC0, 0xDD: 0xDB}.get(b, b))
                self.esc = False
            elif b == SLIP_ESC:
                self.esc = True
            else:
                self.buf.append(b)
        return out


class Loader:
    """One boot into download mode. `send(packet)` transmits a response packet;
    `events(kind, value)` tells the device about "baud" changes and "exit"
    (value "reboot" or "run")."""

    def __init__(self, flash: Flash, regs: chip.Registers, send: Callable[[bytes], None],
                 events: Callable[[str, object], None]):
        self.flash = flash
        self.regs = regs
        self.send = send
        self.events = events
        self.stub = False
        self.stub_image = hashlib.sha256()
        self.write: dict | None = None        # the flash write in progress
        self.read: dict | None = None         # the stub READ_FLASH in progress
        self.stats = {"flash_bytes_written": 0, "wire_payload_bytes": 0}
        self.corrupt_next = False             # a fault: flip one bit of the next write

    # --- responses -------------------------------------------------------
    def _reply(self, op: int, val: int = 0, data: bytes = b"", status: int = 0, err: int = 0) -> None:
        st = bytes([status, err]) if self.stub else bytes([status, err, 0, 0])
        body = data + st
        self.send(struct.pack("<BBHI", 1, op, len(body), val) + body)

    def _fail(self, op: int, err: int) -> None:
        self._reply(op, status=1, err=err)

    # --- dispatch --------------------------------------------------------
    def handle(self, pkt: bytes) -> None:
        if self.read is not None and len(pkt) == 4:
            self._read_ack(struct.unpack("<I", pkt)[0])
            return
        if len(pkt) < 8 or pkt[0] != 0:
            return
        _, op, size, chk = struct.unpack("<BBHI", pkt[:8])
        data = pkt[8:8 + size]
        if TRACE:
            import sys
            import time
            print(f"{time.monotonic():.3f} cmd {op:#04x} {data[:16].hex()}", file=sys.stderr, flush=True)
        self.stats["wire_payload_bytes"] += len(data)
        fn = self.HANDLERS.get(op)
        if fn is None or (op in self.STUB_ONLY and not self.stub):
            self._fail(op, chip.ERR_INVALID_MSG)
            return
        try:
            fn(self, op, data, chk)
        except (struct.error, FlashError, zlib.error, ValueError):
            self._fail(op, chip.ERR_FAILED)

    def _sync(self, op, data, chk):
        if data[:4] != b"\x07\x07\x12\x20":
            return
        val = 0 if self.stub else chip.ROM_SYNC_VAL
        for _ in range(8):
            self._reply(op, val)

    def _read_reg(self, op, data, chk):
        (addr,) = struct.unpack("<I", data[:4])
        self._reply(op, self.regs.read(addr))

    def _write_reg(self, op, data, chk):
        addr, value, mask = struct.unpack("<III", data[:12])
        self.regs.write(addr, value, mask)
        self._reply(op)

    def _mem_begin(self, op, data, chk):
        self._reply(op)

    def _mem_data(self, op, data, chk):
        size = struct.unpack("<I", data[:4])[0]
        block = data[16:16 + size]
        if self._checksum(block) != chk & 0xFF:
            self._fail(op, chip.ERR_BAD_CRC)
            return
        self.stub_image.update(block)
        self._reply(op)

    def _mem_end(self, op, data, chk):
        no_entry, entry = struct.unpack("<II", data[:8])
        self._reply(op)
        if not no_entry and entry:
            # The uploaded code (esptool's stub) starts and greets the host.
            self.stub = True
            self.send(b"OHAI")

    def _ok(self, op, data, chk):
        self._reply(op)

    def _spi_set_params(self, op, data, chk):
        _, total, *_ = struct.unpack("<IIIIII", data[:24])
        self._reply(op)

    def _change_baud(self, op, data, chk):
        # (esptool scales the ROM's rate by the ROM's crystal estimate, which is
        # exactly 40 MHz on this chip, so the number is the rate.)
        new, _old = struct.unpack("<II", data[:8])
        self._reply(op)
        self.events("baud", new)

    # --- flash writes ----------------------------------------------------
    def _begin(self, op, data, compressed: bool):
        size, blocks, block_size, offset = struct.unpack("<IIII", data[:16])
        if offset + size > self.flash.size:
            self._fail(op, chip.ERR_FAILED)
            return
        if not self.stub:
            self.flash.erase(offset, size)            # the ROM erases up front
        self.write = {"offset": offset, "pos": offset, "size": size, "block_size": block_size,
                      "erased_to": offset if self.stub else offset + size, "seq": 0,
                      "z": zlib.decompressobj() if compressed else None}
        self._reply(op)

    def _flash_begin(self, op, data, chk):
        self._begin(op, data, False)

    def _defl_begin(self, op, data, chk):
        self._begin(op, data, True)

    def _program(self, raw: bytes) -> None:
        w = self.write
        assert w is not None
        end = w["pos"] + len(raw)
        while w["erased_to"] < end:                  # the stub erases as it writes
            self.flash.erase(w["erased_to"], SECTOR)
            w["erased_to"] += SECTOR - w["erased_to"] % SECTOR
        if self.corrupt_next and raw:
            self.corrupt_next = False
            raw = bytes([raw[0] ^ 0x01]) + raw[1:]
        self.flash.program(w["pos"], raw)
        w["pos"] = end
        self.stats["flash_bytes_written"] += len(raw)

    def _data(self, op, data, chk):
        if self.write is None:
            self._fail(op, chip.ERR_FAILED)
            return
        size, seq = struct.unpack("<II", data[:8])
        block = data[16:16 + size]
        if len(block) != size or self._checksum(block) != chk & 0xFF:
            self._fail(op, chip.ERR_BAD_CRC)
            return
        w = self.write
        if w["z"] is not None:
            try:
                raw = w["z"].decompress(block)
            except zlib.error:
                self._fail(op, chip.ERR_DEFLATE)
                return
        else:
            raw = block
        self._program(raw)
        self._reply(op)

    def _end(self, op, data, chk):
        stay = struct.unpack("<I", data[:4])[0] if len(data) >= 4 else 1
        self.write = None
        self._reply(op)
        if not stay:
            # A software reset: the boot strap stays latched, so the ROM loader
            # comes back (esptool relies on this to leave the stub).
            self.events("exit", "reboot")
        elif not self.stub and op == chip.FLASH_END:
            self.events("exit", "run")

    def _md5(self, op, data, chk):
        addr, size = struct.unpack("<II", data[:8])
        digest = self.flash.md5(addr, size)
        self._reply(op, data=digest if self.stub else digest.hex().encode())

    def _read_slow(self, op, data, chk):
        addr, size = struct.unpack("<II", data[:8])
        block = self.flash.read(addr, min(size, 64)).ljust(64, b"\xff")
        self._reply(op, data=block)

    def _erase_flash(self, op, data, chk):
        self.flash.erase(0, self.flash.size)
        self._reply(op)

    def _erase_region(self, op, data, chk):
        offset, size = struct.unpack("<II", data[:8])
        if offset % SECTOR or size % SECTOR:
            self._fail(op, chip.ERR_FAILED)
            return
        self.flash.erase(offset, size)
        self._reply(op)

    # --- stub READ_FLASH: packets of sector_size, at most `inflight` unacked ---
    def _read_flash(self, op, data, chk):
        offset, length, packet, inflight = struct.unpack("<IIII", data[:16])
        self.flash._check(offset, length)
        self._reply(op)
        self.read = {"offset": offset, "length": length, "packet": packet, "inflight": inflight,
                     "sent": 0, "acked": 0, "md5": hashlib.md5()}
        self._read_pump()

    def _read_pump(self):
        r = self.read
        assert r is not None
        while r["sent"] < r["length"] and r["sent"] - r["acked"] < r["inflight"] * r["packet"]:
            n = min(r["packet"], r["length"] - r["sent"])
            chunk = self.flash.read(r["offset"] + r["sent"], n)
            r["md5"].update(chunk)
            r["sent"] += n
            self.send(chunk)
        if r["acked"] >= r["length"]:
            self.send(r["md5"].digest())
            self.read = None

    def _read_ack(self, acked: int):
        assert self.read is not None
        self.read["acked"] = acked
        self._read_pump()

    @staticmethod
    def _checksum(data: bytes) -> int:
        state = chip.CHECKSUM_MAGIC
        for b in data:
            state ^= b
        return state

    HANDLERS: dict[int, Callable] = {
        chip.SYNC: _sync, chip.READ_REG: _read_reg, chip.WRITE_REG: _write_reg,
        chip.MEM_BEGIN: _mem_begin, chip.MEM_DATA: _mem_data, chip.MEM_END: _mem_end,
        chip.SPI_ATTACH: _ok, chip.SPI_SET_PARAMS: _spi_set_params, chip.CHANGE_BAUDRATE: _change_baud,
        chip.FLASH_BEGIN: _flash_begin, chip.FLASH_DATA: _data, chip.FLASH_END: _end,
        chip.FLASH_DEFL_BEGIN: _defl_begin, chip.FLASH_DEFL_DATA: _data, chip.FLASH_DEFL_END: _end,
        chip.SPI_FLASH_MD5: _md5, chip.READ_FLASH_SLOW: _read_slow,
        chip.ERASE_FLASH: _erase_flash, chip.ERASE_REGION: _erase_region, chip.READ_FLASH: _read_flash,
    }
    STUB_ONLY = {chip.ERASE_FLASH, chip.ERASE_REGION, chip.READ_FLASH}
