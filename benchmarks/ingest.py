"""Ingest benchmark: messages/s for 1 and 2 ingest processes (shared subscription),
each as a ratio to `mosquitto_sub` reading the same stream in the same run, and the
ingest lag (publish -> written to the store) at p50/p99 under a steady load.

    python -m benchmarks.ingest [--n 20000] [--db sqlite|postgresql|both] [--lag-seconds 10]

PostgreSQL runs on a throwaway server of the benchmark's own (tests/pgserver.py:
initdb + pg_ctl on a free port), never the machine's; without the binaries the
PostgreSQL figures are left out and the results say why.

`run()` returns a dict of figures (used by `make bench`).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from backend.store import Store
from tests.helpers import free_port
from tests.pgserver import ThrowawayPostgres, pg_bindir

ROOT = Path(__file__).resolve().parent.parent

BOXES = 20


class Broker:
    def __init__(self, workdir: Path):
        self.port = free_port()
        conf = workdir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        "max_queued_messages 1000000\nmax_inflight_messages 1000\n"
                        f"log_dest file {workdir}/mosquitto.log\n")
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def _stop_all(ps: list, timeout: float) -> None:
    """SIGTERM every process, then wait for each (kill it after `timeout` s)."""
    for p in ps:
        p.send_signal(signal.SIGTERM)
    for p in ps:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()


@contextlib.contextmanager
def _pg_server(kinds: list, out: dict, hint: str = ""):
    """A throwaway PostgreSQL server if `kinds` has postgresql (None otherwise), stopped
    on exit; without the binaries postgresql leaves `kinds` and `out` says why."""
    server = None
    if "postgresql" in kinds:
        bindir = pg_bindir()
        if bindir is None:
            kinds.remove("postgresql")
            out["postgresql"] = "skipped: PostgreSQL binaries (initdb, pg_ctl) not found" + hint
        else:
            server = ThrowawayPostgres(bindir).start()
            out["postgresql"] = "a throwaway server (initdb, fsync off) on this machine"
    try:
        yield server
    finally:
        if server is not None:
            server.stop()


def _db(kind: str, workdir: Path, tag: str, pg: str | None,
        prefix: str = "hbbench_") -> tuple[str, callable]:
    """The store URL for one measurement, and how to remove what it wrote. `pg`: the
    base URL of the PostgreSQL server (postgresql runs only); `prefix`: of the schema."""
    if kind == "sqlite":
        return f"sqlite:///{workdir}/{tag}.db", lambda: None
    schema = prefix + uuid.uuid4().hex[:8]

    def drop():
        import psycopg
        with psycopg.connect(pg, autocommit=True) as c:
            c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return f"{pg}?schema={schema}", drop


def _ingest(port, db, cid, share, log):
    cmd = [sys.executable, "-m", "homebox.cli", "ops", "ingest", "--broker", f"mqtt://127.0.0.1:{port}",
           "--db", db, "--client-id", cid, "--batch", "500", "--batch-wait", "0.05"]
    if share:
        cmd += ["--share", share]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _health(box, seq, t=None):
    data = {"fw": "0.1.0", "uptime_s": seq, "outbox_backlog": 0, "outbox_bytes": 0,
            "outbox_dropped": 0, "reconnects": 0, "heap_free": 50000, "wifi_clients": 3}
    if t is not None:
        data["t"] = t
    return json.dumps({"v": 1, "box": box, "boot": 1, "seq": seq, "ts": 1767225600 + seq,
                       "kind": "health", "data": data}, separators=(",", ":"))


def _wait_subscribed(port, store, n_procs, timeout=30):
    """Each ingest process has subscribed once a retained status reaches the store n times."""
    import paho.mqtt.client as mqtt
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-warm")
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.publish("homebox/v1/bench-warm/status", json.dumps({"state": "online", "box": "bench-warm",
                                                          "boot": 1}), qos=1, retain=True).wait_for_publish(10)
    c.disconnect()
    c.loop_stop()
    deadline = time.time() + timeout
    while time.time() < deadline:
        if store.counters()["status"] >= n_procs:
            return
        time.sleep(0.05)
    raise RuntimeError("ingest did not subscribe")


def throughput(workdir: Path, db_kind: str, procs: int, n: int, pg: str | None = None) -> dict:
    broker = Broker(workdir)
    db, drop = _db(db_kind, workdir, f"tp{procs}", pg)
    store = Store(db)
    log = open(workdir / f"ingest-{db_kind}-{procs}.log", "wb")
    ps = [_ingest(broker.port, db, f"bench-ing-{i}", "bench", log) for i in range(procs)]
    try:
        _wait_subscribed(broker.port, store, procs)
        sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1",
                                "-t", "homebox/v1/+/telemetry/#", "-C", str(n), "-i", "bench-sub"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        # the same stream for everyone: BOXES mosquitto_pub processes, QoS 1, as fast as they go
        per = n // BOXES
        files = []
        for b in range(BOXES):
            f = workdir / f"pub{b}.txt"
            f.write_text("\n".join(_health(f"bench{b:03d}", s) for s in range(1, per + 1)) + "\n")
            files.append(f)
        t0 = time.time()
        pubs = [subprocess.Popen(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1",
                                  "-t", f"homebox/v1/bench{b:03d}/telemetry/health", "-l",
                                  "-i", f"bench-pub-{b}"], stdin=open(files[b]),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for b in range(BOXES)]
        for p in pubs:
            p.wait(300)
        t_pub = time.time() - t0
        sub.wait(300)
        t_sub = time.time() - t0
        total = per * BOXES
        deadline = time.time() + 600
        while store.counters()["stored"] < total and time.time() < deadline:
            time.sleep(0.05)
        t_ing = time.time() - t0
        stored = store.counters()["stored"]
    finally:
        _stop_all(ps, 30)
        log.close()
        broker.stop()
        store.close()
        drop()
    return {"messages": total, "stored": stored, "publish_s": round(t_pub, 2),
            "mosquitto_sub_msgs_per_s": round(total / t_sub), "ingest_msgs_per_s": round(total / t_ing),
            "ratio_to_mosquitto_sub": round(t_sub / t_ing, 3)}


def lag(workdir: Path, db_kind: str, rate: int, seconds: float, pg: str | None = None) -> dict:
    import paho.mqtt.client as mqtt
    broker = Broker(workdir)
    db, drop = _db(db_kind, workdir, "lag", pg)
    store = Store(db)
    log = open(workdir / f"ingest-lag-{db_kind}.log", "wb")
    p = _ingest(broker.port, db, "bench-lag", None, log)
    try:
        _wait_subscribed(broker.port, store, 1)
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-lag-pub")
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        seqs = [0] * BOXES
        start = time.time()
        n = 0
        while time.time() - start < seconds:
            due = int((time.time() - start) * rate)
            while n < due:
                b = n % BOXES
                seqs[b] += 1
                c.publish(f"homebox/v1/bench{b:03d}/telemetry/health",
                          _health(f"bench{b:03d}", seqs[b], time.time()), qos=1)
                n += 1
            time.sleep(0.001)
        deadline = time.time() + 60
        while store.counters()["stored"] < n and time.time() < deadline:
            time.sleep(0.05)
        c.loop_stop()
        c.disconnect()
        rows = store._q("SELECT stored_at, data FROM messages WHERE box <> 'bench-warm'")
        lags = sorted(float(s) - json.loads(d)["t"] for s, d in rows if "t" in json.loads(d))
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(30)
        log.close()
        broker.stop()
        store.close()
        drop()

    def pct(q):
        return round(1000 * lags[min(len(lags) - 1, int(q * len(lags)))], 1) if lags else None
    return {"rate_msgs_per_s": rate, "messages": n, "stored": len(lags),
            "lag_p50_ms": pct(0.50), "lag_p99_ms": pct(0.99), "lag_max_ms": pct(1.0)}


def run(n: int = 20000, db: str = "both", lag_rate: int = 600, lag_seconds: float = 10) -> dict:
    kinds = ["sqlite", "postgresql"] if db == "both" else [db]
    out: dict = {"cpus": os.cpu_count(), "boxes": BOXES,
                 "note": "mosquitto_sub, N mosquitto_pub and the ingest processes share this machine"}
    with _pg_server(kinds, out, " (make setup as root, or apt-get install postgresql)") as server:
        work = Path(tempfile.mkdtemp(prefix="hb-bench-ingest-"))
        try:
            for k in kinds:
                pg = server.url if k == "postgresql" else None
                for procs in (1, 2):
                    d = work / f"{k}-{procs}"
                    d.mkdir()
                    out[f"{k}_{procs}proc"] = throughput(d, k, procs, n, pg)
                d = work / f"{k}-lag"
                d.mkdir()
                out[f"{k}_lag"] = lag(d, k, lag_rate, lag_seconds, pg)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--db", default="both", choices=["sqlite", "postgresql", "both"])
    ap.add_argument("--lag-rate", type=int, default=600, help="msgs/s of the steady load for the lag figure")
    ap.add_argument("--lag-seconds", type=float, default=10, help="how long the steady load runs")
    a = ap.parse_args()
    print(json.dumps(run(a.n, a.db, a.lag_rate, a.lag_seconds), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
