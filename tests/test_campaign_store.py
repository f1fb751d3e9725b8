"""The campaign driver against the store alone, on SQLite and PostgreSQL: boxes
"report" by records written as ingest writes them (classify + write_batch), a
stand-in publisher records what would go to the broker. Waves, the window, the
abort threshold, timeouts and offline boxes, pause/resume, a driver state that
survives reopening the store, targets by tag and plan, and the history."""
from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest

from backend import campaign, history
from backend.errors import DocumentInvalid
from backend.ingest import classify
from backend.store import Store

OPTIONS = {"speed_tier": "10M", "bouquets": [], "phone": {"enabled": True, "number": "+33299000000"}}


class FakePublisher:
    def __init__(self):
        self.sent: list[tuple[str, dict]] = []

    def publish(self, items, timeout=60.0, on_sent=None):
        items = list(items)
        self.sent += [(t, json.loads(p)) for t, p in items]
        return len(items)


def ingest(store, topic, doc):
    store.write_batch([classify(topic, json.dumps(doc).encode())])


def online(store, boxes, state="online"):
    for b in boxes:
        ingest(store, f"homebox/v1/{b}/status", {"state": state, "box": b, "boot": 1})


def answer(store, pub, bad=(), silent=()):
    """Each box answers the documents sent to it: applied, or rejected if in `bad`."""
    for topic, d in pub.sent:
        box = topic.split("/")[2]
        if box in silent:
            continue
        if box in bad:
            rep = {"section": "options", "box": box, "version": 0, "status": "rejected",
                   "rejected": {"version": d["version"], "field": "sig", "reason": "does not verify"}}
        else:
            rep = {"section": "options", "box": box, "version": d["version"], "status": "applied",
                   "speed_tier": d["speed_tier"]}
        ingest(store, f"homebox/v1/{box}/reported/options", rep)
    pub.sent.clear()


def drive(store, pub, cid, **kw):
    """Turns of the driver until it stops or has nothing to do in this turn."""
    for _ in range(50):
        state, n = campaign.step(store, pub, cid, None, 1000)
        if state != "running" or n == 0:
            return state
    return state


def test_waves_window_abort_resume_history(db_url):
    store = Store(db_url)
    boxes = [f"s{i:02d}" for i in range(20)]
    online(store, boxes)
    c = campaign.create(store, "options", OPTIONS, {"boxes": boxes}, name="w1", canary=0.1, waves=[0.3, 1.0],
                        max_in_flight=3, author="alice")
    assert c["waves"] == [2, 6, 20] and c["state"] == "created"
    assert campaign.step(store, FakePublisher(), "w1", None, 10) == ("created", 0)
    with pytest.raises(campaign.NoSuchCampaign):
        campaign.pause(store, "nope")
    campaign.start(store, "w1")
    pub = FakePublisher()
    assert drive(store, pub, "w1") == "running"
    assert [t.split("/")[2] for t, _ in pub.sent] == boxes[:2]        # the canary only
    assert all(d["version"] == 1 and d["box"] == t.split("/")[2] for t, d in pub.sent)
    answer(store, pub)
    drive(store, pub, "w1")                                            # canary settled: wave 1 starts
    drive(store, pub, "w1")
    assert len(pub.sent) == 3                                          # the window: 3 in flight
    answer(store, pub)
    # a driver that stops here and a store reopened: the state is all in the store
    store.close()
    store = Store(db_url)
    for _ in range(30):
        if drive(store, pub, "w1") != "running":
            break
        assert len(pub.sent) <= 3
        answer(store, pub, bad={boxes[10]})
    st = campaign.status(store, "w1")
    assert st["state"] == "completed", (st["reason"], st["counts"])
    assert st["counts"]["applied"] == 19 and st["counts"]["rejected"] == 1
    bx = {b["box"]: b for b in st["boxes"]}
    assert bx[boxes[10]]["reason"] == "sig: does not verify"
    h = history.list_docs(store, boxes[0], "options")
    assert [(d["version"], d["author"], d["campaign"]) for d in h] == [(1, "alice", "w1")]
    assert store.desired_version(boxes[0], "options") == 1

    # half rejecting: aborted after the canary, nothing sent past it
    c2 = campaign.create(store, "options", dict(OPTIONS, speed_tier="2M"), {"boxes": boxes}, name="w2",
                         canary=0.1, waves=[1.0])
    campaign.start(store, c2["id"])
    drive(store, pub, "w2")
    assert [d["version"] for _, d in pub.sent] == [2, 2]               # the next version per box
    answer(store, pub, bad={boxes[1]})
    assert drive(store, pub, "w2") == "aborted"
    st = campaign.status(store, "w2")
    assert st["counts"]["pending"] == 18 and "the canary" in st["reason"]
    assert campaign.list_campaigns(store)[1]["counts"]["rejected"] == 1
    with pytest.raises(campaign.CampaignError):
        campaign.resume(store, "w2")                                    # aborted is final
    store.close()


