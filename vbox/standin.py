"""A stand-in for the MicroPython ESP32_GENERIC base firmware .bin, for tests,
benches and demos where the real download is not at hand (nothing downloads at
test time). Same layout as the real file, flashed at 0x1000:

    0x1000  second-stage bootloader (a valid ESP32 image, esptool-parsable)
    0x8000  the MicroPython partition table (firmware.partitions)
    0x10000 the factory app (a valid ESP32 image; on a virtual box, any app
            image there stands for MicroPython: the vbox swaps the CPU)

It is never a real firmware: a real ESP32 would not run it.
"""
from __future__ import annotations

import os
import tempfile

from firmware import partitions as pt

MARK = b"homebox vbox stand-in for MicroPython ESP32_GENERIC; not a real firmware\0"


def _image(load_addr: int, payload: bytes, flash_size: int) -> bytes:
    from esptool.bin_image import ELFSection, ESP32FirmwareImage
    img = ESP32FirmwareImage()
    img.entrypoint = 0x40080000
    img.flash_mode = 2                                   # DIO
    img.flash_size_freq = {2: 0x10, 4: 0x20, 8: 0x30, 16: 0x40}[flash_size >> 20] | 0x0F
    img.segments = [ELFSection(b".standin", load_addr, payload, flags=0)]
    fd, path = tempfile.mkstemp(suffix=".bin")
    os.close(fd)
    try:
        img.save(path)
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)


def make_base(flash_size: str | int = "4MB", app_size: int = 0x20000) -> bytes:
    """The stand-in .bin (offset 0x1000), deterministic for a flash size."""
    size = pt.parse_flash_size(flash_size)
    boot = _image(0x3FFF0000, MARK + b"bootloader\0", size)
    table = pt.encode_table(pt.micropython_table(size))
    app_payload = (MARK + b"app\0").ljust(app_size, b"\0")
    app = _image(0x3F400020, app_payload, size)
    base = bytearray(b"\xff" * (0x10000 - 0x1000 + len(app)))
    base[0:len(boot)] = boot
    base[0x8000 - 0x1000:0x8000 - 0x1000 + len(table)] = table
    base[0x10000 - 0x1000:] = app
    return bytes(base)
