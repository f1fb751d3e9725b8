"""`make bench`: every benchmark, side by side in one run, into one results file.

Usage: python -m bench.run --out bench/results.json [--only footprint,tic,...]
"""
from __future__ import annotations

import argparse
import importlib
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from homebox import boxrun

ROOT = Path(__file__).resolve().parent.parent


def footprint() -> dict:
    """Smallest -X heapsize that runs 1,000 telemetry cycles, and the live heap after."""
    sys.path.insert(0, str(ROOT / "tests"))
    import tempfile

    from helpers import Mosquitto  # noqa: E402
    work = Path(tempfile.mkdtemp(prefix="hb-bench-"))
    broker = Mosquitto(work / "broker").start()
    results = {}
    try:
        for kb in (56, 64, 72, 80, 96, 128):
            cfg = boxrun.write_config(work / f"box{kb}", box_id=f"bench-{kb}", broker_host="127.0.0.1",
                                      broker_port=broker.port, speedup=60000, telemetry_interval=60,
                                      max_cycles=1000, drain_rate=5000)
            cmd, env = boxrun.box_command(cfg, micropython=True, heap=f"{kb}k")
            p = subprocess.run(cmd, env=env, cwd=boxrun.neutral_cwd(), capture_output=True, text=True, timeout=300)
            ok = p.returncode == 0 and "cycles=1000" in p.stdout
            alloc = None
            for word in p.stdout.split():
                if word.startswith("heap_alloc="):
                    alloc = word.split("=")[1]
            results[f"{kb}k"] = {"ok": ok, "heap_alloc_after": alloc}
            if ok and "smallest_heap_kb" not in results:
                results["smallest_heap_kb"] = kb
    finally:
        broker.stop()
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results.json")
    ap.add_argument("--only", default="")
    a = ap.parse_args(argv)
    only = set(filter(None, a.only.split(",")))
    out = {"machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                       "cpus": __import__("os").cpu_count()}, "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
    benches = {"footprint": footprint}
    for name in ("tic", "speed", "ingest", "flash"):
        try:
            benches[name] = importlib.import_module(f"bench.{name}").run
        except (ImportError, AttributeError):
            pass
    for name, fn in benches.items():
        if only and name not in only:
            continue
        print(f"bench: {name} ...", flush=True)
        try:
            out[name] = fn()
        except Exception as e:   # one failed bench must not hide the others' figures
            out[name] = {"error": repr(e)}
        Path(a.out).write_text(json.dumps(out, indent=1, default=str))
    print(f"bench: figures written to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
