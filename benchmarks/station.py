"""Bench station throughput: boxes per hour for 1, 4 and 8 virtual boxes, each
link throttled to 921600 baud (--baud-limit), through the whole pipeline
(connect, identify, serial, credentials, image, flash, reset, the hw-tests
acceptance suite on pytest-embedded, label, ledger) against a real Mosquitto.

    python -m benchmarks.station [--counts 1,4,8]

Parallel efficiency = throughput at N / (N x throughput at 1). Every box is
blank, as a box fresh from the factory: the full image goes over the link.
The boxes, the broker and the station share this machine's cores; on a bench
PC the boxes' CPUs are their own, so the figures here are a lower bound.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from common import credentials
from flashing import image, slots, station

BAUD = 921600


def run_one(count: int, work: Path, broker_port: int, fw: image.Firmware) -> dict:
    out = work / f"n{count}"
    vs = slots.start_virtual(count, out / "vbox", baud_limit=True)
    try:
        cfg = station.Config(out_dir=out, ledger=out / "ledger.sqlite", operator_pub=credentials.new_operator_key()[1],
                             key_source="throwaway", firmware=fw, broker=f"127.0.0.1:{broker_port}",
                             baud=BAUD, station="bench", technician="bench")
        t0 = time.monotonic()
        rep = station.Station(cfg).run(vs)
        wall = time.monotonic() - t0
    finally:
        slots.stop_virtual(vs)
    steps: dict[str, list[float]] = {}
    for b in rep["boxes"]:
        for s in b["steps"]:
            steps.setdefault(s["step"], []).append(s.get("seconds", 0.0))
    return {
        "boxes": count,
        "passed": rep["summary"]["pass"],
        "wall_s": round(wall, 2),
        "boxes_per_hour": round(count / wall * 3600, 1),
        "median_step_s": {k: round(statistics.median(v), 2) for k, v in steps.items()},
        "flash_bytes_written": statistics.median(b["images"]["flash"]["bytes_written"]
                                                 for b in rep["boxes"] if b.get("images") and "flash" in b["images"]),
    }


def run(counts: tuple[int, ...] = (1, 4, 8)) -> dict:
    from tests.helpers import Mosquitto
    work = Path(tempfile.mkdtemp(prefix="hb-bench-station-"))
    broker = Mosquitto(work / "broker").start()
    try:
        fw = image.load_firmware(None, virtual=True)
        from firmware import build as fb
        fb.image_files(fw.lock)                     # compile the agent once, outside the timings
        results = [run_one(n, work, broker.port, fw) for n in counts]
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    one = next((r for r in results if r["boxes"] == 1), None)
    for r in results:
        if one:
            r["parallel_efficiency"] = round(r["boxes_per_hour"] / (r["boxes"] * one["boxes_per_hour"]), 2)
    return {"baud": BAUD, "baud_limit": True, "cpus": os.cpu_count(), "runs": results}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", default="1,4,8")
    a = ap.parse_args()
    print(json.dumps(run(tuple(int(x) for x in a.counts.split(","))), indent=1))
