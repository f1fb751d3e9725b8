"""The cold modules while a box handles desired documents (issue 13):

- loads: how many times each agent module is imported afresh (not found in
  sys.modules) while the box handles one desired document, counted under CPython
  by a meta path finder that only counts (the on-box code carries no counter);
- heap, on the MicroPython unix port (agent as .mpy, gc.threshold as agent/boot.py
  sets it): the smallest free heap with which the box still handles the document
  (bisected: a ballast takes the rest of the heap), i.e. its peak above the live
  heap, collections included; the bytes it allocates with the collector off
  (gc.mem_alloc(): module loads included); the live heap after it.
  (micropython.mem_peak() does not serve: on this port it never goes down when
  the collector frees memory, only on an explicit free.)

The box is built by agent/boot.py with the sim HAL and the default config; the
documents are the contract's examples (docs/contract/examples), handed to
Box.on_message as the MQTT reader would.

    python -m benchmarks.cold [--src DIR]    # DIR: another checkout, e.g. the code before
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DRIVER = Path(__file__).resolve().parent / "cold_box.py"


def documents(src: Path) -> list[dict]:
    ex = src / "docs" / "contract" / "examples"
    ch = json.loads((ex / "desired-channels.json").read_text())
    op = json.loads((ex / "desired-options.json").read_text())
    pa = json.loads((ex / "desired-parental.json").read_text())
    ch2 = dict(ch, version=ch["version"] + 1)
    bad = dict(ch, version=ch["version"] + 2, channels="none")
    return [{"section": "channels", "doc": ch}, {"section": "options", "doc": op},
            {"section": "parental", "doc": pa},
            {"section": "channels", "doc": ch2},      # again, now with a parental schedule in RAM
            {"section": "channels", "doc": bad},      # rejected
            {"section": "channels", "doc": ch2}]      # replay


def compile_mpy(src: Path, out: Path) -> Path:
    from firmware.toolchain import mpy_compile, mpy_cross_exe
    cross = mpy_cross_exe()
    agent = src / "agent"
    for p in sorted(agent.rglob("*.py")):
        if "__pycache__" in p.parts or (p.parent.name == "hal" and p.name.startswith("esp32")):
            continue
        rel = p.relative_to(src).as_posix()
        mpy_compile(cross, p, rel, out / Path(rel).with_suffix(".mpy"), 3)
    for d in agent.rglob("*.json"):
        t = out / d.relative_to(src)
        t.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(d, t)
    return out


def _lines(cmd, env, cwd) -> list[dict]:
    p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    if p.returncode:
        raise RuntimeError(f"{cmd[0]} failed ({p.returncode}): {p.stderr[-2000:]}{p.stdout[-2000:]}")
    return [json.loads(ln) for ln in p.stdout.splitlines() if ln.startswith("{")]


def _config(work: Path, name: str) -> str:
    cfg = work / f"{name}.json"
    sd = work / f"state-{name}"
    shutil.rmtree(sd, ignore_errors=True)
    cfg.write_text(json.dumps({"box_id": "bench-cold", "hal": "sim", "state_dir": str(sd)}))
    return str(cfg)


def need(mp: list, env: dict, work: Path, docs: Path, k: int, expect: str, step: int = 256) -> int:
    """The smallest free heap (bytes, to `step`) with which the box still handles
    document k as it should: its peak above the live heap, collections included."""
    def ok(free: int) -> bool:
        p = subprocess.run(mp + [_config(work, "need"), str(docs), "need", str(k), str(free)],
                           env=env, cwd=str(work), capture_output=True, text=True, timeout=120)
        last = [json.loads(ln) for ln in p.stdout.splitlines() if ln.startswith("{")][-1:]
        return (p.returncode == 0 and "desired_failed" not in p.stdout and bool(last)
                and last[0].get("n") == k and last[0].get("status") == expect)
    lo, hi = 0, 65536             # lo fails (or is untried), hi works
    if not ok(hi):
        return -1
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def measure(src: Path = ROOT, heap: str = "256k") -> dict:
    from firmware.toolchain import micropython_exe
    src = Path(src).resolve()
    work = Path(tempfile.mkdtemp(prefix="bench-cold-"))
    try:
        docs = work / "docs"
        docs.mkdir()
        for i, d in enumerate(documents(src), 1):
            (docs / f"{i}.json").write_text(json.dumps(d))
        out = {}
        env = dict(os.environ)
        env["PYTHONPATH"] = str(src)
        out["cpython"] = _lines([sys.executable, str(DRIVER), _config(work, "cpython"), str(docs), "loads"],
                                env, str(work))
        env = dict(os.environ)
        env["MICROPYPATH"] = str(compile_mpy(src, work / "mpy")) + ":.frozen"
        mp = [micropython_exe(), "-X", f"heapsize={heap}", str(DRIVER)]
        out["micropython"] = _lines(mp + [_config(work, "mp"), str(docs), "heap"], env, str(work))
        for i, a in enumerate(out["cpython"][1:], 1):
            out["micropython"][i]["need"] = need(mp, env, work, docs, i, a["status"])
        per_doc = []
        for a, b in zip(out["cpython"][1:], out["micropython"][1:]):
            loads = a["loads"]
            per_doc.append({"section": a["section"], "status": a["status"],
                            "cold_loads": {k[6:]: v for k, v in sorted(loads.items()) if k.endswith("_cold")},
                            "rule_loads": sum(v for k, v in loads.items() if not k.endswith("_cold")),
                            "runtime_cold_loads": loads.get("agent.runtime_cold", 0),
                            "heap_alloc_gc_off": b["alloc"], "heap_free_needed": b["need"],
                            "live_after": b["live_after"]})
        return {"boot_loads": {k[6:]: v for k, v in sorted(out["cpython"][0]["boot"].items()) if k.endswith("_cold")},
                "live_after_boot": out["micropython"][0]["live"],
                "documents": per_doc,
                "max_runtime_cold_loads_per_document": max(d["runtime_cold_loads"] for d in per_doc),
                "max_heap_free_needed": max(d["heap_free_needed"] for d in per_doc),
                "max_heap_alloc_gc_off": max(d["heap_alloc_gc_off"] for d in per_doc),
                "heap": heap}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run() -> dict:
    return {"interpreter": "loads: CPython; heap: micropython unix port, agent as .mpy (mpy-cross -O3)",
            **measure(ROOT)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", default=str(ROOT), help="the checkout to measure (its agent/ and docs/)")
    a = ap.parse_args(argv)
    print(json.dumps(measure(Path(a.src)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
