"""Bench slots: which serial port is which numbered place on the USB hub.

- By USB location: /dev/serial/by-path names a port by the hub port it is
  plugged into, so the same hub port keeps its name when the kernel
  re-enumerates (ttyUSB3 may become ttyUSB0; by-path does not change). Only the
  USB-serial bridges of ESP32 boards become slots (KNOWN_BRIDGES, by USB vendor
  and product id; `extra_ids` adds more): a phone or a GPS dongle on the hub is
  left alone. The numbering lives in a small slots file (default
  bench-slots.json): the first run numbers the locations it sees in USB port
  order (hub port 3.10 after 3.9), and later runs keep those numbers and give new
  locations the next ones. Slot 3 stays slot 3, whether or not slots 1 and 2
  hold a box today.
- An explicit list (`--port`): device paths or pyserial URLs (rfc2217://,
  socket://), numbered in the order given.
- Virtual boxes (`--virtual N`): N vbox processes (vbox.spawn), slots 1..N.
"""
from __future__ import annotations

import errno
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from flashing.errors import SetupError

BY_PATH = Path("/dev/serial/by-path")

# (vendor id, product id) of the USB-serial bridges on ESP32 boards.
KNOWN_BRIDGES = {
    (0x10C4, 0xEA60): "Silicon Labs CP210x",
    (0x1A86, 0x7523): "WCH CH340",
    (0x1A86, 0x55D4): "WCH CH9102",
    (0x1A86, 0x55D3): "WCH CH343",
    (0x0403, 0x6001): "FTDI FT232R",
    (0x0403, 0x6010): "FTDI FT2232",
    (0x0403, 0x6014): "FTDI FT232H",
    (0x0403, 0x6015): "FTDI FT231X",
    (0x303A, 0x1001): "Espressif USB-Serial/JTAG",
}


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


def parse_ids(items: list[str]) -> set[tuple[int, int]]:
    """["VID:PID", ...] in hex (as lsusb prints them) -> {(vid, pid)}."""
    out = set()
    for item in items:
        m = re.fullmatch(r"\s*([0-9a-fA-F]{1,4}):([0-9a-fA-F]{1,4})\s*", item)
        if not m:
            raise SetupError(f"not a USB id: {item!r} (expected VID:PID in hex, as lsusb shows, e.g. 10c4:ea60)")
        out.add((int(m.group(1), 16), int(m.group(2), 16)))
    return out


def usb_ids() -> dict[str, tuple[int, int]]:
    """{real device path: (vid, pid)} of the USB serial ports, from pyserial."""
    from serial.tools import list_ports
    return {os.path.realpath(p.device): (p.vid, p.pid) for p in list_ports.comports()
            if p.vid is not None and p.pid is not None}


def port_order(name: str) -> list:
    # Numbers compare as numbers: hub port 3.10 comes after 3.9.
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def by_path_ports(root: Path = BY_PATH, extra_ids: set | None = None,
                  ids: dict[str, tuple[int, int]] | None = None) -> dict[str, str]:
    """{by-path name: /dev/serial/by-path/NAME} of the ESP32 bridges present, in
    USB port order. `ids` maps a real device path to its (vid, pid) (default:
    pyserial's list of ports)."""
    if not root.is_dir():
        return {}
    known = set(KNOWN_BRIDGES) | set(extra_ids or ())
    ids = usb_ids() if ids is None else ids
    found = [p for p in root.iterdir() if "usb" in p.name and ids.get(os.path.realpath(p)) in known]
    return {p.name: str(p) for p in sorted(found, key=lambda p: port_order(p.name))}


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


def discover(slots_file: Path, root: Path = BY_PATH, save: bool = True, extra_ids: set | None = None,
             ids: dict[str, tuple[int, int]] | None = None) -> list[Slot]:
    """The by-path ports of ESP32 bridges present, numbered by the slots file (new
    locations get the next numbers, in USB port order, and are saved)."""
    present = by_path_ports(root, extra_ids, ids)
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


# A virtual box is an emulated ESP32 board (vbox/board/) in a simulated home: it
# runs the ESP32 HAL, as a box on a real bench does. Its uplink is the board's
# emulated Ethernet (the bench writes "uplink": "lan" into its config).
VIRTUAL_HOME = "good_home"
VIRTUAL_CONFIG = {"uplink": "lan"}


def start_virtual(count: int, root: Path, baud_limit: bool = False, flash_size: str = "4MB",
                  scenario: Path | None = None, heap: str = "128k", board: str = "esp32",
                  home: str | None = None) -> list[Slot]:
    """N virtual boxes under root/slot-N (their flash and MAC persist there). board
    "esp32": the emulated ESP32 board in the scenario's home (`home`, a name of
    agent/hal/sim_homes.py, good_home by default), with an uplink in each box's
    config; "none": the bare unix port (sim HAL)."""
    import json

    import vbox
    slots = []
    root = Path(root)
    if board == "esp32" and scenario is None:
        root.mkdir(parents=True, exist_ok=True)
        scenario = root / "home.json"
        scenario.write_text(json.dumps(home or VIRTUAL_HOME))
    try:
        for i in range(1, count + 1):
            b = vbox.spawn(root / f"slot-{i}", flash_size=flash_size, name=f"vbox-{i}",
                           baud_limit=baud_limit, scenario=scenario, heap=heap, board=board)
            slots.append(Slot(i, b.url, f"vbox-{i} {b.url}", b,
                              config=dict(VIRTUAL_CONFIG) if board == "esp32" else {}))
    except vbox.VboxError as e:
        stop_virtual(slots)
        raise SetupError(f"cannot start the virtual boxes: {e}") from None
    return slots


def stop_virtual(slots: list[Slot]) -> None:
    for s in slots:
        if s.vbox is not None:
            s.vbox.stop()


class PortLock:
    """An exclusive claim on a local serial port for one box's run: a second bench
    process (or a second station on the same PC) gets a clear error instead of
    sharing the port with us. URLs (rfc2217://, socket://) are not local: no lock."""

    def __init__(self, port: str) -> None:
        self.port = port
        self.fd: int | None = None

    def __enter__(self) -> PortLock:
        if "://" in self.port or os.name != "posix":
            return self
        import fcntl
        try:
            fd = os.open(self.port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except PermissionError:
            raise SetupError(f"permission denied on {self.port}: add your account to the dialout group "
                             "(sudo usermod -aG dialout $USER), log out and in again, then re-run") from None
        except FileNotFoundError:
            raise SetupError(f"{self.port} is gone: the box was unplugged or the cable is loose. "
                             "Plug it back in and re-run this slot") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise SetupError(f"{self.port} is in use by another program (another bench run, a serial "
                                 "monitor?): close it, then re-run") from None
            raise
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
