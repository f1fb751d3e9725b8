"""`homebox vbox up ...`: start virtual boxes (library: vbox)."""
from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("up", help="start N virtual ESP32 boxes, each on its own rfc2217:// port")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--flash-size", default="4MB")
    p.add_argument("--scenario", type=Path, default=None, help="sim HAL scenario JSON (stations, meters, line)")
    p.add_argument("--baud-limit", action="store_true", help="throttle each link to its negotiated baud rate")
    p.add_argument("--dir", type=Path, default=Path("state/vbox"), help="where the boxes keep their flash (default state/vbox)")
    p.add_argument("--base-port", type=int, default=0, help="first TCP port (default: any free port)")
    p.add_argument("--json", action="store_true", help="one JSON object per box")
    p.add_argument("--board", choices=("esp32", "none"), default="esp32",
                   help="esp32 (default): the emulated ESP32 board, the agent runs its ESP32 HAL (give it an "
                        "uplink in its config: \"uplink\": \"lan\"); none: the bare unix port (sim HAL)")
    p.add_argument("--speedup", type=float, default=1.0, help="esp32 board: box time at this many times real time")
    p.set_defaults(func=cmd_up)


def cmd_up(args) -> int:
    import vbox
    if args.scenario and not args.scenario.is_file():
        print(f"vbox up: no scenario file {args.scenario}", file=sys.stderr)
        return 2
    boxes = []
    try:
        for i in range(1, args.count + 1):
            name = f"vbox-{i}"
            port = args.base_port + i - 1 if args.base_port else 0
            b = vbox.spawn(args.dir / name, flash_size=args.flash_size, name=name, port=port,
                           scenario=args.scenario, baud_limit=args.baud_limit, board=args.board,
                           speedup=args.speedup)
            boxes.append(b)
            if args.json:
                print(json.dumps({"name": b.name, "url": b.url, "port": b.port, "mac": b.mac, "dir": str(b.dir)}), flush=True)
            else:
                print(f"{b.name}  {b.url}  mac {b.mac}", flush=True)
        if not args.json:
            print("Ctrl-C stops them; their flash stays in " + str(args.dir), flush=True)
        signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
        while all(b.proc.poll() is None for b in boxes):
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    except vbox.VboxError as e:
        print(f"vbox up: {e}", file=sys.stderr)
        return 2
    finally:
        for b in boxes:
            b.stop()
