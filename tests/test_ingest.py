"""Ingest: dedupe, gaps, quarantine, and kill -9 under 3x load, on SQLite and PostgreSQL."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from backend.ingest import Ingest, classify
from backend.store import Store, _split_ranges
from tests.helpers import ROOT, Capture, FleetBroker, mqtt_client, publish


def env(box, boot, seq, kind="health", data=None, ts=1767225600):
    if data is None:
        data = {"fw": "0.1.0", "uptime_s": seq * 300, "outbox_backlog": 0, "outbox_bytes": 0,
                "outbox_dropped": 0, "reconnects": 0} if kind == "health" else {}
    return {"v": 1, "box": box, "boot": boot, "seq": seq, "ts": ts, "kind": kind, "data": data}


def tel(box, boot, seq, **kw):
    d = env(box, boot, seq, **kw)
    topic = f"homebox/v1/{box}/event" if d["kind"] == "event" else f"homebox/v1/{box}/telemetry/{d['kind']}"
    return classify(topic, json.dumps(d).encode())


# ---- store and classification, no broker ---------------------------------------------

def test_dedupe_on_box_boot_seq(db_url):
    s = Store(db_url)
    batch = [tel("A", 1, i) for i in range(1, 6)]
    c1 = s.write_batch(batch)
    assert c1["stored"] == 5 and c1["duplicates"] == 0
    # redelivery of the same batch plus one copy inside a batch
    c2 = s.write_batch(batch + [tel("A", 1, 6), tel("A", 1, 6)])
    assert c2["stored"] == 1 and c2["duplicates"] == 6
    # same seq, another boot or another box: not a duplicate
    c3 = s.write_batch([tel("A", 2, 1), tel("B", 1, 1)])
    assert c3["stored"] == 2
    assert s.seqs("A") == [("A", 1, i) for i in range(1, 7)] + [("A", 2, 1)]
    k = s.counters()
    assert (k["stored"], k["duplicates"], k["received"]) == (8, 6, 14)
    assert s.gaps() == []
    s.close()


def test_gaps_detected_filled_and_explained_by_drops(db_url):
    s = Store(db_url)
    s.write_batch([tel("G", 1, i) for i in (1, 2, 6, 7)])
    assert s.gaps("G") == [{"box": "G", "boot": 1, "first": 3, "last": 5, "cause": "missing"}]
    # a late arrival splits the gap (events overtake telemetry in the box's outbox)
    s.write_batch([tel("G", 1, 4)])
    assert [(g["first"], g["last"]) for g in s.gaps("G")] == [(3, 3), (5, 5)]
    # the box declares seq 5 (and 10..12, not yet seen) dropped from its outbox
    drop = tel("G", 1, 8, kind="event",
               data={"type": "outbox_dropped", "count": 4, "dropped_total": 4,
                     "ranges": [[1, 5, 5], [1, 10, 12]]})
    s.write_batch([drop, tel("G", 1, 9), tel("G", 1, 13)])
    assert [(g["first"], g["last"], g["cause"]) for g in s.gaps("G")] == [
        (3, 3, "missing"), (5, 5, "dropped"), (10, 12, "dropped")]
    s.write_batch([tel("G", 1, 3)])
    assert s.gap_summary() == {"G": {"dropped": 4}}
    # a new boot starts its own stream: no gap between boots
    s.write_batch([tel("G", 2, 1), tel("G", 2, 2)])
    assert s.gap_summary() == {"G": {"dropped": 4}}
    assert s.latest()[("G", "event:outbox_dropped")]["seq"] == 8
    s.close()


def test_split_ranges():
    assert _split_ranges([(1, 10)], [(3, 4), (8, 20)]) == [
        (1, 2, "missing"), (3, 4, "dropped"), (5, 7, "missing"), (8, 10, "dropped")]
    assert _split_ranges([(1, 2), (3, 4)], []) == [(1, 4, "missing")]


def test_invalid_payloads_are_quarantined_and_counted(db_url):
    s = Store(db_url)
    bad_health = env("Q", 1, 1)
    del bad_health["data"]["fw"]
    recs = [
        classify("homebox/v1/Q/telemetry/health", b"\xff\xfenot json"),
        classify("homebox/v1/Q/telemetry/health", json.dumps(bad_health).encode()),
        classify("homebox/v1/Q/telemetry/health", json.dumps(env("OTHER", 1, 2)).encode()),
        classify("homebox/v1/Q/telemetry/speed", json.dumps(env("Q", 1, 3)).encode()),
        classify("homebox/v1/Q/status", json.dumps({"state": "online", "box": "Z", "boot": 1}).encode()),
        tel("Q", 1, 4),
    ]
    assert [r.what for r in recs] == ["invalid"] * 5 + ["msg"]
    c = s.write_batch(recs)
    assert c["invalid"] == 5 and c["stored"] == 1
    q = s.quarantine()
    assert len(q) == 5 and s.counters()["invalid"] == 5
    by_payload = {r["payload"]: r for r in q}
    assert b"\xff\xfenot json" in by_payload             # kept byte for byte
    assert any("fw" in e for r in q for e in r["errors"])
    assert any("box" in e for r in q for e in r["errors"])
    assert any("kind" in e for r in q for e in r["errors"])
    assert all(r["topic"].startswith("homebox/v1/Q/") for r in q)
    s.close()


def test_status_reported_desired_upserts(db_url):
    s = Store(db_url)
    on = classify("homebox/v1/S/status", json.dumps({"state": "online", "box": "S", "boot": 3}).encode())
    rep = classify("homebox/v1/S/reported/parental",
                   json.dumps({"box": "S", "section": "parental", "version": 4, "status": "applied"}).encode())
    des = classify("homebox/v1/S/desired/options", b'{"version": 5, "speed_tier": "10M"}', retained=True)
    s.write_batch([on, rep, des])
    off = classify("homebox/v1/S/status", json.dumps({"state": "offline", "box": "S", "boot": 3}).encode())
    stale = classify("homebox/v1/S/status", json.dumps({"state": "online", "box": "S", "boot": 2}).encode())
    old_des = classify("homebox/v1/S/desired/options", b'{"version": 4, "speed_tier": "2M"}', retained=True)
    s.write_batch([off, stale, old_des])
    assert [r.what for r in (on, rep, des, off, stale, old_des)] == ["status", "reported", "desired",
                                                                    "status", "status", "desired"]
    (b,) = s.boxes()
    assert (b["state"], b["state_boot"]) == ("offline", 3)
    assert s.reported()["S"]["parental"]["version"] == 4
    (d,) = s.desired()
    assert d["version"] == 5 and d["payload"] == b'{"version": 5, "speed_tier": "10M"}'
    # the push tool's own record wins over what the broker shows, if newer
    s.put_desired("S", "options", {"version": 6, "speed_tier": "10M"})
    assert s.desired()[0]["version"] == 6 and s.desired()[0]["source"] == "push"
    s.close()


# ---- against a real Mosquitto ----------------------------------------------------------

def test_ingest_end_to_end_in_process(broker, db_url):
    s = Store(db_url)
    ing = Ingest(f"mqtt://127.0.0.1:{broker.port}", s, client_id="ing-e2e", batch_size=50,
                 batch_wait=0.05, log=lambda *a: None)
    th = threading.Thread(target=ing.run, daemon=True)
    th.start()
    assert ing.subscribed.wait(10)
    publish(broker.port, "homebox/v1/E/status", {"state": "online", "box": "E", "boot": 1})
    for seq in (1, 2, 2, 4):
        publish(broker.port, "homebox/v1/E/telemetry/health", env("E", 1, seq), retain=False)
    publish(broker.port, "homebox/v1/E/event", b"{broken", retain=False)
    deadline = time.time() + 10
    while time.time() < deadline and s.counters()["received"] < 6:
        time.sleep(0.05)
    ing.stop()
    th.join(10)
    k = s.counters()
    assert k["stored"] == 3 and k["duplicates"] == 1 and k["invalid"] == 1 and k["status"] == 1
    assert s.gaps("E")[0]["first"] == 3
    assert s.boxes()[0]["state"] == "online"
    s.close()


NOMINAL_RATE = 200      # msgs/s: 60,000 boxes at one message per 300 s, for one ingest process
N_BOXES = 40


BOXES = [f"box{b:03d}" for b in range(N_BOXES)]


@pytest.fixture
def fleet(tmp_path):
    """Mosquitto from the generated configuration: every box has its own account,
    ingest logs in as homebox-ingest-1 over TLS."""
    boxes = {box: f"pw-{box}-{uuid.uuid4().hex}" for box in BOXES + ["warm"]}
    b = FleetBroker(tmp_path / "broker", boxes, fleet_size=1000).start()
    yield b
    b.stop()


def _ingest_proc(fleet, db, cid, log):
    # the generated config uses the username as client id: the persistent session
    # the restarted process resumes is the account's, whatever --client-id says
    user = "homebox-ingest-1"
    cmd = [sys.executable, "-m", "homebox.cli", "ops", "ingest", "--broker", fleet.url(user), "--tls-ca",
           str(fleet.ca), "--db", db, "--client-id", cid, "--batch", "200", "--batch-wait", "0.1"]
    return subprocess.Popen(cmd, cwd=ROOT, env=fleet.cli_env(user), stdout=log, stderr=subprocess.STDOUT)


def _publisher(fleet, rate, seconds, out):
    """Publish health telemetry for N_BOXES boxes at `rate` msgs/s, QoS 1, each box
    with its own account over TLS; some messages twice (at-least-once redelivery)."""
    clients = []
    for box in BOXES:
        c = mqtt_client(**fleet.login(box), client_id=box, max_inflight=1000)
        c.loop_start()
        clients.append(c)
    deadline = time.time() + 15
    while time.time() < deadline and not all(c.is_connected() for c in clients):
        time.sleep(0.05)
    assert all(c.is_connected() for c in clients), "a box could not log in"
    seqs = dict.fromkeys(range(N_BOXES), 0)
    start = time.time()
    n = 0
    infos = []
    while time.time() - start < seconds:
        due = int((time.time() - start) * rate)
        while n < due:
            b = n % N_BOXES
            seqs[b] += 1
            box = BOXES[b]
            payload = json.dumps(env(box, 1, seqs[b]))
            infos.append(clients[b].publish(f"homebox/v1/{box}/telemetry/health", payload, qos=1))
            if n % 25 == 0:
                infos.append(clients[b].publish(f"homebox/v1/{box}/telemetry/health", payload, qos=1))
            n += 1
        time.sleep(0.002)
    for i in infos:
        i.wait_for_publish(30)
    for c in clients:
        c.loop_stop()
        c.disconnect()
    out["seqs"] = seqs
    out["sent"] = n


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield started
    for p in started:                           # never leave an ingest process behind
        if p.poll() is None:
            p.kill()
            p.wait(10)


def test_kill9_mid_run_at_3x_rate_every_seq_exactly_once(fleet, db_url, tmp_path, procs):
    rate, seconds = 3 * NOMINAL_RATE, 8.0
    log = open(tmp_path / "ingest.log", "wb")
    Store(db_url).close()                       # create the schema once, before two writers race
    p = _ingest_proc(fleet, db_url, "ing-kill9", log)
    procs.append(p)
    # proves the load reached the broker
    cap = Capture(topic="homebox/v1/+/telemetry/#", **fleet.login("homebox-ingest-2"))
    # wait until the ingest session is subscribed: a retained status lands in the store
    publish(topic="homebox/v1/warm/status", payload={"state": "online", "box": "warm", "boot": 1},
            **fleet.login("warm"))
    s = Store(db_url)
    deadline = time.time() + 20
    while time.time() < deadline and s.counters()["status"] < 1:
        time.sleep(0.05)
    assert s.counters()["status"] == 1, (tmp_path / "ingest.log").read_text()
    out: dict = {}
    pub = threading.Thread(target=_publisher, args=(fleet, rate, seconds, out))
    pub.start()
    time.sleep(3.0)
    before_kill = s.counters()["stored"]
    p.send_signal(signal.SIGKILL)               # mid-run, mid-batch
    p.wait(10)
    time.sleep(1.0)                             # the broker queues for the persistent session
    p2 = _ingest_proc(fleet, db_url, "ing-kill9", log)
    procs.append(p2)
    pub.join(60)
    expected = sum(out["seqs"].values())
    deadline = time.time() + 60
    while time.time() < deadline and s.counters()["stored"] < expected:
        time.sleep(0.2)
    time.sleep(0.5)                             # anything extra would land now
    p2.send_signal(signal.SIGTERM)
    p2.wait(20)
    log.close()
    cap.close()
    assert before_kill > 100, "the kill must land mid-run, with data already stored"
    assert out["sent"] >= rate * seconds * 0.9, "the publisher kept the 3x rate"
    rows = s.seqs()
    got: dict[str, list[int]] = {}
    for box, boot, seq in rows:
        assert boot == 1
        got.setdefault(box, []).append(seq)
    for b, n in out["seqs"].items():
        assert got.get(f"box{b:03d}") == list(range(1, n + 1)), f"box{b:03d}: not every seq exactly once"
    k = s.counters()
    assert k["stored"] == expected == len(rows)
    assert k["duplicates"] >= out["sent"] // 25           # the deliberate duplicates were removed
    assert s.gaps() == [] and k["invalid"] == 0
    # the restarted process resumed the persistent session the killed one left
    assert "session present: True" in (tmp_path / "ingest.log").read_text()
    s.close()
