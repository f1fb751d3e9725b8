"""No silent loss between the broker and the database (issue 16), through the
broker configuration `homebox ops broker-config` generates (per-box accounts, the
exact ACL), and the count of retained messages a reconnect replays.

- A stalled consumer: its database stops answering while the boxes publish a burst
  past the old queue limit (10,000 messages, plus Receive Maximum in flight); the
  queue is now bounded in bytes: every seq is stored once the database is back.
- A share member taken away: killed (-9), its share of the traffic waits in its
  session and is stored at its restart; stopped, it leaves the group without
  parking anything (the other member stores all that follows, alone).
- Retain Handling: a reconnect that resumes ingest's session replays no retained
  message (a subscriber with Retain Handling 0 gets them all again); a share member
  without the state documents gets none at subscribe.
"""
import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

from backend.ingest import Ingest
from backend.store import Store
from tests.helpers import ROOT, FleetBroker, mqtt_client, stop_process
from tests.test_ingest import env


def _boxes(tag: str, n: int) -> dict[str, str]:
    return {f"box-{tag}{i}": f"pw-{tag}{i}-{uuid.uuid4().hex}" for i in range(n)}


def _publish(fleet, box: str, seqs, boot: int = 1) -> None:
    """Publish health messages seq by seq as the box (QoS 1), until every PUBACK came:
    after that a box would have deleted them from its outbox."""
    c = mqtt_client(fleet.plain, box, fleet.passwords[box], client_id=box, max_inflight=1000)
    c.loop_start()
    try:
        infos = [c.publish(f"homebox/v1/{box}/telemetry/health", json.dumps(env(box, boot, s)), qos=1)
                 for s in seqs]
        for i in infos:
            i.wait_for_publish(120)
            assert i.is_published()
    finally:
        c.disconnect()
        c.loop_stop()


def _wait(cond, timeout: float = 120.0, what: str = "") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _url(fleet, user: str) -> str:
    return fleet.url(user)          # the backend listener, with the service's certificate


def _seqs(store: Store, box: str) -> list[int]:
    return [s for _b, _o, s in store.seqs(box)]


def test_a_stalled_consumer_loses_nothing_of_a_burst_past_the_old_queue_limit(tmp_path):
    boxes = _boxes("s", 4)
    per_box = 4000                    # 16,000 > 10,000 queued + 2,000 in flight (the old bound)
    fleet = FleetBroker(tmp_path / "broker", boxes, fleet_size=100).start()
    db = f"sqlite:///{tmp_path}/s.db"
    store, reader = Store(db), Store(db)
    gate = threading.Event()
    real = store.write_batch

    def stalled(recs):                # the database stops answering (a lock, a slow disk)
        gate.wait(180)
        return real(recs)

    store.write_batch = stalled
    ing = Ingest(_url(fleet, "homebox-ingest-1"), store, tls_ca=str(fleet.ca), log=lambda *a: None)
    th = threading.Thread(target=ing.run, daemon=True)
    th.start()
    try:
        assert ing.subscribed.wait(10)
        pubs = [threading.Thread(target=_publish, args=(fleet, b, range(1, per_box + 1))) for b in boxes]
        for p in pubs:
            p.start()
        for p in pubs:
            p.join(180)
        assert reader.counters()["stored"] == 0      # everything waits: in flight or queued
        gate.set()
        _wait(lambda: reader.counters()["stored"] >= per_box * len(boxes), what="the burst stored")
        for b in boxes:
            assert _seqs(reader, b) == list(range(1, per_box + 1)), b
        assert reader.gap_summary() == {}
        log = (fleet.out / "mosquitto.log").read_text()
        assert "dropped" not in log.lower(), log[-2000:]
    finally:
        gate.set()
        ing.stop()
        th.join(30)
        store.close()
        reader.close()
        fleet.stop()


