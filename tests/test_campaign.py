"""Campaigns end to end: real agents under MicroPython (each its own process, the
sim HAL), a real Mosquitto, ingest storing what the boxes report, and the
campaign driver reading the states from the store.

- 20 boxes, a 10% canary, one box made to reject (its key is not the one the
  operator signs with): the campaign completes, 19 applied, 1 rejected with the
  box's reason. Its driver (the CLI, a process of its own) is killed with kill -9
  mid-campaign and `resume` finishes it from the store.
- 20 boxes, half of them rejecting: the campaign aborts after the canary, the
  other waves untouched; then a rollback of one box to its earlier document.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from backend import campaign, history, push, rollback
from backend.ingest import Ingest
from backend.store import Store
from common.broker import parse_broker
from common.credentials import box_key
from homebox import boxrun, cli
from tests.helpers import Mosquitto, wait_until

ROOT = Path(__file__).resolve().parent.parent
MASTER = b"operator-master-secret-for-campaigns-0123456789"
OTHER = b"another-operator-secret-the-box-was-given-000000"
OPTIONS = {"speed_tier": "10M", "bouquets": [], "phone": {"enabled": True, "number": "+33299000000"}}
GOOD, BAD = 19, 10


def wait(pred, timeout: float, what: str):
    return wait_until(pred, timeout, what, interval=0.1)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """19 boxes with the operator's key, 10 with another one, all online in the store."""
    tmp = tmp_path_factory.mktemp("campaign")
    tag = uuid.uuid4().hex[:6]
    broker = Mosquitto(tmp / "broker").start()
    db = f"sqlite:///{tmp}/backend.db"
    ing = Ingest(f"mqtt://127.0.0.1:{broker.port}", Store(db), client_id=f"test-campaign-ingest-{tag}",
                 batch_wait=0.05, log=lambda *a: None)
    th = threading.Thread(target=ing.run, kwargs={"stats_every": 0}, daemon=True)
    th.start()
    secret = tmp / "master.secret"
    secret.write_bytes(MASTER + b"\n")
    secret.chmod(0o600)                 # a master file others can read is refused
    good = [f"cg{tag}-{i:02d}" for i in range(GOOD)]
    bad = [f"cb{tag}-{i:02d}" for i in range(BAD)]
    procs = []
    for box in good + bad:
        d = tmp / "boxes" / box
        cfg = boxrun.write_config(d, box_id=box, broker_host="127.0.0.1", broker_port=broker.port,
                                  telemetry_interval=300, backoff_base=0.2, backoff_cap=1.0)
        sec = d / "secrets.json"
        sec.write_text(json.dumps({"hmac_key": box_key(MASTER if box in good else OTHER, box).hex()}))
        cmd, env = boxrun.box_command(cfg, micropython=True, heap="256k", secrets_path=sec)
        procs.append(subprocess.Popen(cmd, env=env, cwd=boxrun.neutral_cwd(), stdout=open(d / "box.log", "w"),
                                      stderr=subprocess.STDOUT))
    store = Store(db)
    try:
        wait(lambda: {b["box"] for b in store.boxes() if b["state"] == "online"} >= set(good + bad), 90,
             "every box online in the store")
        yield {"db": db, "store": store, "broker": broker, "good": good, "bad": bad, "secret": secret,
               "url": parse_broker(f"127.0.0.1:{broker.port}")}
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait(10)
        ing.stop()
        th.join(30)
        store.close()
        broker.stop()


