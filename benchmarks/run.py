"""`make bench`: every benchmark, side by side in one run, into one results file.

Usage: python -m benchmarks.run --out benchmarks/results.json [--only footprint,tic,...]
           [--summary benchmarks/summary.md]

Each benchmark is a module benchmarks/<name>.py with run() -> dict of figures.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from benchmarks import summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results.json")
    ap.add_argument("--only", default="")
    ap.add_argument("--summary", default="benchmarks/summary.md", help="the one-page summary (Markdown)")
    a = ap.parse_args(argv)
    only = set(filter(None, a.only.split(",")))
    out = {}
    if only and Path(a.out).exists():
        # A partial run updates the figures it runs and keeps the others.
        try:
            out = json.loads(Path(a.out).read_text())
        except ValueError:
            out = {}
    out.update({"machine": summary.machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%S")})
    out.setdefault("seconds", {})
    benches = {}
    # The agent under MicroPython, what it costs on the line, and a fleet on this machine.
    for name in ("footprint", "wire", "fleet", "fanout"):
        benches[name] = importlib.import_module(f"benchmarks.{name}").run
    for name in ("tic", "dns", "speed", "ingest", "ingest_fleet", "retention", "flash", "station", "cold", "api",
                 "ota"):
        try:
            benches[name] = importlib.import_module(f"benchmarks.{name}").run
        except (ImportError, AttributeError):
            pass
    for name, fn in benches.items():
        if only and name not in only:
            continue
        print(f"bench: {name} ...", flush=True)
        t = time.time()
        try:
            out[name] = fn()
        except Exception as e:   # one failed bench must not hide the others' figures
            out[name] = {"error": repr(e)}
        out["seconds"][name] = round(time.time() - t, 1)
        Path(a.out).write_text(json.dumps(out, indent=1, default=str))
    summary.write(out, Path(a.summary))
    print(f"bench: figures written to {a.out}, summary to {a.summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
