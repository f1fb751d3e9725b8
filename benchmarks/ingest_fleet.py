"""Ingest on fleet-shaped traffic (issue 16): N boxes x M messages, each batch
spanning many boxes (the boxes publish round-robin), on SQLite and PostgreSQL.

Two measurements, each in the same run:

- `store`: classification (contract validation) + Store.write_batch on batches of
  500 messages from 500 distinct boxes, the set-based write path of this tree side
  by side with the row-by-row path it replaced (backend/store.py at BASELINE, loaded
  from git: about six statements per message).
- `e2e`: through the broker configuration `homebox ops broker-config` generates
  (TLS listener, per-box accounts and ACL): the boxes publish a backlog into the
  backend's persistent sessions, then one `homebox ops ingest` process (and two, in
  a share group) drains it; a raw paho consumer (parses JSON, acks, stores nothing)
  drains the same backlog in its own session. msg/s from the first message stored
  to the last, and the ratios (ingest / raw, two processes / one).

    python -m benchmarks.ingest_fleet [--boxes 600] [--msgs 100] [--db sqlite|postgresql|both]

Goals (issue 16): >= 10,000 msg/s per ingest process on PostgreSQL, >= 0.3 of the
raw consumer, two processes >= 1.7x one. This machine's cores are shared by the
broker, the publishers, the consumers and PostgreSQL.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from backend.ingest import classify
from backend.store import Store
from benchmarks.ingest import _db, _pg_server, _stop_all

ROOT = Path(__file__).resolve().parent.parent
# The commit before the set-based write path (issue 16): its store is the baseline.
BASELINE = "7c7377a"
# The tree before the profile-driven work on ingest's hot path (issue 16): its
# `homebox ops ingest` runs beside this tree's, on the same broker, in the same run.
INGEST_BEFORE = "52b9e30"
BEFORE_USER = "bench-ingest-before"
BATCH = 500


def _health(box: str, seq: int) -> bytes:
    data = {"fw": "0.1.0", "uptime_s": seq * 300, "outbox_backlog": 0, "outbox_bytes": 0,
            "outbox_dropped": 0, "reconnects": 0, "heap_free": 50000, "wifi_clients": 3}
    return json.dumps({"v": 1, "box": box, "boot": 1, "seq": seq, "ts": 1767225600 + seq * 300,
                       "kind": "health", "data": data}, separators=(",", ":")).encode()


def _fleet_stream(boxes: int, msgs: int, tag: str):
    """(topic, payload) round-robin over the boxes: message m of every box, then m+1."""
    names = [f"{tag}{b:06d}" for b in range(boxes)]
    for m in range(1, msgs + 1):
        for name in names:
            yield f"homebox/v1/{name}/telemetry/health", _health(name, m)


def _baseline_store():
    """backend/store.py at BASELINE, as a module (None without git)."""
    try:
        src = subprocess.run(["git", "show", f"{BASELINE}:backend/store.py"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    spec = importlib.util.spec_from_loader("hb_baseline_store", loader=None)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["hb_baseline_store"] = mod
    exec(compile(src, "baseline/store.py", "exec"), mod.__dict__)
    return mod


def store_path(kind: str, workdir: Path, pg: str | None, boxes: int, msgs: int, store_cls=Store,
               tag: str = "new") -> dict:
    """classify + write_batch, batches of BATCH messages from BATCH distinct boxes."""
    url, drop = _db(kind, workdir, f"store-{tag}", pg, "hbfleet_")
    s = store_cls(url)
    try:
        stream = list(_fleet_stream(boxes, msgs, "fb"))
        t_cls = t_write = 0.0
        for i in range(0, len(stream), BATCH):
            t0 = time.perf_counter()
            recs = [classify(t, p) for t, p in stream[i:i + BATCH]]
            t1 = time.perf_counter()
            c = s.write_batch(recs)
            t_write += time.perf_counter() - t1
            t_cls += t1 - t0
            assert c["stored"] == len(recs), c
        n = len(stream)
        return {"messages": n, "msgs_per_s": round(n / (t_cls + t_write)),
                "write_msgs_per_s": round(n / t_write), "classify_msgs_per_s": round(n / t_cls)}
    finally:
        s.close()
        drop()


# ---- end to end, through the generated broker configuration --------------------------------

def _publisher(port: int, ca: str, creds: list[tuple[str, str]], msgs: int, q) -> None:
    """One process publishing for many boxes, each on its own TLS connection with its
    own account, round-robin (one message of each box in turn), single-threaded."""
    import ssl

    import paho.mqtt.client as mqtt
    ctx = ssl.create_default_context(cafile=ca)
    clients = []
    for box, pw in creds:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=box, protocol=mqtt.MQTTv311)
        c.username_pw_set(box, pw)
        c.tls_set_context(ctx)
        c.max_inflight_messages_set(100)
        c.max_queued_messages_set(0)
        c.connect("localhost", port, keepalive=600)
        clients.append((box, c))
    for _box, c in clients:
        while not c.is_connected():
            c.loop(0.01)
    infos = []
    for m in range(1, msgs + 1):
        for box, c in clients:
            infos.append(c.publish(f"homebox/v1/{box}/telemetry/health", _health(box, m), qos=1))
            c.loop(0)
    while not all(i.is_published() for i in infos):
        for _box, c in clients:
            c.loop(0.001)
    for _box, c in clients:
        c.disconnect()
        c.loop(0.01)
    q.put(len(infos))


RAW = r'''
import json, ssl, sys, time
import paho.mqtt.client as mqtt
port, ca, user, cert, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
seen = [0, None]
def on_message(c, u, m):
    json.loads(m.payload)
    seen[0] += 1
    if seen[1] is None:
        seen[1] = time.time()
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=user, protocol=mqtt.MQTTv5)
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, cert[:-4] + ".key")     # the backend listener: the service's certificate
c.tls_set_context(ctx)
c.on_message = on_message
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
p = Properties(PacketTypes.CONNECT); p.SessionExpiryInterval = 3600; p.ReceiveMaximum = 2000
c.on_connect = lambda c, u, f, rc, pr: c.subscribe("homebox/v1/+/telemetry/#", qos=1)
c.connect("localhost", int(port), clean_start=False, properties=p)
c.loop_start()
print("ready", flush=True)
mode = sys.stdin.readline()
if mode.strip() == "subscribe-only":
    time.sleep(1); c.disconnect(); c.loop_stop(); sys.exit(0)
deadline = time.time() + 600
while seen[0] < n and time.time() < deadline:
    time.sleep(0.005)
print(json.dumps({"n": seen[0], "s": time.time() - (seen[1] or time.time())}), flush=True)
c.disconnect(); c.loop_stop()
'''


def _wait_subscribed(log: Path, ids: list[str], timeout: float = 120, what: str = "subscribed as {} ") -> None:
    """Until every process has its subscriptions (its SUBACK): killed before, a
    member would join the share group only at the drain, and its part of the backlog
    would wait in another member's session."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if all(what.format(i) in text.replace("\n", " ") for i in ids):
            return
        time.sleep(0.1)
    raise RuntimeError(f"ingest processes not subscribed after {timeout} s: {ids}")