def _member(fleet, user: str, db: str, group: str, log) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "homebox.cli", "ops", "ingest", "--broker", fleet.url(user), "--tls-ca", str(fleet.ca),
           "--db", db, "--share", group, "--no-state", "--batch-wait", "0.05", "--metrics-port", "0",
           "--retention-days", "0"]
    return subprocess.Popen(cmd, cwd=ROOT, env=fleet.cli_env(user), stdout=subprocess.DEVNULL,
                            stderr=open(log, "ab"))


def _received(log, since: int = 0) -> int:
    """homebox_ingest_received_total of the member logging to `log` (its last run)."""
    ports = re.findall(r"metrics on http://127\.0\.0\.1:(\d+)/", log.read_text())
    if len(ports) <= since:
        return -1
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{ports[-1]}/metrics", timeout=5).read().decode()
    except OSError:
        return -1
    m = re.search(r"^homebox_ingest_received_total (\d+)", text, re.M)
    return int(m.group(1)) if m else -1


def test_a_share_member_taken_away_parks_nothing_and_loses_nothing(tmp_path):
    boxes = _boxes("m", 2)
    fleet = FleetBroker(tmp_path / "broker", boxes, fleet_size=100).start()
    db = f"sqlite:///{tmp_path}/m.db"
    group = "g" + uuid.uuid4().hex[:6]
    reader = Store(db)
    store = Store(db)
    a = Ingest(_url(fleet, "homebox-ingest-1"), store, tls_ca=str(fleet.ca), share=group, state=False, batch_wait=0.05,
               log=lambda *x: None)
    th = threading.Thread(target=a.run, daemon=True)
    blog = tmp_path / "member-b.log"
    b = None
    try:
        th.start()
        assert a.subscribed.wait(10)
        b = _member(fleet, "homebox-ingest-2", db, group, blog)
        seq = 0

        def burst(n):
            nonlocal seq
            for box in boxes:
                _publish(fleet, box, range(seq + 1, seq + n + 1))
            seq += n

        def all_stored():
            return all(_seqs(reader, x) == list(range(1, seq + 1)) for x in boxes)

        # both members take a share (until B has received some)
        _wait(lambda: _received(blog) >= 0, 60, "member B up")
        for _ in range(20):
            burst(100)
            _wait(all_stored, what="phase 1 stored")
            if _received(blog) > 0:
                break
        assert _received(blog) > 0
        # B killed without a goodbye: its share waits in its session, stored at its restart
        b.kill()
        b.wait(10)
        burst(200)
        b = _member(fleet, "homebox-ingest-2", db, group, blog)
        _wait(all_stored, what="B's share stored after its restart")
        _wait(lambda: _received(blog, since=1) > 0, 30, "B storing its parked share")
        # B stopped: it leaves the group; A alone stores everything that follows
        b.terminate()
        assert b.wait(60) == 0
        assert "left share group" in blog.read_text()
        burst(200)
        _wait(all_stored, 60, "everything stored by A alone")
        assert reader.gap_summary() == {}
    finally:
        if b is not None:
            stop_process(b)
        a.stop()
        th.join(30)
        store.close()
        reader.close()
        fleet.stop()


