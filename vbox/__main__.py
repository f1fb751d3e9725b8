"""Serve one virtual box: python -m vbox --dir DIR --name NAME [--port P] ...
Prints one line (its rfc2217:// URL, or JSON with --json) once it listens."""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from firmware import partitions as pt
from vbox.device import Device, load_identity
from vbox.server import Link, announce


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vbox")
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--name", default=None)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--flash-size", default="4MB")
    p.add_argument("--scenario", type=Path, default=None)
    p.add_argument("--baud-limit", action="store_true")
    p.add_argument("--heap", default="128k")
    p.add_argument("--json", action="store_true")
    p.add_argument("--board", choices=("esp32", "none"), default="none",
                   help="esp32: the emulated ESP32 board (the agent runs its esp32 HAL); none: the bare unix port (sim HAL)")
    p.add_argument("--speedup", type=float, default=1.0,
                   help="esp32 board: box time at this many times real time (the config's speedup can set it too)")
    args = p.parse_args(argv)
    name = args.name or args.dir.name
    device = Device(args.dir, pt.parse_flash_size(args.flash_size), load_identity(args.dir, name),
                    scenario=args.scenario.resolve() if args.scenario else None, heap=args.heap,
                    board=args.board, speedup=args.speedup)
    link = Link(device, args.port, baud_limit=args.baud_limit)
    signal.signal(signal.SIGTERM, lambda *a: (link.close(), device.close(), sys.exit(0)))
    print(announce(name, link, device, args.json), flush=True)
    device.power_on()
    try:
        link.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        link.close()
        device.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
