"""The one-page summary of benchmarks/results.json (benchmarks/summary.md), and the
description of the machine the figures come from."""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path


def _first(cmd: list[str]) -> str | None:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = (r.stdout or r.stderr).strip().splitlines()
    return out[0] if out else None


def machine() -> dict:
    cpu = None
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem_gb = round(kb / 1024 / 1024, 1)
    except (OSError, AttributeError):
        pass
    mosq = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    mp = Path(sys.executable).parent / "micropython"
    return {
        "python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
        "cpu_model": cpu, "memory_gb": mem_gb,
        "mosquitto": _first([mosq, "-h"]) if os.path.exists(mosq) else None,
        "micropython": _first([str(mp), "-c", "import sys; print(sys.version)"]) if mp.exists() else None,
    }


def _g(d, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _n(x, unit: str = "", digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        x = round(x, digits)
    if isinstance(x, int) and abs(x) >= 10000:
        return f"{x:,}".replace(",", " ") + unit
    return f"{x}{unit}"


def _kib(b) -> str:
    return "-" if b is None else f"{b / 1024:.1f} KiB"


def _problem(r) -> str | None:
    if not isinstance(r, dict):
        return "no figures"
    if "error" in r:
        return "error: " + str(r["error"])[:200]
    if "skipped" in r:
        return "skipped: " + str(r["skipped"])[:200]
    return None


def render(res: dict) -> str:
    m = res.get("machine", {})
    L = ["# Benchmark summary", "",
         f"{res.get('when', '?')} on {m.get('cpu_model') or '?'} ({m.get('cpus')} CPUs, {m.get('memory_gb')} GB), "
         f"{m.get('platform')}; {m.get('mosquitto') or 'mosquitto ?'}; micropython `sys.version`: {m.get('micropython') or '?'}. "
         "Full figures: benchmarks/results.json; method and discussion: docs/performance.md.", ""]

    fp = res.get("footprint")
    if fp is not None:
        L += ["## Agent footprint (real MicroPython, unix port)", ""]
    if fp is None:
        pass
    elif _problem(fp):
        L += [f"- {_problem(fp)}", ""]
    else:
        day, gr, cpu = fp.get("day", {}), fp.get("growth", {}), fp.get("cpu", {})
        bp, e32 = fp.get("day_board_boot_path") or {}, fp.get("day_esp32_all_features") or {}
        live = gr.get("live_heap_bytes", {})
        L += ["| figure | value |", "|---|---|",
              f"| smallest `-X heapsize` for a full sim day (288 reports) | {_n(day.get('smallest_kb'), ' KiB')} |",
              f"| the same on the board boot path | {_n(bp.get('smallest_kb'), ' KiB')} |",
              f"| the same on the ESP32 path, every feature on (goal <= 112 KiB) | {_n(e32.get('smallest_kb'), ' KiB')} |",
              f"| live heap after GC: steady (median) / peak (max) | {_kib(live.get('median'))} / {_kib(live.get('max'))} |",
              f"| heap over {_n(gr.get('cycles'))} cycles: first tenth / last tenth (median) | "
              f"{_kib(gr.get('first_tenth_median'))} / {_kib(gr.get('last_tenth_median'))} |",
              f"| slope, second half (bytes per 1,000 cycles) vs noise (stdev) | "
              f"{_n(gr.get('slope_bytes_per_1000_cycles_second_half'))} vs {_n(gr.get('noise_stdev_bytes'))} |",
              f"| CPU per telemetry cycle | {_n(cpu.get('ms_per_cycle'), ' ms', 3)} |",
              f"| CPU to start the agent | {_n(cpu.get('startup_cpu_ms'), ' ms')} |", ""]

    w = res.get("wire")
    m = w.get("measured") if isinstance(w, dict) else None
    if m is not None:
        L += ["## Wire cost, measured (a bare box: a report every 300 s; IP bytes counted by the kernel "
              "on a veth link, offline detection timed on both ends)", ""]
        if _problem(m):
            L += [f"- {_problem(m)}", ""]
        else:
            cols = [("old", "old defaults"), ("new", "new defaults"), ("new_tls", "new defaults, TLS")]
            cols = [c for c in cols if c[0] in m]
            L += ["| figure | " + " | ".join(c[1] for c in cols) + " |", "|---|" + "---|" * len(cols)]

            def mrow(label, fn):
                L.append(f"| {label} | " + " | ".join(_problem(m.get(k)) or fn(m.get(k) or {}) for k, _ in cols) + " |")
            mrow("keepalive; pings", lambda p: f"{p.get('keepalive_s')} s; {p.get('ping')}")
            mrow("IP bytes/day (up / down / connection set-up)", lambda p: (
                f"**{_n(_g(p, 'ip_bytes_per_day', 'total'))}** ({_n(_g(p, 'ip_bytes_per_day', 'up'))} / "
                f"{_n(_g(p, 'ip_bytes_per_day', 'down'))} / {_n(_g(p, 'ip_bytes_per_day', 'connection_setup'))})"))
            mrow("IP packets/day", lambda p: _n(p.get("ip_packets_per_day")))
            mrow("broker sees a frozen box after (rule)", lambda p: (
                f"{_n(_g(p, 'offline_seen_by_broker', 'measured_s'), ' s')} "
                f"({_n(_g(p, 'offline_seen_by_broker', 'rule_s'), ' s')})" if "offline_seen_by_broker" in p else "as above"))
            mrow("box sees a frozen broker after (rule)", lambda p: (
                f"{_n(_g(p, 'offline_seen_by_box', 'measured_s'), ' s')} "
                f"({_n(_g(p, 'offline_seen_by_box', 'rule_s'), ' s')})" if "offline_seen_by_box" in p else "as above"))
            L.append("")
    profiles = {"default": w} if isinstance(w, dict) and "mqtt_bytes_per_day" in w else \
        {k: v for k, v in (w or {}).items() if k != "measured"}
    if w is not None:
        ka = next((p.get("keepalive_s") for p in profiles.values() if isinstance(p, dict) and p.get("keepalive_s")), "?")
        L += [f"## Wire cost by MQTT packet (one box, one day, a report every 300 s, keepalive {ka} s)", ""]
    if w is not None and _problem(w):
        L += [f"- {_problem(w)}", ""]
    elif profiles:
        names = list(profiles)
        L += ["| figure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]

        def row(label, fn):
            cells = []
            for n in names:
                p = profiles[n]
                cells.append(_problem(p) or fn(p))
            L.append(f"| {label} | " + " | ".join(cells) + " |")
        row("telemetry kinds", lambda p: ", ".join(k.split("/")[1] for k in p.get("by_topic_up", {})
                                                   if k.startswith("telemetry/")) or "-")
        row("MQTT bytes/day up / down", lambda p: f"{_n(_g(p, 'mqtt_bytes_per_day', 'up'))} / "
                                                  f"{_n(_g(p, 'mqtt_bytes_per_day', 'down'))}")
        row("IP bytes/day (estimate)", lambda p: f"{_n(_g(p, 'ip_bytes_per_day_estimate', 'total'))} "
                                                 f"({_n(p.get('mean_bps'), ' bit/s')} mean)")
        row("share of that from keepalive pings", lambda p: _n((p.get("ping_bytes_share_ip") or 0) * 100, " %"))
        row("TLS extra (estimate), bytes/day", lambda p: _n(p.get("tls_extra_bytes_per_day_estimate")))
        row("share of a 2 / 10 Mbps line", lambda p: " / ".join(
            f"{v * 100:.4f} %" for v in (p.get("share_of_line") or {}).values()))
        L.append("")

    f = res.get("fleet")
    if f is not None:
        L += [f"## Fleet on one machine ({_n(_g(f, 'boxes'))} MicroPython agents, one Mosquitto, one ingest)", ""]
    if f is None:
        pass
    elif _problem(f):
        L += [f"- {_problem(f)}", ""]
    else:
        st, fo, sm, dv = f.get("steady", {}), f.get("fanout", {}), f.get("storm", {}), f.get("delivery", {})
        L += ["| figure | value |", "|---|---|",
              f"| agents online / alive at the end | {_n(f.get('online_after_spawn'))} / {_n(dv.get('agents_alive_at_end'))} |",
              f"| memory per agent: RSS / PSS | {_n(_g(st, 'rss_kb_per_agent', 'mean'), ' KiB')} / "
              f"{_n(_g(st, 'pss_kb_per_agent', 'mean'), ' KiB')} |",
              f"| CPU (cores): agents / broker / ingest | {_n(_g(st, 'cpu_cores', 'agents'), '', 3)} / "
              f"{_n(_g(st, 'cpu_cores', 'broker'), '', 3)} / {_n(_g(st, 'cpu_cores', 'ingest'), '', 3)} |",
              f"| ingest rate (expected) | {_n(st.get('ingest_msgs_per_s'), ' msg/s')} "
              f"({_n(st.get('expected_msgs_per_s'), ' msg/s')}, one report per box every "
              f"{_n(f.get('telemetry_interval_s'), ' s')}) |",
              f"| end-to-end delivery | {_n(dv.get('messages'))} messages, {_n(dv.get('gaps'))} gaps, "
              f"slot-to-database p50 {_n(_g(dv, 'slot_to_db_latency_s', 'p50'), ' s', 3)}, "
              f"p99 {_n(_g(dv, 'slot_to_db_latency_s', 'p99'), ' s', 3)} |",
              f"| update fan-out: acked, ack latency p50 / p99 | {_n(fo.get('acked'))} of {_n(fo.get('pushed'))}, "
              f"{_n(_g(fo, 'ack_latency_s', 'p50'), ' s', 3)} / {_n(_g(fo, 'ack_latency_s', 'p99'), ' s', 3)} |",
              f"| reconnect storm: peak per second vs lock-step worst case | {_n(sm.get('peak_per_s'))} vs "
              f"{_n(sm.get('lockstep_worst_case_per_s'))} (all back after {_n(sm.get('all_back_after_s'), ' s')}, "
              f"broker down {_n(sm.get('broker_down_s'), ' s')}) |", ""]
        h = sm.get("histogram_per_s") or []
        if h:
            L += ["Reconnects per second after the broker came back: " + " ".join(str(x) for x in h), ""]

    fo = res.get("fanout")
    if fo is not None:
        L += [f"## Update fan-out to {_n(_g(fo, 'boxes'))} agents (publish to the box's applied report)", ""]
        if _problem(fo):
            L += [f"- {_problem(fo)}", ""]
        else:
            L += ["| how | acked | p50 / p99 | all applied after |", "|---|---|---|---|"]
            for k, label in (("single", "one client, all at once (the old way)"),
                             ("fanout", "4 connections, all at once"),
                             ("campaign", "a one-wave campaign, window of 100 boxes")):
                r = fo.get(k) or {}
                L.append(f"| {label} | {_n(r.get('acked'))} of {_n(r.get('pushed'))} | "
                         f"{_n(_g(r, 'ack_latency_s', 'p50'), ' s', 2)} / {_n(_g(r, 'ack_latency_s', 'p99'), ' s', 2)} | "
                         f"{_n(r.get('all_acked_after_s'), ' s', 2)} |")
            L += ["", f"Target p99 <= {_n(fo.get('target_p99_s'), ' s')}; the figure before campaigns: "
                      f"p99 {_n(fo.get('old_p99_s'), ' s', 2)}.", ""]

    if any(k in res for k in PREVIOUS):
        L += ["## Previous figures", ""]
    for key, (label, lines) in PREVIOUS.items():
        r = res.get(key)
        if r is not None:
            why = _problem(r)
            L += [f"- {label}: {why}"] if why else lines(r)
    secs = res.get("seconds") or {}
    if secs:
        L += ["", "Run time: " + ", ".join(f"{k} {v:.0f} s" for k, v in secs.items())
              + f" (total {sum(secs.values()) / 60:.1f} min)."]
    return "\n".join(L) + "\n"


def _tic_lines(t: dict) -> list[str]:
    out = []
    for mode in ("historic", "standard", "standard_three_phase"):
        r = t.get(mode) or {}
        out.append(f"- TIC {mode}: {_n(r.get('frames'))} frames, {_n(r.get('frames_ok'))} good, "
                   f"{_n(r.get('wrong_values'))} wrong values, {_n(r.get('decode_bytes_per_s'), ' B/s')} decoded (CPython)")
    mp = t.get("micropython") or {}
    if "heap_reader" in mp:
        out.append(f"- TIC under MicroPython: reader {_n(mp.get('heap_reader'))} bytes of heap")
    return out


def _speed_lines(s: dict) -> list[str]:
    if "rows" not in s:
        return ["- speed test accuracy: no rows"]
    errs = [abs(r.get("down_err_pct") or 0) for r in s["rows"]] + [abs(r.get("up_err_pct") or 0) for r in s["rows"]]
    out = [f"- speed test accuracy: {len(s['rows'])} shaped links, worst goodput error "
           f"{max(errs):.1f} % (target +-3 %)"]
    sw = s.get("sweep") or {}
    if "points" in sw:
        out.append(f"- speed test sweep: {len(sw['points'])} points x {sw['runs_per_point']} runs, worst download "
                   f"error {sw['worst_pct']} % at {sw['worst_point']} (rate Mbps, RTT ms, burst), "
                   f"{'all' if sw['all_within_3pct'] else 'NOT all'} within +-3 %")
    return out


def _ingest_lines(ing: dict) -> list[str]:
    out = []
    for k, v in ing.items():
        if isinstance(v, dict) and "ingest_msgs_per_s" in v:
            out.append(f"- ingest {k}: {_n(v['ingest_msgs_per_s'], ' msg/s')} "
                       f"({_n(v.get('ratio_to_mosquitto_sub'), '', 3)} x mosquitto_sub)")
        elif isinstance(v, dict) and "lag_p50_ms" in v:
            out.append(f"- ingest {k}: lag p50 {_n(v['lag_p50_ms'], ' ms')}, p99 {_n(v.get('lag_p99_ms'), ' ms')} "
                       f"at {_n(v.get('rate_msgs_per_s'), ' msg/s')}")
    return out


def _ingest_fleet_lines(f: dict) -> list[str]:
    out = []
    for db in ("sqlite", "postgresql"):
        st = f.get(f"{db}_store") or {}
        if st:
            out.append(f"- store on {db}, fleet-shaped batches: set-based "
                       f"{_n(_g(st, 'set_based', 'msgs_per_s'), ' msg/s')}, row by row (before) "
                       f"{_n(_g(st, 'row_by_row_baseline', 'msgs_per_s'), ' msg/s')} (classify + write)")
        e = f.get(f"{db}_e2e") or {}
        if e:
            out.append(f"- ingest on {db} through the generated broker (TLS, {e.get('boxes')} box accounts): "
                       f"1 process {_n(_g(e, 'ingest_1proc', 'msgs_per_s'), ' msg/s')} "
                       f"({_n(e.get('ratio_1proc_to_raw'), '', 3)} x raw paho), 2 processes "
                       f"{_n(_g(e, 'ingest_2proc', 'msgs_per_s'), ' msg/s')} "
                       f"({_n(e.get('ratio_2proc_to_1proc'), '', 3)} x one); raw paho "
                       f"{_n(_g(e, 'raw_paho', 'msgs_per_s'), ' msg/s')}")
            if "ingest_1proc_before" in e:
                out.append(f"  - before ({_g(e, 'ingest_1proc_before', 'tree')}), same run: 1 process "
                           f"{_n(_g(e, 'ingest_1proc_before', 'msgs_per_s'), ' msg/s')} "
                           f"({_n(e.get('ratio_1proc_before_to_raw'), '', 3)} x raw paho); "
                           f"speed-up {_n(e.get('speedup_1proc'), '', 2)}")
    return out


def _retention_lines(r: dict) -> list[str]:
    y, st = r.get("year") or {}, r.get("status") or {}
    out = []
    if y:
        out.append(f"- retention, {y.get('days')} days on PostgreSQL ({_n(y.get('messages_per_day'))} messages "
                   f"a day, kept {_n(y.get('retention_days'))} days): partitions created "
                   f"{_n(y.get('partitions_created'))}, dropped {_n(y.get('partitions_dropped'))}, daily "
                   f"partitions left {_n(y.get('daily_partitions_left'))} ({y.get('first_partition')} .. "
                   f"{y.get('last_partition')}); slowest maintain {_n(y.get('slowest_maintain_ms'), ' ms')}")
    if st:
        out.append(f"- status at {_n(st.get('boxes'))} boxes beside the year: paged alarm query "
                   f"{_n(st.get('paged_alarm_query_s'), ' s', 3)}, one box "
                   f"{_n(st.get('one_box_status_s'), ' s', 3)}, `ops status` over every box "
                   f"{_n(st.get('ops_status_all_boxes_s'), ' s', 2)} (goal: under 1 s)")
    return out


def _flash_lines(fl: dict) -> list[str]:
    return [f"- flash at {_n(fl.get('baud'))} baud: full image {_n(fl.get('full_flash_s'), ' s')}, "
            f"re-flash after one file {_n(fl.get('reflash_one_file_s'), ' s')} "
            f"(payload ratio {_n(fl.get('reflash_payload_ratio'), '', 3)})"]


def _station_lines(stn: dict) -> list[str]:
    return [f"- bench station, {r.get('boxes')} boxes: {_n(r.get('boxes_per_hour'))} boxes/hour, "
            f"{r.get('passed')} passed, parallel efficiency {_n(r.get('parallel_efficiency'), '', 2)}"
            for r in stn.get("runs", [])]


def _cold_lines(c: dict) -> list[str]:
    return [f"- cold modules, per desired document: agent/runtime_cold.py loaded at most "
            f"{_n(c.get('max_runtime_cold_loads_per_document'))} time(s); free heap needed at most "
            f"{_kib(c.get('max_heap_free_needed'))}, allocated (collector off) at most "
            f"{_kib(c.get('max_heap_alloc_gc_off'))} (MicroPython)"]


def _dns_lines(d: dict) -> list[str]:
    mp, cp = d.get("micropython_64k") or {}, d.get("cpython") or {}
    return [f"- DNS forwarder under MicroPython (.mpy, 64 KiB heap): module {_n(mp.get('module'))} B, "
            f"running {_n(mp.get('running'))} B, with a full cache {_n(mp.get('after'))} B of heap; "
            f"{_n(mp.get('qps_cached'))} cached and {_n(mp.get('qps_forwarded'))} forwarded answers/s "
            f"(CPython: {_n(cp.get('qps_cached'))} and {_n(cp.get('qps_forwarded'))})"]


def _api_lines(a: dict) -> list[str]:
    out = []
    for k in ("sqlite", "postgresql"):
        v = a.get(k)
        if isinstance(v, dict):
            out.append(f"- operator API at {_n(v.get('boxes'))} boxes on {k}: slowest call p95 "
                       f"{_n(v.get('api_p95_max_ms'), ' ms')} (target 200), slowest page p95 "
                       f"{_n(v.get('page_p95_max_ms'), ' ms')} (target 500); box detail p95 "
                       f"{_n(_g(v, 'api_box_detail', 'p95_ms'), ' ms')}")
        elif v:
            out.append(f"- operator API on {k}: {v}")
    return out


# The other issues' benchmarks: results key -> (label on a problem, lines when fine).
PREVIOUS = {"tic": ("TIC", _tic_lines), "speed": ("speed test accuracy", _speed_lines),
            "ingest": ("ingest", _ingest_lines), "ingest_fleet": ("ingest, fleet-shaped", _ingest_fleet_lines),
            "retention": ("retention and status", _retention_lines), "flash": ("flash", _flash_lines),
            "station": ("bench station", _station_lines), "cold": ("cold modules", _cold_lines),
            "dns": ("DNS forwarder", _dns_lines), "api": ("operator API", _api_lines)}


def write(res: dict, path: Path) -> None:
    path.write_text(render(res))


if __name__ == "__main__":
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results.json")
    print(render(json.loads(src.read_text())))
