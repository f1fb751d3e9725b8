"""Partition facts of the MicroPython ESP32_GENERIC firmware, and the ESP-IDF
binary partition table format (what the second-stage bootloader reads at 0x8000).

Layout (MicroPython 1.26+, partitions-4MiBplus.csv): nvs, phy_init and a factory
app fill the first 2 MiB; the table has no "vfs" entry, and MicroPython makes
the vfs from the end of the last partition to the end of the detected flash.
2 MiB parts use MicroPython's partitions-2MiB.csv, which names its vfs.

Binary format: 32-byte entries, little-endian
    magic 0x50AA (u16), type (u8), subtype (u8), offset (u32), size (u32),
    label (16 bytes, NUL-padded), flags (u32)
then an MD5 entry (magic 0xEBEB, 14 x 0xFF, MD5 of the entries before it),
then 0xFF to the end of the 0xC00-byte table.
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

PARTITION_TABLE_OFFSET = 0x8000
PARTITION_TABLE_SIZE = 0xC00
BOOTLOADER_OFFSET = 0x1000
SECTOR = 0x1000

ENTRY_MAGIC = 0x50AA
MD5_MAGIC = 0xEBEB
ENTRY = struct.Struct("<HBBII16sI")

TYPE_APP = 0x00
TYPE_DATA = 0x01
SUBTYPE_FACTORY = 0x00
SUBTYPE_PHY = 0x01
SUBTYPE_NVS = 0x02
SUBTYPE_FAT = 0x81

MB = 1024 * 1024
FLASH_SIZES = {"2MB": 2 * MB, "4MB": 4 * MB, "8MB": 8 * MB, "16MB": 16 * MB}

# The littlefs geometry MicroPython's esp32 port uses for its vfs.
LFS_BLOCK_SIZE = 4096
LFS_READ_SIZE = 32
LFS_PROG_SIZE = 32
LFS_LOOKAHEAD = 32


class PartitionError(ValueError):
    """A partition table that cannot be parsed, or a size we do not support."""


@dataclass(frozen=True)
class Partition:
    label: str
    type: int
    subtype: int
    offset: int
    size: int
    flags: int = 0

    @property
    def end(self) -> int:
        return self.offset + self.size

    def as_dict(self) -> dict:
        return {"label": self.label, "type": self.type, "subtype": self.subtype,
                "offset": self.offset, "size": self.size}


def parse_flash_size(s: str | int) -> int:
    if isinstance(s, int):
        if s not in FLASH_SIZES.values():
            raise PartitionError(f"unsupported flash size {s:#x}")
        return s
    key = s.strip().upper().replace("MIB", "MB")
    if key not in FLASH_SIZES:
        raise PartitionError(f"unsupported flash size {s!r}: choose one of {', '.join(FLASH_SIZES)}")
    return FLASH_SIZES[key]


def size_name(size: int) -> str:
    for k, v in FLASH_SIZES.items():
        if v == size:
            return k
    return f"{size // MB}MB"


def micropython_table(flash_size: int) -> list[Partition]:
    """The partition table MicroPython's ESP32_GENERIC build (1.26+) carries for this flash."""
    base = [Partition("nvs", TYPE_DATA, SUBTYPE_NVS, 0x9000, 0x6000),
            Partition("phy_init", TYPE_DATA, SUBTYPE_PHY, 0xF000, 0x1000)]
    if flash_size == 2 * MB:
        return base + [Partition("factory", TYPE_APP, SUBTYPE_FACTORY, 0x10000, 0x160000),
                       Partition("vfs", TYPE_DATA, SUBTYPE_FAT, 0x170000, 0x90000)]
    return base + [Partition("factory", TYPE_APP, SUBTYPE_FACTORY, 0x10000, 0x1F0000)]


def vfs_region(table: list[Partition], flash_size: int) -> tuple[int, int]:
    """(offset, size) of the vfs: the "vfs" partition if the table names one,
    else from the end of the last partition to the end of the flash."""
    for p in table:
        if p.label == "vfs" and p.type == TYPE_DATA:
            return p.offset, p.size
    if not table:
        raise PartitionError("empty partition table")
    start = max(p.end for p in table)
    start = (start + SECTOR - 1) // SECTOR * SECTOR
    if start >= flash_size:
        raise PartitionError(f"no room for a vfs: partitions end at {start:#x}, flash is {flash_size:#x}")
    return start, flash_size - start


def vfs_for(flash_size: str | int) -> tuple[int, int]:
    size = parse_flash_size(flash_size)
    return vfs_region(micropython_table(size), size)


def encode_table(table: list[Partition]) -> bytes:
    out = b""
    for p in table:
        label = p.label.encode()
        if len(label) > 16:
            raise PartitionError(f"label too long: {p.label!r}")
        out += ENTRY.pack(ENTRY_MAGIC, p.type, p.subtype, p.offset, p.size, label.ljust(16, b"\0"), p.flags)
    out += struct.pack("<H", MD5_MAGIC) + b"\xff" * 14 + hashlib.md5(out).digest()
    return out.ljust(PARTITION_TABLE_SIZE, b"\xff")


def parse_table(data: bytes) -> list[Partition]:
    """Parse a binary partition table; raises PartitionError as the bootloader
    would refuse it (no entries, bad magic, MD5 mismatch)."""
    parts: list[Partition] = []
    for i in range(0, min(len(data), PARTITION_TABLE_SIZE), ENTRY.size):
        raw = data[i:i + ENTRY.size]
        if len(raw) < ENTRY.size or raw == b"\xff" * ENTRY.size:
            break
        magic = struct.unpack_from("<H", raw)[0]
        if magic == MD5_MAGIC:
            if hashlib.md5(data[:i]).digest() != raw[16:32]:
                raise PartitionError("partition table MD5 mismatch")
            continue
        if magic != ENTRY_MAGIC:
            raise PartitionError(f"bad partition table magic {magic:#06x} at entry {i // ENTRY.size}")
        _, ptype, sub, off, size, label, flags = ENTRY.unpack(raw)
        parts.append(Partition(label.rstrip(b"\0").decode(errors="replace"), ptype, sub, off, size, flags))
    if not parts:
        raise PartitionError("no partition table")
    return parts
