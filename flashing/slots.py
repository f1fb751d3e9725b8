"""Bench slots: which serial port is which numbered place on the USB hub.

- By USB location: /dev/serial/by-path names a port by the hub port it is
  plugged into, so the same hub port keeps its name when the kernel
  re-enumerates (ttyUSB3 may become ttyUSB0; by-path does not change). The
  numbering lives in a small slots file (default bench-slots.json): the first
  run numbers the locations it sees in order, and later runs keep those numbers
  and give new locations the next ones. Slot 3 stays slot 3, whether or not
  slots 1 and 2 hold a box today.
- An explicit list (`--port`): device paths or pyserial URLs (rfc2217://,
  socket://), numbered in the order given.
- Virtual boxes (`--virtual N`): N vbox processes (vbox.spawn), slots 1..N.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from flashing.errors import SetupError

BY_PATH = Path("/dev/serial/by-path")


@dataclass
class Slot:
    number: int
    port: str                     # what esptool and pytest-embedded open
    location: str = ""            # the by-path name, or the URL
    vbox: object | None = field(default=None, repr=False)   # vbox.BoxProcess for --virtual
    config: dict = field(default_factory=dict)   # extra config.json keys for this slot's box only

    @property
    def name(self) -> str:
        return str(self.number)


def by_path_ports(root: Path = BY_PATH) -> dict[str, str]:
    """{by-path name: /dev/serial/by-path/NAME} of the USB serial ports present."""
    if not root.is_dir():
        return {}
    return {p.name: str(p) for p in sorted(root.iterdir()) if "usb" in p.name}


def load_numbers(path: Path) -> dict[str, int]:
    try:
        d = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise SetupError(f"cannot read the slots file {path}: {e}") from None
    return {str(k): int(v) for k, v in d.get("slots", {}).items()}


def save_numbers(path: Path, numbers: dict[str, int]) -> None:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"slots": dict(sorted(numbers.items(), key=lambda kv: kv[1]))}, indent=1) + "\n")
    os.replace(tmp, path)


def discover(slots_file: Path, root: Path = BY_PATH, save: bool = True) -> list[Slot]:
    """The by-path ports present, numbered by the slots file (new locations get
    the next numbers and are saved)."""
    present = by_path_ports(root)
    numbers = load_numbers(slots_file)
    changed = False
    for name in present:
        if name not in numbers:
            numbers[name] = max(numbers.values(), default=0) + 1
            changed = True
    if changed and save:
        save_numbers(slots_file, numbers)
    return sorted((Slot(numbers[n], p, n) for n, p in present.items()), key=lambda s: s.number)


def explicit(ports: list[str]) -> list[Slot]:
    out = []
    for p in ports:
        for one in p.split(","):
            one = one.strip()
            if one:
                out.append(Slot(len(out) + 1, one, one))
    if not out:
        raise SetupError("--port was given without a port")
    return out


def select(slots: list[Slot], wanted: list[int] | None) -> list[Slot]:
    """Keep only the slots named by --slot (e.g. to re-run one slot)."""
    if not wanted:
        return slots
    have = {s.number for s in slots}
    missing = [n for n in wanted if n not in have]
    if missing:
        raise SetupError(f"no port for slot {', '.join(map(str, missing))}: is a box plugged in there?")
    return [s for s in slots if s.number in wanted]


def start_virtual(count: int, root: Path, baud_limit: bool = False, flash_size: str = "4MB",
                  scenario: Path | None = None, heap: str = "128k") -> list[Slot]:
    """N virtual boxes under root/slot-N (their flash and MAC persist there)."""
    import vbox
    slots = []
    try:
        for i in range(1, count + 1):
            b = vbox.spawn(Path(root) / f"slot-{i}", flash_size=flash_size, name=f"vbox-{i}",
                           baud_limit=baud_limit, scenario=scenario, heap=heap)
            slots.append(Slot(i, b.url, f"vbox-{i} {b.url}", b))
    except vbox.VboxError as e:
        stop_virtual(slots)
        raise SetupError(f"cannot start the virtual boxes: {e}") from None
    return slots


def stop_virtual(slots: list[Slot]) -> None:
    for s in slots:
        if s.vbox is not None:
            s.vbox.stop()