def _ingest_proc(fleet, user: str, db: str, share: str | None, log, tree: Path = ROOT) -> subprocess.Popen:
    """`homebox ops ingest` of this tree (or of `tree`, another checkout)."""
    cmd = [sys.executable, "-m", "homebox.cli", "ops", "ingest", "--broker", fleet.url(user),
           "--tls-ca", str(fleet.ca), "--db", db, "--batch", str(BATCH), "--batch-wait", "0.05",
           "--retention-days", "0", "--client-id", user]   # the broker uses the account as the id anyway
    if share:
        cmd += ["--share", share, "--no-state"]
    env = dict(fleet.cli_env(user), PYTHONPATH=str(tree))
    return subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=log)


def _before_tree(workdir: Path) -> Path | None:
    """The tree at INGEST_BEFORE (git archive), to run its ingest in the same run."""
    d = workdir / "before"
    try:
        d.mkdir()
        arch = subprocess.run(["git", "archive", INGEST_BEFORE], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(d)], input=arch, check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return d


def _publish_backlog(fleet, creds, msgs) -> int:
    # at most 300 connections a process: paho's select() and its socket pairs stay
    # under 1024 file descriptors
    procs = max(1, -(-len(creds) // 300))
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    parts = [creds[i::procs] for i in range(procs)]
    ps = [ctx.Process(target=_publisher, args=(fleet.tls, str(fleet.ca), part, msgs, q)) for part in parts]
    for p in ps:
        p.start()
    total = sum(q.get(timeout=900) for _ in ps)
    for p in ps:
        p.join(60)
    return total


def e2e(kind: str, workdir: Path, pg: str | None, boxes: int, msgs: int, before: bool = True) -> dict:
    from tests.helpers import FleetBroker
    creds = [(f"fe{b:06d}", f"pw-{uuid.uuid4().hex}") for b in range(boxes)]
    # the tree before logs in by password (a reader account: a hash in the broker's
    # files); this tree's services by certificate on the backend listener
    fleet = FleetBroker(workdir / "broker", dict(creds), fleet_size=boxes, ingest_accounts=4,
                        readers={BEFORE_USER: f"pw-{uuid.uuid4().hex}"}).start()
    # (name, accounts, tree): the broker takes the account for the client id
    # (use_username_as_clientid), so each run has accounts of its own, or a share
    # member would resume the lone run's session and its unshared subscription
    runs: list[tuple[str, list[str], Path]] = [("ingest_1proc", ["homebox-ingest-1"], ROOT),
                                               ("ingest_2proc", ["homebox-ingest-2", "homebox-ingest-3"], ROOT)]
    old_tree = _before_tree(workdir) if before else None
    if old_tree is not None:
        runs.insert(0, ("ingest_1proc_before", [BEFORE_USER], old_tree))
    out: dict = {"boxes": boxes, "msgs_per_box": msgs, "transport": "TLS, per-box accounts (generated config)"}
    log = open(workdir / "ingest.log", "ab")
    try:
        # the raw consumer's session first (it then holds the same backlogs)
        raw = subprocess.Popen([sys.executable, "-c", RAW, str(fleet.backend), str(fleet.ca), "homebox-ingest-4",
                                str(fleet.cert("homebox-ingest-4")), str(boxes * msgs * len(runs))],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        raw.stdout.readline()
        raw.stdin.write("subscribe-only\n")
        raw.stdin.flush()
        raw.wait(30)
        for name, users, tree in runs:
            url, drop = _db(kind, workdir, name, pg, "hbfleet_")
            store = Store(url)
            group = "bench" + uuid.uuid4().hex[:6] if len(users) > 1 else None
            # subscribe once (the persistent sessions), stop, publish the backlog, drain it
            ps = [_ingest_proc(fleet, u, url, group, log, tree) for u in users]
            if tree == ROOT:
                _wait_subscribed(workdir / "ingest.log", users)
            else:
                # the tree before logs no SUBACK: its CONNACK, then time for the SUBACK
                _wait_subscribed(workdir / "ingest.log", users, what="connected as {} ")
                time.sleep(2)
            for p in ps:
                p.send_signal(signal.SIGKILL)        # keep the sessions (no share-group goodbye)
                p.wait(10)
            total = _publish_backlog(fleet, creds, msgs)
            t_start = time.time()
            ps = [_ingest_proc(fleet, u, url, group, log, tree) for u in users]
            first = None
            deadline = time.time() + 900
            while time.time() < deadline:
                n = store.counters()["stored"]
                if first is None and n > 0:
                    first = (time.time(), n)
                if n >= total:
                    break
                time.sleep(0.02)
            t_end = time.time()
            _stop_all(ps, 60)
            n = store.counters()["stored"]
            store.close()
            drop()
            rate = (n - first[1]) / max(1e-6, t_end - first[0]) if first else 0
            out[name] = {"messages": total, "stored": n, "msgs_per_s": round(rate),
                         "wall_s_from_start": round(t_end - t_start, 2)}
            if tree != ROOT:
                out[name]["tree"] = INGEST_BEFORE
        # the raw consumer drains the backlogs it holds (one per run)
        raw = subprocess.Popen([sys.executable, "-c", RAW, str(fleet.backend), str(fleet.ca), "homebox-ingest-4",
                                str(fleet.cert("homebox-ingest-4")), str(len(runs) * boxes * msgs)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        raw.stdout.readline()
        raw.stdin.write("drain\n")
        raw.stdin.flush()
        r = json.loads(raw.stdout.readline())
        raw.wait(30)
        out["raw_paho"] = {"messages": r["n"], "msgs_per_s": round(r["n"] / max(1e-6, r["s"]))}
        one = out["ingest_1proc"]["msgs_per_s"]
        out["ratio_1proc_to_raw"] = round(one / max(1, out["raw_paho"]["msgs_per_s"]), 3)
        out["ratio_2proc_to_1proc"] = round(out["ingest_2proc"]["msgs_per_s"] / max(1, one), 3)
        if "ingest_1proc_before" in out:
            b = out["ingest_1proc_before"]["msgs_per_s"]
            out["ratio_1proc_before_to_raw"] = round(b / max(1, out["raw_paho"]["msgs_per_s"]), 3)
            out["speedup_1proc"] = round(one / max(1, b), 2)
    finally:
        log.close()
        fleet.stop()
    return out


def run(boxes: int = 600, msgs: int = 100, db: str = "both", store_boxes: int = 5000,
        store_msgs: int = 6, e2e_run: bool = True, before: bool = True) -> dict:
    kinds = ["sqlite", "postgresql"] if db == "both" else [db]
    out: dict = {"cpus": os.cpu_count(), "batch": BATCH, "baseline": BASELINE,
                 "goal": ">= 10,000 msg/s per ingest process on PostgreSQL, >= 0.3 of raw, 2 procs >= 1.7x"}
    with _pg_server(kinds, out) as server:
        base = _baseline_store()
        work = Path(tempfile.mkdtemp(prefix="hb-bench-fleet-"))
        try:
            for k in kinds:
                pg = server.url if k == "postgresql" else None
                d = work / k
                d.mkdir()
                out[f"{k}_store"] = {"set_based": store_path(k, d, pg, store_boxes, store_msgs)}
                if base is not None:
                    out[f"{k}_store"]["row_by_row_baseline"] = store_path(k, d, pg, store_boxes, store_msgs,
                                                                           base.Store, "old")
                    out[f"{k}_store"]["speedup"] = round(out[f"{k}_store"]["set_based"]["msgs_per_s"]
                                                         / out[f"{k}_store"]["row_by_row_baseline"]["msgs_per_s"], 2)
                if e2e_run:
                    d = work / f"{k}-e2e"
                    d.mkdir()
                    out[f"{k}_e2e"] = e2e(k, d, pg, boxes, msgs, before)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--boxes", type=int, default=600)
    ap.add_argument("--msgs", type=int, default=100)
    ap.add_argument("--db", default="both", choices=["sqlite", "postgresql", "both"])
    ap.add_argument("--store-only", action="store_true")
    a = ap.parse_args()
    print(json.dumps(run(a.boxes, a.msgs, a.db, e2e_run=not a.store_only), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