def test_timeouts_offline_pause_targets(db_url):
    store = Store(db_url)
    boxes = [f"t{i}" for i in range(4)]
    online(store, boxes[:3])
    online(store, boxes[3:], "offline")
    campaign.tag(store, boxes[:2], ["tower-B"])
    assert campaign.resolve(store, {"tag": "tower-B"}) == boxes[:2]
    store.put_desired("t0", "options", dict(OPTIONS, speed_tier="5M", version=1, box="t0"))
    assert campaign.resolve(store, {"plan": "5M"}) == ["t0"]
    assert set(campaign.resolve(store, {"all": True})) == set(boxes)
    with pytest.raises(campaign.CampaignError):
        campaign.create(store, "options", OPTIONS, {"tag": "nowhere"})
    with pytest.raises(DocumentInvalid):
        campaign.create(store, "options", dict(OPTIONS, speed_tier="fast"), {"boxes": boxes})
    assert campaign.list_campaigns(store) == []                          # nothing recorded

    campaign.create(store, "options", OPTIONS, {"boxes": boxes}, name="t", canary=1.0, waves=[1.0],
                    box_timeout=30, success=0.5, abort=0.6)
    campaign.start(store, "t")
    pub = FakePublisher()
    drive(store, pub, "t")
    assert len(pub.sent) == 4 and pub.sent[0][1]["version"] == 2      # t0 had v1
    st = {b["box"]: b["state"] for b in campaign.boxes(store, "t")}
    assert st == {"t0": "sent", "t1": "sent", "t2": "sent", "t3": "offline"}
    answer(store, pub, silent={"t2", "t3"})
    campaign.refresh(store, "t", now=time.time() + 31)          # past the boxes' timeout
    state = drive(store, pub, "t")
    st = {b["box"]: b["state"] for b in campaign.boxes(store, "t")}
    assert st == {"t0": "applied", "t1": "applied", "t2": "timed_out", "t3": "offline"}
    assert state == "completed"                                         # 2 of 4 applied >= 0.5

    # a wave under its success threshold pauses; resume passes over it
    campaign.create(store, "options", OPTIONS, {"boxes": boxes[:3]}, name="u", canary=0.3, waves=[1.0],
                    abort=1.0)
    campaign.start(store, "u")
    drive(store, pub, "u")
    answer(store, pub, bad={"t0"})
    assert drive(store, pub, "u") == "paused"
    assert campaign.get(store, "u")["reason"].startswith(campaign.BELOW + " in the canary")
    assert campaign.resume(store, "u")["wave"] == 1
    drive(store, pub, "u")
    assert sorted(t.split("/")[2] for t, _ in pub.sent) == ["t1", "t2"]
    pub.sent.clear()

    # pause stops sending; resume goes on
    campaign.create(store, "options", OPTIONS, {"boxes": boxes[:3]}, name="p", canary=0.3, waves=[1.0])
    campaign.start(store, "p")
    campaign.pause(store, "p")
    assert campaign.step(store, pub, "p", None, 10) == ("paused", 0) and not pub.sent
    assert campaign.resume(store, "p")["state"] == "running"
    drive(store, pub, "p")
    assert len(pub.sent) == 1
    store.close()


def test_one_driver_at_a_time(db_url):
    store = Store(db_url)
    online(store, ["l0"])
    campaign.create(store, "options", OPTIONS, {"boxes": ["l0"]}, name="l")
    campaign.claim(store, "l", "elsewhere:1:abc")                        # a live driver on another host
    with pytest.raises(campaign.CampaignBusy):
        campaign.claim(store, "l", "me:2:def")
    campaign.release(store, "l", "elsewhere:1:abc")
    campaign.claim(store, "l", "me:2:def")
    # a driver of this host that was killed: its lease is taken over at once
    p = subprocess.Popen(["true"])
    p.wait()
    store._tx(lambda cur: cur.execute(store._sql("UPDATE campaigns SET driver=? WHERE id='l'"),
                                      (f"{socket.gethostname()}:{p.pid}:dead",)))
    campaign.claim(store, "l", "me:3:ghi")
    assert campaign.get(store, "l")["state"] == "created"
    store.close()
