"""Step 5: one box's images, built in memory (its secrets never touch the disk).

The base firmware (MicroPython's ESP32_GENERIC .bin, pinned by
firmware/base-firmware.lock.json) is the same for every box of a run; the
filesystem image is per box: board glue, the compiled agent, and the box's
config.json, secrets.json and fw.json. Same box, same inputs: same bytes, so a
box that comes back is flashed only where its flash differs.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from agent import VERSION
from firmware import build as fb
from firmware import partitions as pt
from flashing.errors import ImageError, SetupError


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Firmware:
    """What every box of a run gets: the base .bin (checked against the lock)."""
    lock: dict
    base: dict = field(default_factory=dict)        # flash size -> base .bin bytes
    stand_in: bool = False
    agent_dir: Path | None = None

    @property
    def name(self) -> str:
        n = f"{self.lock.get('board', 'ESP32_GENERIC')} {self.lock['micropython']}"
        return n + (" (vbox stand-in)" if self.stand_in else "")

    def base_for(self, flash_size: str) -> bytes:
        if flash_size not in self.base:
            if not self.stand_in:
                # one real .bin: check it fits this flash's layout
                data = next(iter(self.base.values()))
                fb.check_base_bin(data, self.lock, pt.parse_flash_size(flash_size))
                self.base[flash_size] = data
            else:
                from vbox import standin
                self.base[flash_size] = standin.make_base(flash_size)
        return self.base[flash_size]

    def tools(self) -> dict:
        return {"micropython": self.lock["micropython"], "mpy": self.lock["mpy_version"],
                "base_sha256": self.lock["sha256"], "stand_in": self.stand_in}


def load_firmware(base_bin: Path | None, lock_path: Path | None = None, virtual: bool = False,
                  agent_dir: Path | None = None) -> Firmware:
    try:
        lock = fb.load_lock(Path(lock_path) if lock_path else None)
    except fb.FirmwareError as e:
        raise SetupError(str(e)) from None
    if base_bin is not None:
        try:
            data = Path(base_bin).read_bytes()
            fb.check_base_bin(data, lock, pt.parse_flash_size("4MB"))
        except OSError as e:
            raise SetupError(f"cannot read the base firmware {base_bin}: {e.strerror}") from None
        except fb.FirmwareError as e:
            raise SetupError(str(e)) from None
        return Firmware(lock, {"4MB": data}, agent_dir=agent_dir)
    if not virtual:
        raise SetupError("a bench run needs the MicroPython base firmware: --base-bin "
                         f"{lock.get('file', 'ESP32_GENERIC-....bin')} (the file pinned in the lock)")
    # Virtual boxes run no Xtensa code: the stand-in has the real layout (vbox/standin.py).
    from vbox import standin
    data = standin.make_base("4MB")
    lock = dict(lock, sha256=sha256(data))
    return Firmware(lock, {"4MB": data}, stand_in=True, agent_dir=agent_dir)


@dataclass
class BoxImage:
    parts: list[tuple[int, bytes]] = field(repr=False)
    images: dict                   # name -> {"offset", "size", "sha256"}: what the ledger keeps
    agent_build: str
    firmware: str


def agent_build_id(files: list[tuple[str, bytes]]) -> str:
    h = hashlib.sha256()
    for path, data in files:
        if path.startswith("agent/"):
            h.update(path.encode() + b"\0" + data)
    return h.hexdigest()[:12]


def build(fw: Firmware, flash_size: str, config: dict, secrets: dict, extra: dict | None = None) -> BoxImage:
    """The base .bin and this box's littlefs image, sized for its flash; `extra`:
    more files for its filesystem ({path: bytes}, e.g. the broker's CA)."""
    try:
        size = pt.parse_flash_size(flash_size)
        base = fw.base_for(flash_size)
        table = fb.check_base_bin(base, fw.lock, size)
        vfs_off, vfs_size = pt.vfs_region(table, size)
        files, _release, _mpy = fb.image_files(fw.lock, agent_dir=fw.agent_dir)
        build_id = agent_build_id(files)
        info = {"firmware": fw.name, "agent": VERSION, "agent_build": build_id}
        overlay = {"config.json": json.dumps(config, sort_keys=True),
                   "secrets.json": json.dumps(secrets, sort_keys=True),
                   "fw.json": json.dumps(info, sort_keys=True), **(extra or {})}
        merged = dict(files)
        merged.update(dict(fb.read_overlay(overlay)))
        vfs = fb.make_fs_image(sorted(merged.items()), vfs_size)
    except (fb.FirmwareError, pt.PartitionError, ValueError) as e:
        raise ImageError(str(e)) from None
    base_off = fw.lock.get("offset", pt.BOOTLOADER_OFFSET)
    images = {"base": {"offset": base_off, "size": len(base), "sha256": sha256(base)},
              "vfs": {"offset": vfs_off, "size": len(vfs), "sha256": sha256(vfs)}}
    return BoxImage(keep_nvs([(base_off, base), (vfs_off, vfs)], table), images, build_id, fw.name)


def keep_nvs(parts: list[tuple[int, bytes]], table) -> list[tuple[int, bytes]]:
    """Cut the nvs partition out of the parts where they only hold erased bytes
    (0xFF) there, as the base .bin does: a re-flash then keeps the box's NVS (its
    boot counter, agent/runtime_cold.py next_boot); erase_flash still wipes it."""
    out = []
    for off, data in parts:
        for p in table:
            if p.subtype != pt.SUBTYPE_NVS or p.type != pt.TYPE_DATA:
                continue
            a, b = p.offset - off, p.offset + p.size - off
            if a >= 0 and b <= len(data) and data[a:b].count(0xFF) == b - a:
                out += [x for x in ((off, data[:a]), (p.offset + p.size, data[b:])) if x[1]]
                break
        else:
            out.append((off, data))
    return out