def test_a_reconnect_replays_no_retained_message(tmp_path):
    n = 40
    boxes = _boxes("r", n)
    fleet = FleetBroker(tmp_path / "broker", boxes, fleet_size=100).start()
    db = f"sqlite:///{tmp_path}/r.db"
    reader = Store(db)
    try:
        for box in boxes:
            c = mqtt_client(fleet.plain, box, fleet.passwords[box], client_id=box)
            c.loop_start()
            c.publish(f"homebox/v1/{box}/status", json.dumps({"state": "online", "box": box, "boot": 1}),
                      qos=1, retain=True).wait_for_publish(10)
            c.disconnect()
            c.loop_stop()
        first = list(boxes)[0]

        def run_once(store, live_seq):
            ing = Ingest(_url(fleet, "homebox-ingest-1"), store, tls_ca=str(fleet.ca), batch_wait=0.05, log=lambda *a: None)
            th = threading.Thread(target=ing.run, daemon=True)
            th.start()
            assert ing.subscribed.wait(10)
            _publish(fleet, first, [live_seq])
            _wait(lambda: live_seq in _seqs(reader, first), 30, "the live message")
            ing.stop()
            th.join(30)
            return ing.totals

        s1 = Store(db)
        t1 = run_once(s1, 1)          # a new session: the retained set once
        assert t1["received"] >= n + 1 and reader.counters()["status"] >= n
        t2 = run_once(s1, 2)          # the session resumed: nothing replayed
        assert t2["received"] == 1, t2
        s1.close()
        # for contrast, Retain Handling 0 on a resumed session: all of them again
        user = "homebox-ingest-2"
        got = []

        def rh0_once():
            done = threading.Event()
            c = mqtt_client(**fleet.login(user), client_id=user, protocol=5)
            c.on_message = lambda c_, u, m: got.append(m.topic)
            c.on_subscribe = lambda *a: done.set()
            c.loop_start()
            c.subscribe("homebox/v1/+/status", qos=1)
            assert done.wait(10)
            _wait(lambda: len(got) >= n, 30, "the retained set")
            c.disconnect()
            c.loop_stop()
        rh0_once()
        got.clear()
        rh0_once()
        assert len(got) >= n
        # a share member without the state documents: none at subscribe (Retain Handling 2)
        s3 = Store(db)
        before = reader.counters()["status"]
        m = Ingest(_url(fleet, "homebox-ingest-2"), s3, tls_ca=str(fleet.ca), share="g" + uuid.uuid4().hex[:6], state=False,
                   client_id=None, batch_wait=0.05, log=lambda *a: None)
        th = threading.Thread(target=m.run, daemon=True)
        th.start()
        assert m.subscribed.wait(10)
        _publish(fleet, first, [3])
        _wait(lambda: 3 in _seqs(reader, first), 30, "the live message")
        m.stop()
        th.join(30)
        assert m.totals["received"] == 1 and reader.counters()["status"] == before, m.totals
        s3.close()
    finally:
        reader.close()
        fleet.stop()


def test_an_account_that_ran_unshared_gets_each_message_once_in_a_share_group(tmp_path):
    """The broker takes the account for the client id: a share member resumes the
    session its account had when it ran alone, unshared subscriptions included. It
    drops them at connect, or every message would come twice (once per subscription)."""
    boxes = _boxes("u", 1)
    box = next(iter(boxes))
    fleet = FleetBroker(tmp_path / "broker", boxes, fleet_size=100).start()
    db = f"sqlite:///{tmp_path}/u.db"
    store = Store(db)
    url = _url(fleet, "homebox-ingest-1")
    try:
        alone = Ingest(url, store, tls_ca=str(fleet.ca), batch_wait=0.05, log=lambda *x: None)
        th = threading.Thread(target=alone.run, daemon=True)
        th.start()
        assert alone.subscribed.wait(30)
        alone.stop()
        th.join(30)
        member = Ingest(url, store, tls_ca=str(fleet.ca), share="g" + uuid.uuid4().hex[:6], state=False, batch_wait=0.05,
                        log=lambda *x: None)
        th = threading.Thread(target=member.run, daemon=True)
        th.start()
        assert member.subscribed.wait(30)      # after the stale subscriptions' removal
        _publish(fleet, box, range(1, 201))
        _wait(lambda: _seqs(store, box) == list(range(1, 201)), what="all stored")
        _wait(lambda: member.totals["received"] >= 200, 30, "all received")
        member.stop()
        th.join(30)
        assert member.totals["received"] == 200, member.totals
        assert member.totals["duplicates"] == 0, member.totals
    finally:
        store.close()
        fleet.stop()
