"""Reconcile: after a broker kill -9 loses retained desired documents, `homebox ops
reconcile` restores them from the backend's store; running agents then report the
versions the backend wants. The broker runs from `homebox ops broker-config`'s
configuration: reconcile logs in as homebox-push over TLS, each box with its own
account and the generated CA."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid

import pytest

from agent.rules.sections import errors
from backend.store import Store
from homebox import boxrun
from tests.helpers import INTERPRETERS, ROOT, Capture, FleetBroker, publish

PUSH, INGEST = "homebox-push", "homebox-ingest-1"


def fleet_broker(workdir, boxes):
    # the generated autosave_interval (60 s) is longer than these tests: what was
    # retained since the broker started is lost by a kill -9
    return FleetBroker(workdir, {b: f"pw-{b}-{uuid.uuid4().hex}" for b in boxes}).start()


def reconcile_cli(fleet, db):
    r = subprocess.run([sys.executable, "-m", "homebox.cli", "ops", "reconcile", "--broker",
                        fleet.url(PUSH), "--tls-ca", str(fleet.ca), "--db", db], cwd=ROOT,
                       capture_output=True, text=True, timeout=60, env=fleet.cli_env(PUSH))
    assert r.returncode == 0, r.stderr
    return r.stdout


def retained_desired(fleet, wait=1.0):
    cap = Capture(topic="homebox/v1/+/desired/+", **fleet.login(INGEST))
    time.sleep(wait)
    cap.close()
    return {t: p for t, p, retained in cap.messages if retained}


def test_reconcile_restores_retained_desired_after_kill9(tmp_path):
    db = f"sqlite:///{tmp_path}/backend.db"
    store = Store(db)
    broker = fleet_broker(tmp_path / "broker", [f"rc{i}" for i in range(5)])
    want = {}
    for i in range(5):
        for section, doc in (("options", {"version": 3 + i, "speed_tier": "10M"}),
                             ("parental", {"version": 1, "tz": "CET-1CEST,M3.5.0,M10.5.0/3",
                                           "profiles": []})):
            box = f"rc{i}"
            payload = json.dumps(doc, separators=(",", ":")).encode()
            store.put_desired(box, section, payload)          # what `ops push` records
            publish(topic=f"homebox/v1/{box}/desired/{section}", payload=payload, **broker.login(PUSH))
            want[f"homebox/v1/{box}/desired/{section}"] = payload
    assert retained_desired(broker) == want
    broker.stop(signal.SIGKILL)
    broker.start()
    assert retained_desired(broker, 0.5) == {}, "the kill -9 should have lost them"
    out = reconcile_cli(broker, db)
    assert "re-published 10" in out
    assert retained_desired(broker) == want               # byte for byte
    # idempotent: a second run changes nothing
    reconcile_cli(broker, db)
    assert retained_desired(broker) == want
    broker.stop()
    store.close()


def _agent(tmp_path, fleet, box_id, interp):
    d = tmp_path / box_id
    net, creds = fleet.box_settings(box_id)
    cfg = boxrun.write_config(d, box_id=box_id, telemetry_interval=60, speedup=600, keepalive=5,
                              backoff_base=0.2, backoff_cap=1.0, drain_rate=200, **net)
    secrets = d / "secrets.json"
    secrets.write_text(json.dumps(creds))
    cmd, env = boxrun.box_command(cfg, micropython=interp == "micropython", heap="256k",
                                  secrets_path=secrets)
    log = open(tmp_path / f"{box_id}.log", "w")
    return subprocess.Popen(cmd, env=env, cwd=boxrun.neutral_cwd(), stdout=log, stderr=subprocess.STDOUT), log


def _applied(cap, box, section, version):
    for t, p, _r in list(cap.messages):
        if t == f"homebox/v1/{box}/reported/{section}":
            try:
                r = json.loads(p)
            except ValueError:
                continue
            if r.get("version") == version and r.get("status") == "applied":
                return True
    return False


def _logs(tmp_path, boxes):
    return "\n".join(f"--- {b}\n" + (tmp_path / f"{b}.log").read_text()[-1500:] for b in boxes)


@pytest.mark.parametrize("interp", INTERPRETERS)
def test_agents_reach_desired_versions_after_broker_kill9_and_reconcile(tmp_path, interp):
    boxes = [f"rc-agent-{interp[:2]}-{i}" for i in range(2)]
    doc1 = {"version": 1, "speed_tier": "10M"}
    doc2 = {"version": 2, "speed_tier": "2M"}
    assert errors("options", doc1) == [] and errors("options", doc2) == []
    db = f"sqlite:///{tmp_path}/backend.db"
    store = Store(db)
    broker = fleet_broker(tmp_path / "broker", boxes)
    agents = [_agent(tmp_path, broker, b, interp) for b in boxes]
    try:
        # every box, through its own reported document, read with the push account
        cap = Capture(topic="homebox/v1/+/reported/+", **broker.login(PUSH))
        for b in boxes:
            store.put_desired(b, "options", doc1)
        reconcile_cli(broker, db)
        assert cap.wait_for(lambda c: all(_applied(c, b, "options", 1) for b in boxes), 30), \
            _logs(tmp_path, boxes)
        cap.close()
        # the broker dies; while it is down the operator's store moves to version 2
        broker.stop(signal.SIGKILL)
        for b in boxes:
            store.put_desired(b, "options", doc2)
        broker.start()
        assert retained_desired(broker, 0.5) == {}
        cap = Capture(topic="homebox/v1/+/reported/+", **broker.login(PUSH))
        reconcile_cli(broker, db)
        assert cap.wait_for(lambda c: all(_applied(c, b, "options", 2) for b in boxes), 30), \
            _logs(tmp_path, boxes)
        cap.close()
    finally:
        for proc, log in agents:
            proc.kill()
            proc.wait()
            log.close()
        broker.stop()
        store.close()
