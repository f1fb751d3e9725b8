"""A box's SPI NOR flash, persisted in a file so it survives resets, process
restarts and kill -9. Erase sets a sector to 0xFF; program writes bytes
(NOR can only clear bits, so programming ANDs with what is there)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

SECTOR = 0x1000


class FlashError(Exception):
    pass


class Flash:
    def __init__(self, path: Path | str, size: int):
        self.path = Path(path)
        self.size = size
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        cur = os.fstat(fd).st_size
        if cur not in (0, size):
            os.close(fd)
            raise FlashError(f"{self.path} holds {cur} bytes, not a {size}-byte flash")
        if cur == 0:
            chunk = b"\xff" * (1 << 20)
            for off in range(0, size, len(chunk)):
                os.pwrite(fd, chunk[: min(len(chunk), size - off)], off)
        self.fd = fd
        self.bytes_programmed = 0

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise FlashError(f"access {offset:#x}+{length:#x} outside a {self.size:#x}-byte flash")

    def read(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        return os.pread(self.fd, length, offset)

    def erase(self, offset: int, length: int) -> None:
        start = offset - offset % SECTOR
        end = -(-(offset + length) // SECTOR) * SECTOR
        self._check(start, end - start)
        blank = b"\xff" * SECTOR
        for off in range(start, end, SECTOR):
            os.pwrite(self.fd, blank, off)

    def program(self, offset: int, data: bytes) -> None:
        self._check(offset, len(data))
        old = os.pread(self.fd, len(data), offset)
        if old != b"\xff" * len(data):
            data = bytes(a & b for a, b in zip(old, data))
        os.pwrite(self.fd, data, offset)
        self.bytes_programmed += len(data)

    def md5(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        h = hashlib.md5()
        pos = offset
        while pos < offset + length:
            n = min(1 << 20, offset + length - pos)
            h.update(os.pread(self.fd, n, pos))
            pos += n
        return h.digest()
