"""`make chaos`: every fault run of tests/chaos/ at full size, then every fuzz target
(tests/test_fuzz_*.py) at --fuzz-examples; prints the tallies."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

import tests.chaos
from tests.chaos.faults import broker_crash, partition, power_cuts
from tests.chaos.harness import ChaosError, Tally
from tests.chaos.netns import netns_available

TESTS = Path(__file__).resolve().parents[1]


def fuzz_modules() -> list:
    """Every tests/test_fuzz_*.py module, imported (after HB_FUZZ_EXAMPLES is set:
    the budget is read at import)."""
    return [importlib.import_module(f"tests.{p.stem}") for p in sorted(TESTS.glob("test_fuzz_*.py"))]

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.chaos", description=tests.chaos.__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=int(os.environ.get("HB_CHAOS_KILLS", 200)))
    ap.add_argument("--boxes", type=int, default=int(os.environ.get("HB_CHAOS_BOXES", 8)))
    ap.add_argument("--fuzz-examples", type=int, default=int(os.environ.get("HB_FUZZ_EXAMPLES", 1000)),
                    help="hypothesis examples per fuzz target")
    ap.add_argument("--only", default="", help="comma-separated: cuts,crash,partition,fuzz")
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: a new temporary one)")
    a = ap.parse_args(argv)
    only = set(filter(None, a.only.split(",")))
    import tempfile
    work = a.dir or Path(tempfile.mkdtemp(prefix="hb-chaos-"))
    t0 = time.time()
    tallies: list[Tally] = []
    failed = False

    def step(name, fn):
        nonlocal failed
        if only and name not in only:
            return
        print(f"chaos: {name} ...", flush=True)
        t = time.time()
        try:
            tally = fn()
        except ChaosError as e:
            print(f"chaos: {name}: FAILED: {e}", flush=True)
            failed = True
            return
        tallies.append(tally)
        print(f"chaos: {tally.line()} ({time.time() - t:.0f} s)", flush=True)
        if tally.failures or tally.lost or tally.duplicated:
            failed = True
            for f in tally.failures[:30]:
                print(f"chaos:   FAIL {f}", flush=True)

    step("cuts", lambda: power_cuts(work / "cuts", a.kills, a.boxes))
    step("crash", lambda: broker_crash(work / "crash"))
    why = netns_available()
    if why and (not only or "partition" in only):
        print(f"chaos: partition: SKIPPED: {why}")
    else:
        step("partition", lambda: partition(work / "partition"))
    fuzz_counts: dict[str, int] = {}
    if not only or "fuzz" in only:
        os.environ["HB_FUZZ_EXAMPLES"] = str(a.fuzz_examples)
        mods = fuzz_modules()
        from tests import fuzzing
        print(f"chaos: fuzz ({a.fuzz_examples} examples per target) ...", flush=True)
        for name, fn in [t for m in mods for t in m.TARGETS]:
            t = time.time()
            try:
                fn()
            except Exception as e:       # hypothesis re-raises the shrunk failing example
                failed = True
                print(f"chaos: fuzz {name}: FAILED: {e!r}", flush=True)
            print(f"chaos: fuzz {name}: {fuzzing.CASES.get(name, 0)} cases ({time.time() - t:.0f} s)", flush=True)
        fuzz_counts = dict(fuzzing.CASES)
        for name, why in fuzzing.SKIPPED.items():
            print(f"chaos: fuzz {name}: SKIPPED: {why}")
        from tests import test_fuzz_desired as fd
        for why, n in fd.KNOWN.items():
            print(f"chaos: fuzz: known difference (counted under HB_FUZZ_STRICT=0): {why}: {n} cases")
        if fd.ORDER_ONLY:
            print(f"chaos: fuzz: {len(fd.ORDER_ONLY)} documents with several faults: MicroPython named "
                  "another wrong field first (dict order)")
    kills = sum(t.kills for t in tallies)
    seqs = sum(t.seqs_checked for t in tallies)
    lost = sum(t.lost for t in tallies)
    dup = sum(t.duplicated for t in tallies)
    print("\nchaos tallies")
    for t in tallies:
        print(f"  {t.line()}")
    if fuzz_counts:
        print("  fuzz: " + ", ".join(f"{k} {v}" for k, v in fuzz_counts.items()))
    print(f"  TOTAL: kills done {kills}, seqs checked {seqs}, lost {lost}, duplicated {dup}, "
          f"fuzz cases run {sum(fuzz_counts.values())}  ({time.time() - t0:.0f} s, work dir {work})")
    bad = failed or lost or dup
    print("chaos: " + ("FAILED" if bad else "PASSED"))
    if not bad and a.dir is None:
        import shutil
        shutil.rmtree(work, ignore_errors=True)      # kept after a failure, for the post-mortem
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