def test_campaign_one_rejecting_box_completes_and_survives_a_killed_driver(fleet, tmp_path):
    store, good, bad = fleet["store"], fleet["good"], fleet["bad"]
    boxes = good[:10] + [bad[0]] + good[10:19]
    assert len(boxes) == 20
    tmpl = tmp_path / "options.json"
    tmpl.write_text(json.dumps(OPTIONS))
    name = f"one-{uuid.uuid4().hex[:6]}"
    base = ["ops", "campaign"]
    db = ["--db", fleet["db"], "--json"]
    assert cli.main(base + ["create", "options", str(tmpl), "--box", ",".join(boxes), "--name", name,
                            "--canary", "0.1", "--waves", "0.3,1", "--rate", "4", "--box-timeout", "30",
                            "--author", "alice"] + db) == 0
    c = campaign.get(store, name)
    assert c["waves"] == [2, 6, 20] and c["state"] == "created"

    # the driver is a process of its own: kill -9 it once the second wave is under way
    drive = [sys.executable, "-m", "homebox.cli"] + base + [
        "start", name, "--broker", f"127.0.0.1:{fleet['broker'].port}",
        "--master-secret-file", str(fleet["secret"])] + db
    p = subprocess.Popen(drive, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait(lambda: campaign.get(store, name)["wave"] >= 1 and
             campaign.counts(store, name)["pending"] <= 16, 60, "the second wave under way")
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    n = campaign.counts(store, name)
    assert n["pending"] > 0, n                         # killed mid-campaign

    assert campaign.resume(store, name)["state"] == "running"
    st = campaign.run(store, fleet["url"], name, MASTER, until=time.time() + 120)
    assert st["state"] == "completed", (st["reason"], st["counts"])
    states = {b["box"]: b for b in st["boxes"]}
    assert all(states[b]["state"] == "applied" for b in boxes if b != bad[0]), st["counts"]
    assert states[bad[0]]["state"] == "rejected"
    assert states[bad[0]]["reason"].startswith("sig:"), states[bad[0]]
    assert [w["counts"]["applied"] for w in st["wave_stats"]] == [2, 4, 13]

    # the CLI's view, and the history: one document per box, with its author and campaign
    out = subprocess.run([sys.executable, "-m", "homebox.cli"] + base + ["status", name] + db,
                         cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert json.loads(out.stdout)["counts"]["applied"] == 19
    h = history.list_docs(store, good[0], "options")
    assert [(d["author"], d["campaign"]) for d in h] == [("alice", name)]
    assert json.loads(h[0]["payload"])["speed_tier"] == "10M"


def test_campaign_half_rejecting_aborts_after_the_canary_then_rollback(fleet):
    store, good, bad = fleet["store"], fleet["good"], fleet["bad"]
    boxes = [b for pair in zip(good[:10], bad) for b in pair]     # the canary: one good, one bad
    name = f"half-{uuid.uuid4().hex[:6]}"
    first = push.push(fleet["url"], boxes[0], "options", OPTIONS, MASTER, store=store, author="dan")
    assert first.status == "applied", first
    c = campaign.create(store, "options", dict(OPTIONS, speed_tier="2M"), {"boxes": boxes}, name=name,
                        canary=0.1, waves=[0.5, 1.0], rate=100, box_timeout=30, author="bob")
    st = campaign.run(store, fleet["url"], c["id"], MASTER, until=time.time() + 90)
    assert st["state"] == "aborted" and st["wave"] == 0, (st["state"], st["reason"])
    assert "the canary" in st["reason"]
    states = {b["box"]: b["state"] for b in st["boxes"]}
    assert states[boxes[0]] == "applied" and states[boxes[1]] == "rejected"
    assert st["counts"]["pending"] == 18                            # nothing after the canary
    assert not [d for d in history.list_docs(store, boxes[2]) if d["campaign"] == name]

    # the box that applied "2M" goes back to its earlier document
    box = boxes[0]
    h = history.list_docs(store, box, "options")
    assert (h[0]["campaign"], h[0]["author"], h[1]["author"]) == (name, "bob", "dan")
    earlier = h[1]["version"]
    r = rollback.rollback(fleet["url"], store, box, "options", earlier, MASTER, author="carol")
    assert r.status == "applied" and r.version == h[0]["version"] + 1, r
    assert json.loads(history.list_docs(store, box, "options")[0]["payload"])["speed_tier"] == "10M"
    wait(lambda: (store.reported().get(box, {}).get("options") or {}).get("version") == r.version, 30,
         "ingest stores the rolled-back report")
