"""Over-the-air agent releases on virtual boxes (tests/otafleet.py): the factory
firmware flashed, booted from littlefs under the real MicroPython interpreter,
updated to a release built by fw build and served over HTTP.

- power cuts (kill -9) at the update's chosen points: mid-download, mid-switch,
  the first boot of the new slot: every box boots, publishes and settles, and no
  sequence number is lost or reused (`make chaos` runs 50 cuts at random points);
- a release that crashes on boot, sent by a campaign: every canary box goes back
  to its previous agent and reports why, and the campaign aborts before the next wave;
- a release that cannot connect: its health check's deadline sends the box back.
"""
from __future__ import annotations

import threading
import uuid

from backend import campaign, release
from backend.ingest import Ingest
from backend.store import Store
from common.broker import parse_broker
from tests.helpers import wait_until
from tests.otafleet import KEY, Fleet, power_cut_run


def test_power_cuts_at_each_point_of_an_update(tmp_path):
    r = power_cut_run(tmp_path, cuts=6, boxes=2, seed=7, log=print)
    print({k: v for k, v in r.items() if k != "seq_problems"})
    assert r["errors"] == [], r
    assert r["cuts"] == 6 and r["unbootable"] == 0, r
    assert r["seq_problems"] == [] and r["seqs_checked"] > 5, r
    # every chosen point was reached and cut, on both boxes
    assert r["phases"]["mid-download"] == 2 and r["phases"]["mid-switch"] == 2, r
    assert r["phases"]["first boot"] == 2, r
    # one cut of a trial boot leaves tries: both boxes keep the release sent last
    # (a box whose release settled between two cuts was sent the other one)
    assert r["applied"] == 2, r["outcomes"]
    assert all(o["release"] == o["sent"] for o in r["outcomes"].values()), r["outcomes"]


def test_a_release_that_crashes_is_rolled_back_and_the_campaign_aborts(tmp_path):
    fleet = Fleet(tmp_path, 4, prefix="brk")
    store = Store(f"sqlite:///{tmp_path}/backend.db")
    ing = Ingest(f"mqtt://127.0.0.1:{fleet.broker.port}", Store(f"sqlite:///{tmp_path}/backend.db"),
                 client_id=f"ota-ingest-{uuid.uuid4().hex[:6]}", batch_wait=0.05, log=lambda *a: None)
    th = threading.Thread(target=ing.run, kwargs={"stats_every": 0}, daemon=True)
    th.start()
    try:
        fleet.release("0.3.0-broken", broken="crash")
        for b in fleet.boxes:
            b.power_on()
        ids = [b.id for b in fleet.boxes]
        wait_until(lambda: all(x["state"] == "online" for x in store.boxes()) and len(store.boxes()) == 4,
                   60, "the boxes online in the store")
        doc = release.template(fleet.root / "0.3.0-broken", f"{fleet.srv.url}/0.3.0-broken", 60)
        c = campaign.create(store, "release", doc, {"boxes": ids}, name="broken", canary=0.5, waves=[1.0],
                            box_timeout=120, rate=10)
        st = campaign.run(store, parse_broker(f"mqtt://127.0.0.1:{fleet.broker.port}"), c["id"], lambda box: KEY,
                          poll=0.1)
        assert st["state"] == "aborted", st
        states = {b["box"]: (b["state"], b["reason"]) for b in st["boxes"]}
        canary, rest = ids[:2], ids[2:]
        for b in canary:
            s, why = states[b]
            assert s == "rejected", states
            assert "rolled back to the factory agent" in why and "a broken release" in why, why
        assert all(states[b][0] == "pending" for b in rest), states
        # the canary boxes run their previous agent, and publish
        for b in fleet.boxes[:2]:
            assert "ImportError: a broken release" in b.console(), b.console()[-3000:]
            assert "agent 0.1.0" in b.console().rsplit("homebox: firmware", 1)[1]
        n = len(fleet.cap.messages)
        for b in fleet.boxes:
            wait_until(lambda b=b: fleet.health_after(b, n), 60, f"{b.id} publishing")
        assert fleet.seq_problems() == []
    finally:
        ing.stop()
        fleet.close()
        store.close()


def test_a_release_that_cannot_connect_goes_back_after_its_deadline(tmp_path):
    fleet = Fleet(tmp_path, 1, prefix="off")
    try:
        fleet.release("0.3.0-offline", broken="offline")
        b = fleet.boxes[0]
        b.power_on()
        wait_until(lambda: fleet.health_after(b, 0), 60, "the box publishing")
        v = fleet.send(b, "0.3.0-offline", confirm_s=10)
        assert wait_until(lambda: fleet.settled(b, v), 120, "the box settling the release") == "rejected"
        why = fleet.reported(b)["rejected"]["reason"]
        assert why == "rolled back to the factory agent: no connection and publish within 10 s of boot", why
        con = b.console()
        assert "agent 0.3.0-offline" in con and "not confirmed within 10 s" in con
        assert fleet.seq_problems() == []
    finally:
        fleet.close()
