"""A fleet on one machine: N real agents, each its own `micropython` process with
the sim HAL, against one Mosquitto and one ingest process (SQLite).

Figures:
- memory per agent (RSS and PSS from /proc/PID/smaps_rollup) and CPU (agents,
  broker, ingest) over a steady window;
- ingest rate and end-to-end delivery: every (box, boot) stream in the database
  is checked for gaps, and the latency from each report's slot on the box's
  clock to the database commit is taken at p50/p99 (the sim clock runs at real
  speed here, started at the box's launch);
- update fan-out: one options document pushed to every box (retained, one topic
  per box), the latency to each box's reported document at p50/p99;
- reconnect storm: the broker restarts; the histogram of reconnects per second
  (from the broker's log) and its peak against the lock-step worst case (every
  box in the same second, as a client without jitter does).

    python -m benchmarks.fleet [--boxes 1000] [--interval 10] [--window 60]

The count is configurable (HB_FLEET_BOXES for `make bench`). Needs about 6 MB of
private memory and 3 file descriptors per agent (the broker holds one socket
each): the soft fd limit is raised to the hard one.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from agent import topics
from backend.store import Store
from benchmarks.agentrun import ROOT, Mosquitto, publish, workdir
from homebox import boxrun

OPTIONS = {"speed_tier": "10M", "bouquets": [], "phone": {"enabled": True, "number": "+33299000000"}}


def _pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(p / 100 * len(xs)))], 3)


def _proc_mem(pid: int) -> tuple[int, int]:
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for ln in f:
                k, _, v = ln.partition(":")
                if k == "Rss":
                    rss = int(v.split()[0])
                elif k == "Pss":
                    pss = int(v.split()[0])
    except OSError:
        pass
    return rss, pss


def _cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return int(parts[11]) + int(parts[12])       # utime + stime
    except (OSError, IndexError, ValueError):
        return 0


def limits(n: int) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    need = n + 200
    return {"nofile": soft, "pid_max": pid_max, "ok": soft >= need and pid_max > n * 2,
            "need_fds": need}


class Fleet:
    def __init__(self, work: Path, n: int, interval: int, heap: str = "128k"):
        self.work = work
        self.n = n
        self.interval = interval
        self.heap = heap
        self.broker = Mosquitto(work / "broker", persistence=True,
                                extra="log_type notice\nlog_type information\nmax_connections -1\n"
                                      "max_inflight_messages 100\n")
        self.procs: dict[str, subprocess.Popen] = {}
        self.ingest: subprocess.Popen | None = None
        self.db = f"sqlite:///{work / 'fleet.db'}"
        self.ids = [f"fleet-{i:05d}" for i in range(n)]

    def start_broker(self):
        self.broker.start()

    def start_ingest(self):
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.ingest = subprocess.Popen(
            [sys.executable, "-m", "homebox.cli", "ops", "ingest", "--broker", f"mqtt://127.0.0.1:{self.broker.port}",
             "--db", self.db, "--client-id", f"bench-ingest-{os.getpid()}", "--batch-wait", "0.1"],
            env=env, cwd=str(ROOT), stdout=open(self.work / "ingest.out", "w"),
            stderr=open(self.work / "ingest.log", "w"))

    def spawn(self, rate: float = 40.0):
        """Start the agents at `rate` per second (each start costs ~60 ms of CPU)."""
        mpy = boxrun.compile_agent()
        t0 = time.time()
        for i, box in enumerate(self.ids):
            d = self.work / "boxes" / box
            # The sim clock starts at launch and runs at real speed: report slots
            # are real times, so the latency to the database can be measured.
            cfg = boxrun.write_config(d, box_id=box, broker_host="127.0.0.1", broker_port=self.broker.port,
                                      telemetry_interval=self.interval, speedup=1, seed=i + 1,
                                      scenario={"start": time.time()})
            cmd, env = boxrun.box_command(cfg, micropython=True, heap=self.heap)
            env["MICROPYPATH"] = f"{mpy}:.frozen"
            self.procs[box] = subprocess.Popen(cmd, env=env, cwd=boxrun.neutral_cwd(),
                                               stdout=open(d / "box.log", "w"), stderr=subprocess.STDOUT)
            lag = t0 + (i + 1) / rate - time.time()
            if lag > 0:
                time.sleep(lag)

    def alive(self) -> int:
        return sum(1 for p in self.procs.values() if p.poll() is None)

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if self.ingest and self.ingest.poll() is None:
            self.ingest.send_signal(signal.SIGTERM)
            try:
                self.ingest.wait(60)
            except subprocess.TimeoutExpired:
                self.ingest.kill()
        self.broker.stop()


def _probe(port: int, store: Store, timeout: float = 30) -> None:
    """Wait until ingest stores what the broker delivers (its session exists), so
    that the first reports of the first boxes are not published to nobody."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        publish(port, topics.status("bench-probe"), json.dumps({"state": "offline", "box": "bench-probe",
                                                                 "boot": 1}), retain=False)
        time.sleep(0.5)
        if any(b["box"] == "bench-probe" for b in store.boxes()):
            return
    raise RuntimeError("ingest does not store what the broker delivers")


