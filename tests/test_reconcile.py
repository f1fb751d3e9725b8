"""Reconcile: after a broker kill -9 loses retained desired documents, `homebox ops
reconcile` restores them from the backend's store; a running agent then reports
the versions the backend wants."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from helpers import ROOT, Capture, Mosquitto, publish

from agent.sections import errors
from backend.store import Store
from homebox import boxrun


def persistent_broker(workdir, port=None):
    # Mosquitto's default autosave (1800 s): what was retained since the last save
    # is lost by a kill -9.
    return Mosquitto(workdir, port=port, extra=f"persistence true\npersistence_location {workdir}/\n"
                                                 "autosave_interval 1800\n").start()


def reconcile_cli(port, db):
    r = subprocess.run([sys.executable, "-m", "homebox.cli", "ops", "reconcile", "--broker",
                        f"mqtt://127.0.0.1:{port}", "--db", db], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def retained_desired(port, wait=1.0):
    cap = Capture(port, "homebox/v1/+/desired/+")
    time.sleep(wait)
    cap.close()
    return {t: p for t, p, retained in cap.messages if retained}


def test_reconcile_restores_retained_desired_after_kill9(tmp_path):
    db = f"sqlite:///{tmp_path}/backend.db"
    store = Store(db)
    broker = persistent_broker(tmp_path / "broker")
    want = {}
    for i in range(5):
        for section, doc in (("options", {"version": 3 + i, "speed_tier": "10M"}),
                             ("parental", {"version": 1, "tz": "CET-1CEST,M3.5.0,M10.5.0/3",
                                           "profiles": []})):
            box = f"rc{i}"
            payload = json.dumps(doc, separators=(",", ":")).encode()
            store.put_desired(box, section, payload)          # what `ops push` records
            publish(broker.port, f"homebox/v1/{box}/desired/{section}", payload)
            want[f"homebox/v1/{box}/desired/{section}"] = payload
    assert retained_desired(broker.port) == want
    broker.stop(signal.SIGKILL)
    broker = persistent_broker(tmp_path / "broker", port=broker.port)
    assert retained_desired(broker.port, 0.5) == {}, "the kill -9 should have lost them"
    out = reconcile_cli(broker.port, db)
    assert "re-published 10" in out
    assert retained_desired(broker.port) == want               # byte for byte
    # idempotent: a second run changes nothing
    reconcile_cli(broker.port, db)
    assert retained_desired(broker.port) == want
    broker.stop()
    store.close()


def _agent(tmp_path, port, box_id):
    cfg = boxrun.write_config(tmp_path / box_id, box_id=box_id, broker_host="127.0.0.1",
                              broker_port=port, telemetry_interval=60, speedup=600, keepalive=5,
                              backoff_base=0.2, backoff_cap=1.0, drain_rate=200)
    cmd, env = boxrun.box_command(cfg)
    log = open(tmp_path / f"{box_id}.log", "w")
    return subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT), log


def _reported(cap, section):
    out = []
    for t, p, _r in list(cap.messages):
        if t.endswith("/reported/" + section):
            try:
                out.append(json.loads(p))
            except ValueError:
                pass
    return out


def test_agent_reaches_desired_versions_after_broker_kill9_and_reconcile(tmp_path):
    box = "rc-agent"
    doc1 = {"version": 1, "speed_tier": "10M"}
    doc2 = {"version": 2, "speed_tier": "2M"}
    assert errors("options", doc1) == [] and errors("options", doc2) == []
    db = f"sqlite:///{tmp_path}/backend.db"
    store = Store(db)
    broker = persistent_broker(tmp_path / "broker")
    proc, log = _agent(tmp_path, broker.port, box)
    try:
        cap = Capture(broker.port, f"homebox/v1/{box}/reported/+")
        store.put_desired(box, "options", doc1)
        reconcile_cli(broker.port, db)
        assert cap.wait_for(lambda c: any(r.get("version") == 1 and r.get("status") == "applied"
                                          for r in _reported(c, "options")), 30), \
            (tmp_path / f"{box}.log").read_text()[-2000:]
        cap.close()
        # the broker dies; while it is down the operator's store moves to version 2
        broker.stop(signal.SIGKILL)
        store.put_desired(box, "options", doc2)
        broker = persistent_broker(tmp_path / "broker", port=broker.port)
        assert retained_desired(broker.port, 0.5) == {}
        cap = Capture(broker.port, f"homebox/v1/{box}/reported/+")
        reconcile_cli(broker.port, db)
        assert cap.wait_for(lambda c: any(r.get("version") == 2 and r.get("status") == "applied"
                                          for r in _reported(c, "options")), 30), \
            (tmp_path / f"{box}.log").read_text()[-2000:]
        cap.close()
    finally:
        proc.kill()
        proc.wait()
        log.close()
        broker.stop()
        store.close()
