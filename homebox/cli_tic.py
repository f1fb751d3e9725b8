"""`homebox box tic-decode`: decode raw Linky TIC bytes for a technician.

One JSON object per frame on stdout; the exit code is 0 only when every frame is
valid (and there is at least one). The decoder is the box's own (agent/tic.py).
"""
from __future__ import annotations

import json
import sys

from agent import tic

MODES = {"auto": None, "historic": tic.HISTORIC, "standard": tic.STANDARD}


def register(sub) -> None:
    p = sub.add_parser("tic-decode", help="decode raw Linky TIC bytes (a capture file or - for stdin)")
    p.add_argument("--mode", choices=sorted(MODES), default="auto",
                   help="auto (per frame, from the separators), historic or standard")
    p.add_argument("file", help="raw bytes as read from the 7E1 UART, or - for stdin")
    p.set_defaults(func=cmd_tic_decode)


def frame_json(f: tic.Frame) -> dict:
    return {"mode": f.mode, "valid": f.valid(),
            "groups": {k: {"value": v[0], "horodate": v[1], "checksum_ok": v[2]}
                       for k, v in f.groups.items()},
            "errors": list(f.errors)}


def decode_stream(stream, mode: str = "auto", out=None) -> tuple[int, int]:
    """Decode a binary stream; print each frame; returns (frames, valid frames)."""
    out = out or sys.stdout
    r = tic.Reader(MODES[mode])
    total = ok = 0
    while True:
        chunk = stream.read(4096)
        frames = r.feed(chunk) if chunk else r.flush()
        for f in frames:
            total += 1
            ok += f.valid()
            out.write(json.dumps(frame_json(f)) + "\n")
        out.flush()
        if not chunk:
            return total, ok


def cmd_tic_decode(args) -> int:
    try:
        if args.file == "-":
            total, ok = decode_stream(sys.stdin.buffer, args.mode)
        else:
            with open(args.file, "rb") as f:
                total, ok = decode_stream(f, args.mode)
    except OSError as e:
        print(f"tic-decode: cannot read {args.file}: {e}", file=sys.stderr)
        return 2
    if total == 0:
        print("tic-decode: no frame found (no STX): wrong mode, baud rate or wiring?", file=sys.stderr)
        return 1
    if ok != total:
        print(f"tic-decode: {total - ok} of {total} frames invalid", file=sys.stderr)
        return 1
    return 0