def start_backend(fleet: Fleet) -> Store:
    """The fleet's broker and ingest started, and a Store on its database once ingest
    stores what the broker delivers (`_probe`)."""
    fleet.start_broker()
    fleet.start_ingest()
    store = Store(fleet.db)
    _probe(fleet.broker.port, store)
    return store


def wait_online(store: Store, n: int, timeout: float) -> int:
    """How many boxes (the probe aside) are online once `n` are, or after `timeout` s."""
    deadline = time.time() + timeout
    online = 0
    while time.time() < deadline:
        online = sum(1 for b in store.boxes() if b["state"] == "online" and b["box"] != "bench-probe")
        if online >= n:
            break
        time.sleep(1)
    return online


def _connect_times(log: Path, since: float, ids: set[str]) -> list[int]:
    out = []
    for ln in log.read_text(errors="replace").splitlines():
        ts, _, rest = ln.partition(": ")
        if "New client connected" in rest and " as " in rest:
            cid = rest.split(" as ", 1)[1].split(" ", 1)[0]
            try:
                t = int(ts)
            except ValueError:
                continue
            if t >= int(since) and cid in ids:
                out.append(t)
    return out


def run(boxes: int | None = None, interval: int = 10, window: float = 60.0, down: float = 10.0) -> dict:
    n = boxes or int(os.environ.get("HB_FLEET_BOXES", "1000"))
    lim = limits(n)
    out: dict = {"boxes": n, "telemetry_interval_s": interval, "limits": lim,
                 "note": "each agent is the PyPI unix port: the MicroPython VM inside a small CPython host process"}
    if not lim["ok"]:
        out["skipped"] = f"limits too low for {n} agents: {lim}"
        return out
    work = workdir("fleet")
    fleet = Fleet(work, n, interval)
    t_start = time.time()
    try:
        store = start_backend(fleet)
        t = time.time()
        fleet.spawn()
        out["spawn_s"] = round(time.time() - t, 1)
        out["online_after_spawn"] = wait_online(store, n, 120)
        out["online_s"] = round(time.time() - t, 1)
        out["agents_alive"] = fleet.alive()

        # ---- steady window: CPU, memory, ingest rate ----
        time.sleep(max(5.0, interval))
        pids = {b: p.pid for b, p in fleet.procs.items() if p.poll() is None}
        hz = os.sysconf("SC_CLK_TCK")
        c0 = {b: _cpu_ticks(pid) for b, pid in pids.items()}
        cb0, ci0 = _cpu_ticks(fleet.broker.proc.pid), _cpu_ticks(fleet.ingest.pid)
        s0 = store.counters().get("stored", 0)
        t0 = time.time()
        time.sleep(window)
        dt = time.time() - t0
        s1 = store.counters().get("stored", 0)
        c1 = {b: _cpu_ticks(pid) for b, pid in pids.items()}
        cb1, ci1 = _cpu_ticks(fleet.broker.proc.pid), _cpu_ticks(fleet.ingest.pid)
        mem = [_proc_mem(pid) for pid in pids.values()]
        agents_cpu = sum(c1[b] - c0[b] for b in pids) / hz
        out["steady"] = {
            "window_s": round(dt, 1),
            "rss_kb_per_agent": {"mean": int(statistics.fmean(m[0] for m in mem)), "max": max(m[0] for m in mem)},
            "pss_kb_per_agent": {"mean": int(statistics.fmean(m[1] for m in mem))},
            "agents_total_pss_mb": round(sum(m[1] for m in mem) / 1024, 1),
            "broker_rss_kb": _proc_mem(fleet.broker.proc.pid)[0],
            "ingest_rss_kb": _proc_mem(fleet.ingest.pid)[0],
            "cpu_cores": {"agents": round(agents_cpu / dt, 3), "broker": round((cb1 - cb0) / hz / dt, 3),
                          "ingest": round((ci1 - ci0) / hz / dt, 3)},
            "cpu_ms_per_agent_per_s": round(agents_cpu / dt / len(pids) * 1000, 3),
            "ingest_msgs_per_s": round((s1 - s0) / dt, 1),
            "expected_msgs_per_s": round(len(pids) / interval, 1),
            "machine_cpus": os.cpu_count(),
        }

        # ---- update fan-out ----
        import paho.mqtt.client as mqtt
        ack_at: dict[str, float] = {}

        def on_report(client, userdata, msg):
            # the arrival time, taken in paho's network thread as each report lands
            now = time.time()
            try:
                rep = json.loads(msg.payload)
            except ValueError:
                return
            box = msg.topic.split("/")[2]
            if rep.get("version") == 2 and rep.get("status") == "applied" and box not in ack_at:
                ack_at[box] = now
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-acks-{os.getpid()}")
        sub.on_message = on_report
        sub.on_connect = lambda c, u, f, rc, p: c.subscribe("homebox/v1/+/reported/options", qos=1)
        sub.connect("127.0.0.1", fleet.broker.port)
        sub.loop_start()
        time.sleep(2.0)                          # the retained reports of v1 come first
        doc = dict(OPTIONS, version=2)
        body = json.dumps(doc, separators=(",", ":")).encode()
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-push-{os.getpid()}")
        pub.max_inflight_messages_set(1000)
        pub.connect("127.0.0.1", fleet.broker.port)
        pub.loop_start()
        sent = {}
        infos = []
        for box in fleet.ids:
            sent[box] = time.time()
            infos.append(pub.publish(topics.desired(box, "options"), body, qos=1, retain=True))
        for i in infos:
            i.wait_for_publish(60)
        t_pushed = time.time()
        deadline = time.time() + 120
        while time.time() < deadline and len(ack_at) < len(pids):
            time.sleep(0.1)
        lat = [ack_at[b] - sent[b] for b in ack_at]
        out["fanout"] = {"pushed": n, "publish_all_s": round(t_pushed - min(sent.values()), 2),
                         "acked": len(ack_at), "ack_latency_s": {"p50": _pct(lat, 50), "p99": _pct(lat, 99),
                                                                 "max": _pct(lat, 100)},
                         "all_acked_after_s": round(max(ack_at.values()) - min(sent.values()), 2) if ack_at else None,
                         "how": "retained QoS 1 per box topic from one client; ack = the box's reported "
                                "document with the version, timed as it reaches a subscriber"}
        sub.loop_stop()
        sub.disconnect()
        pub.loop_stop()
        pub.disconnect()

        # ---- reconnect storm: the broker restarts ----
        ids = set(fleet.ids)
        fleet.broker.stop()                      # a clean stop: sessions and retained saved
        time.sleep(down)
        t_up = time.time()
        fleet.broker.start()
        deadline = time.time() + 400
        times: list[int] = []
        while time.time() < deadline:
            times = _connect_times(fleet.broker.log, t_up, ids)
            if len(set(times)) and len(times) >= len(pids):
                break
            time.sleep(2)
        hist = Counter(t - int(t_up) for t in times)
        span = max(hist) + 1 if hist else 0
        out["storm"] = {
            "broker_down_s": down, "reconnected": len(times), "of": len(pids),
            "all_back_after_s": span,
            "peak_per_s": max(hist.values()) if hist else 0,
            "lockstep_worst_case_per_s": len(pids),
            "mean_per_s_while_reconnecting": round(len(times) / span, 1) if span else None,
            "histogram_per_s": [hist.get(i, 0) for i in range(span)],
            "backoff": "full jitter: uniform(0, min(300, 1 x 2^attempt)) s (agent/backoff.py defaults)",
        }

        # ---- end-to-end delivery ----
        time.sleep(2 * interval)
        stored = store.seqs()
        streams: dict = {}
        for box, boot, seq in stored:
            streams.setdefault((box, boot), []).append(seq)
        gaps = sum(max(s) - len(s) for s in streams.values())
        # Latency over the steady window only (the storm delays reports on purpose).
        lat = [r[0] for r in store._q("SELECT stored_at - ts FROM messages WHERE kind = 'health' "
                                      "AND ts BETWEEN ? AND ?", (t0, t0 + dt))]
        out["delivery"] = {"messages": len(stored), "streams": len(streams), "gaps": gaps,
                           "delivered_share": round(1 - gaps / max(1, len(stored) + gaps), 6),
                           "slot_to_db_latency_s": {"p50": _pct(lat, 50), "p99": _pct(lat, 99)},
                           "agents_alive_at_end": fleet.alive()}
        out["totals"] = store.counters()
        store.close()
    finally:
        fleet.stop()
        out["seconds"] = round(time.time() - t_start, 1)
        if os.environ.get("HB_BENCH_KEEP"):
            out["work"] = str(work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--boxes", type=int, default=None)
    ap.add_argument("--interval", type=int, default=10)
    ap.add_argument("--window", type=float, default=60)
    a = ap.parse_args(argv)
    print(json.dumps(run(a.boxes, a.interval, a.window), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
