"""`homebox fw ...`: build firmware and filesystem images (library: firmware.build)."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("build", help="compile the agent and build the littlefs image (+ merged image with --base-bin)")
    p.add_argument("--flash-size", default="4MB", help="2MB, 4MB, 8MB or 16MB (default 4MB)")
    p.add_argument("--overlay", type=Path, default=None, help="per-box files to add at the filesystem root (config.json, secrets.json, ...)")
    p.add_argument("--base-bin", type=Path, default=None, help="the pinned MicroPython ESP32_GENERIC .bin: also write merged.bin")
    p.add_argument("--fs-image", type=Path, default=None, help="package this littlefs image instead of building one (checked against the vfs size)")
    p.add_argument("--lock", type=Path, default=None, help="base firmware lock file (default firmware/base-firmware.lock.json)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=cmd_build)


def cmd_build(args) -> int:
    from firmware.build import FirmwareError, build
    try:
        r = build(args.out, args.flash_size, overlay=args.overlay, base_bin=args.base_bin,
                  fs_image=args.fs_image, lock_path=args.lock)
    except (FirmwareError, ValueError, OSError) as e:
        print(f"fw build: FAILED: {e}", file=sys.stderr)
        return 2
    m = r.manifest
    if args.json:
        print(json.dumps(m, indent=1, sort_keys=True))
        return 0
    print(f"built for {m['flash_size']} flash, MicroPython {m['micropython']['release']} (mpy v{m['micropython']['mpy_version']}), "
          f"{len(m['files'])} files")
    for part in m["parts"]:
        off = f"{part['offset']:#08x}" if "offset" in part else "-"
        print(f"  {part['file']:<22} {off:>10} {part['size']:>9} B  sha256 {part['sha256'][:16]}…")
    flash = " ".join(f"{f['offset']:#x} {r.out_dir / f['file']}" for f in m["flash"])
    print(f"flash with: esptool --port PORT write-flash {flash}")
    return 0
