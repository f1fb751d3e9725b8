"""ESP32 facts a virtual box needs to answer esptool like a real chip would:
register addresses and values for chip detection, the eFuse words that hold
the MAC and chip revision, the UART clock divider, and SPI flash IDs.
(Addresses checked against esptool's targets/esp32.py; values chosen for an
ESP32-D0WD-V3 revision v3.0 on a devkit with a 40 MHz crystal.)"""
from __future__ import annotations

import struct

CHIP_NAME = "ESP32"
CHIP_DETECT_MAGIC_REG = 0x40001000
MAGIC_VALUE = 0x00F01D83

EFUSE_RD_REG_BASE = 0x3FF5A000
APB_CTL_DATE_ADDR = 0x3FF6607C
UART_CLKDIV_REG = 0x3FF40014
RTCCALICFG1 = 0x3FF5F06C
XTAL_HZ = 40_000_000

SPI_REG_BASE = 0x3FF42000
SPI_CMD_REG = SPI_REG_BASE + 0x00
SPI_USR2_REG = SPI_REG_BASE + 0x24
SPI_W0_REG = SPI_REG_BASE + 0x80
SPI_CMD_USR = 1 << 18

# JEDEC RDID: manufacturer (GigaDevice), memory type, capacity = log2(size).
FLASH_MANUFACTURER = 0xC8
FLASH_MEMTYPE = 0x40
SPIFLASH_RDID = 0x9F

# ROM loader commands (esptool's names).
SYNC, READ_REG, WRITE_REG = 0x08, 0x0A, 0x09
FLASH_BEGIN, FLASH_DATA, FLASH_END = 0x02, 0x03, 0x04
MEM_BEGIN, MEM_END, MEM_DATA = 0x05, 0x06, 0x07
SPI_SET_PARAMS, SPI_ATTACH, READ_FLASH_SLOW, CHANGE_BAUDRATE = 0x0B, 0x0D, 0x0E, 0x0F
FLASH_DEFL_BEGIN, FLASH_DEFL_DATA, FLASH_DEFL_END, SPI_FLASH_MD5 = 0x10, 0x11, 0x12, 0x13
GET_SECURITY_INFO = 0x14
ERASE_FLASH, ERASE_REGION, READ_FLASH, RUN_USER_CODE = 0xD0, 0xD1, 0xD2, 0xD3

# ROM error codes (second status byte).
ERR_INVALID_MSG = 0x05
ERR_FAILED = 0x06
ERR_BAD_CRC = 0x07
ERR_DEFLATE = 0x0B
CHECKSUM_MAGIC = 0xEF

# The stub's SYNC answer value is 0; the ROM's is not.
ROM_SYNC_VAL = 0x20120707


def flash_id(flash_size: int) -> int:
    capacity = flash_size.bit_length() - 1
    return FLASH_MANUFACTURER | (FLASH_MEMTYPE << 8) | (capacity << 16)


def _crc8(data: bytes) -> int:
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8C if crc & 1 else crc >> 1
    return crc


def efuse_words(mac: bytes) -> list[int]:
    """eFuse BLOCK0 read words 0..6 for this MAC on an ESP32-D0WD-V3 v3.0."""
    assert len(mac) == 6
    crc = _crc8(bytes(reversed(mac)))
    w = [0] * 7
    w[1] = struct.unpack(">I", mac[2:6])[0]
    w[2] = (crc << 16) | (mac[0] << 8) | mac[1]
    w[3] = (1 << 9) | (1 << 15)          # package D0WD, chip revision bit 0
    w[4] = 100                           # CK8M frequency calibration (ROM crystal estimate)
    w[5] = 1 << 20                       # chip revision bit 1
    return w


def parse_mac(s: str) -> bytes:
    parts = s.split(":")
    if len(parts) != 6:
        raise ValueError(f"bad MAC {s!r}")
    return bytes(int(p, 16) for p in parts)


def mac_for(name: str) -> bytes:
    """A stable Espressif-OUI MAC for a box name."""
    h = 0
    for c in name.encode():
        h = (h * 31 + c) & 0xFFFFFF
    return bytes([0x24, 0x0A, 0xC4, (h >> 16) & 255, (h >> 8) & 255, h & 255])


class Registers:
    """The registers esptool reads and writes; anything else reads back what was
    written (or 0)."""

    def __init__(self, mac: bytes, flash_size: int, baud_fn, flash_id: int | None = None):
        self.mac = mac
        self.flash_size = flash_size
        self.flash_id = flash_id             # a fault: the JEDEC ID a dead flash chip answers
        self.baud_fn = baud_fn
        self.regs: dict[int, int] = {}
        self.efuse = efuse_words(mac)

    def read(self, addr: int) -> int:
        if addr == CHIP_DETECT_MAGIC_REG:
            return MAGIC_VALUE
        if EFUSE_RD_REG_BASE <= addr < EFUSE_RD_REG_BASE + 4 * len(self.efuse):
            return self.efuse[(addr - EFUSE_RD_REG_BASE) // 4]
        if addr == APB_CTL_DATE_ADDR:
            return 1 << 31
        if addr == UART_CLKDIV_REG:
            return round(XTAL_HZ / max(self.baud_fn(), 1)) & 0xFFFFF
        if addr == RTCCALICFG1:
            return 1024 << 7                 # with CK8M=100: 40 MHz
        return self.regs.get(addr, 0)

    def write(self, addr: int, value: int, mask: int = 0xFFFFFFFF) -> None:
        old = self.regs.get(addr, 0)
        self.regs[addr] = (old & ~mask) | (value & mask)
        if addr == SPI_CMD_REG and value & SPI_CMD_USR:
            self._spi_user_command()

    def _spi_user_command(self) -> None:
        cmd = self.regs.get(SPI_USR2_REG, 0) & 0xFF
        fid = flash_id(self.flash_size) if self.flash_id is None else self.flash_id
        self.regs[SPI_W0_REG] = fid if cmd == SPIFLASH_RDID else 0
        self.regs[SPI_CMD_REG] = 0               # done at once
