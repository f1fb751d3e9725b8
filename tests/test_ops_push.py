"""End to end: `homebox ops push` to the real agent (CPython, and MicroPython with a
256k heap) over a real Mosquitto. Each section is applied; a bad document is
rejected with a field-named reason and the previous one stays in force; a
replay and documents for another box (or unsigned) are refused. Each push is
recorded in the backend store, and the store's version wins over a broker that
lost its retained copy."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from agent.rules import SECTIONS, sign
from common.credentials import box_key
from homebox import boxrun, cli
from tests.helpers import Capture, publish

ROOT = Path(__file__).resolve().parent.parent
EX = ROOT / "docs" / "contract" / "examples"
MASTER = b"operator-master-secret-for-tests-0123456789"


@pytest.fixture(autouse=True)
def store_url(tmp_path, monkeypatch):
    # every push records into the backend store: a fresh one per test, never ./state
    url = f"sqlite:///{tmp_path}/backend.db"
    monkeypatch.setenv("HOMEBOX_DB", url)
    return url


def push(capsys, section, doc_or_path, box, port, secret, *extra, tmp=None):
    if isinstance(doc_or_path, dict):
        p = Path(tmp or Path(secret).parent) / f"doc-{time.time_ns()}.json"
        p.write_text(json.dumps(doc_or_path))
        doc_or_path = p
    argv = ["ops", "push", section, str(doc_or_path), "--box", box, "--broker", f"127.0.0.1:{port}",
            "--timeout", "20"]
    if secret:
        argv += ["--master-secret-file", str(secret)]
    rc = cli.main(argv + list(extra))
    out = capsys.readouterr()
    assert MASTER.decode() not in out.out + out.err
    return rc, out.out.strip()


@pytest.fixture
def running_box(request, broker, tmp_path):
    interp = request.param
    box = f"hb-e2e-{interp[:2]}"
    secret = tmp_path / "master.secret"
    secret.write_bytes(MASTER + b"\n")
    secret.chmod(0o600)
    secrets = tmp_path / "box" / "secrets.json"
    cfg = boxrun.write_config(tmp_path / "box", box_id=box, broker_host="127.0.0.1", broker_port=broker.port,
                              telemetry_interval=300, backoff_base=0.2, backoff_cap=1.0)
    secrets.write_text(json.dumps({"hmac_key": box_key(MASTER, box).hex()}))
    cmd, env = boxrun.box_command(cfg, micropython=interp == "micropython", heap="256k", secrets_path=secrets)
    log = open(tmp_path / "box.log", "w")
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    cap = Capture(broker.port, f"homebox/v1/{box}/#")
    try:
        ok = cap.wait_for(lambda c: any(p.get("state") == "online" for p in c.payloads("/status")), 30)
        assert ok, (tmp_path / "box.log").read_text()
        yield box, broker.port, secret, cap, tmp_path
    finally:
        cap.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def last_reported(cap, box, section):
    reps = [p for p in cap.payloads(f"/{box}/reported/{section}")]
    return reps[-1] if reps else None


@pytest.mark.parametrize("running_box", ["cpython", "micropython"], indirect=True)
def test_push_sections_end_to_end(running_box, capsys, monkeypatch):
    monkeypatch.delenv("HOMEBOX_MASTER_SECRET_FILE", raising=False)
    box, port, secret, cap, tmp = running_box
    for section in SECTIONS:
        rc, out = push(capsys, section, EX / f"desired-{section}.json", box, port, secret)
        assert (rc, out) == (0, "applied v1"), section

    # the effective lineup (options gate the bouquets) and the parental state are reported
    assert cap.wait_for(lambda c: (last_reported(c, box, "channels") or {}).get("effective", {}).get("lcns")
                        == [1, 2, 3, 5, 6, 7, 40, 41], 15), last_reported(cap, box, "channels")
    assert cap.wait_for(lambda c: "enforced" in (last_reported(c, box, "parental") or {}), 15)
    enf = last_reported(cap, box, "parental")["enforced"]
    assert enf["clock"] == "ok" and enf["dns"] == "family"
    # sim time starts on Thursday 2026-01-01 01:00 in Paris: outside the kids' hours,
    # and the console is paused until 20:40 UTC
    assert enf["blocked"] == ["3c:22:fb:ab:cd:ef", "7c:bb:8a:01:02:03", "a4:5e:60:12:34:56"]

    # a bad document: a field-named rejection, the previous document stays in force
    opts = json.loads((EX / "desired-options.json").read_text())
    bad = dict(opts, bouquets=["cinema", "music"])
    rc, out = push(capsys, "options", bad, box, port, secret)
    assert rc == 1 and out.startswith("rejected: bouquets[1]: unknown bouquet music"), out
    rep = last_reported(cap, box, "options")
    assert rep["version"] == 1 and rep["rejected"]["version"] == 2
    bad_p = json.loads((EX / "desired-parental.json").read_text())
    bad_p["profiles"][0]["schedule"][0]["to"] = "25:00"
    rc, out = push(capsys, "parental", bad_p, box, port, secret, "--no-check")
    assert rc == 1 and out.startswith("rejected: profiles[0].schedule[0].to:"), out
    # the local check refuses to publish it at all without --no-check
    rc, out = push(capsys, "parental", bad_p, box, port, secret)
    assert rc == 1 and out == ""

    # the next push gets the next free version, and applies
    rc, out = push(capsys, "options", dict(opts, bouquets=[]), box, port, secret)
    assert (rc, out) == (0, "applied v3")
    assert cap.wait_for(lambda c: last_reported(c, box, "channels")["effective"]["lcns"] == [1, 2, 3, 5, 6, 7], 15)

    # a replay of the signed v1 is ignored and reported
    key = sign.box_key(MASTER, box)
    v1 = dict(opts, version=1, box=box)
    v1["sig"] = sign.sign(v1, key)
    publish(port, f"homebox/v1/{box}/desired/options", v1)
    assert cap.wait_for(lambda c: (last_reported(c, box, "options").get("ignored") or {}).get("version") == 1, 15)
    assert last_reported(cap, box, "options")["version"] == 3

    # another box's document, a document signed with another box's key, unsigned, tampered
    other = sign.box_key(MASTER, "hb-other")
    d = dict(opts, version=10, box="hb-other")
    d["sig"] = sign.sign(d, other)
    cases = [(d, "box")]
    d = dict(opts, version=11, box=box)
    d["sig"] = sign.sign(d, other)
    cases.append((d, "sig"))
    cases.append((dict(opts, version=12, box=box), "sig"))
    d = dict(opts, version=13, box=box)
    d["sig"] = sign.sign(d, key)
    d["speed_tier"] = "100M"
    cases.append((d, "sig"))
    for doc, field in cases:
        publish(port, f"homebox/v1/{box}/desired/options", doc)
        v = doc["version"]
        assert cap.wait_for(lambda c, v=v: (last_reported(c, box, "options").get("rejected") or {}).get("version")
                            == v, 15), (doc, last_reported(cap, box, "options"))
        rep = last_reported(cap, box, "options")
        assert rep["rejected"]["field"] == field and rep["version"] == 3, rep
    # the CLI without a master secret pushes unsigned: the box refuses it
    rc, out = push(capsys, "options", opts, box, port, None, tmp=tmp)
    assert rc == 1 and out.startswith("rejected: sig: is required"), out
    # the document in force is still v3, and it survives as the box's stored copy
    rc, out = push(capsys, "options", opts, box, port, secret, "--json")
    assert rc == 0 and json.loads(out)["result"] == "applied" and json.loads(out)["version"] == 15


def test_push_times_out_without_a_box(broker, tmp_path, capsys):
    secret = tmp_path / "m"
    secret.write_bytes(MASTER)
    secret.chmod(0o600)
    rc = cli.main(["ops", "push", "options", str(EX / "desired-options.json"), "--box", "hb-absent",
                   "--broker", f"127.0.0.1:{broker.port}", "--timeout", "1", "--master-secret-file", str(secret)])
    out = capsys.readouterr().out
    assert rc == 2 and out.startswith("timeout: no report from hb-absent for v1")
    # the next push sees the retained document and takes the next version
    rc = cli.main(["ops", "push", "options", str(EX / "desired-options.json"), "--box", "hb-absent",
                   "--broker", f"127.0.0.1:{broker.port}", "--timeout", "0.5", "--json",
                   "--master-secret-file", str(secret)])
    assert rc == 2 and json.loads(capsys.readouterr().out)["version"] == 2


def test_validate_command(tmp_path, capsys):
    for s in SECTIONS:
        assert cli.main(["ops", "validate", s, str(EX / f"desired-{s}.json")]) == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": 0, "tz": "CET", "profiles": [{"id": "A", "macs": ["x"]}]}))
    capsys.readouterr()
    assert cli.main(["ops", "validate", "parental", str(bad)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["version", "tz", "profiles[0].id", "profiles[0].macs[0]"]
    assert cli.main(["ops", "validate", "parental", str(bad), "--json"]) == 1
    j = json.loads(capsys.readouterr().out)
    assert j["valid"] is False and len(j["violations"]) == 4
    opts = EX / "desired-options.json"
    assert cli.main(["ops", "validate", "options", str(opts), "--channels", str(EX / "desired-channels.json")]) == 0
    tnt_only = tmp_path / "ch.json"
    tnt_only.write_text(json.dumps({"version": 1, "channels": [{"lcn": 1, "name": "TF1", "url": "dvb://tnt/1",
                                                                "bouquet": "tnt"}]}))
    assert cli.main(["ops", "validate", "options", str(opts), "--channels", str(tnt_only)]) == 1
    assert "bouquets[0]: unknown bouquet cinema" in capsys.readouterr().out


def test_examples_follow_the_schemas():
    from backend import contract
    for s in SECTIONS:
        doc = json.loads((EX / f"desired-{s}.json").read_text())
        key = sign.box_key(MASTER, "hb-1")
        doc = dict(doc, box="hb-1")
        doc["sig"] = sign.sign(doc, key)
        contract.validate(f"homebox/v1/hb-1/desired/{s}", doc)


def test_push_records_the_desired_document(broker, tmp_path, capsys, store_url):
    """`push` stores exactly what it publishes (so `reconcile` can restore it), the
    next version comes from the store when the broker lost its retained copy, and
    `status` compares desired with reported."""
    from backend import status
    from backend.store import Store

    secret = tmp_path / "m"
    secret.write_bytes(MASTER)
    secret.chmod(0o600)
    doc = EX / "desired-options.json"
    cap = Capture(broker.port, "homebox/v1/hb-rec/desired/+")
    base = ["ops", "push", "options", str(doc), "--box", "hb-rec", "--broker", f"127.0.0.1:{broker.port}",
            "--timeout", "0.5", "--master-secret-file", str(secret)]
    assert cli.main(base) == 2                     # no box: a timeout, but recorded and retained
    assert cap.wait_for(lambda c: len(c.messages) == 1, 5)
    store = Store(store_url)
    (rec,) = store.desired()
    assert (rec["box"], rec["section"], rec["version"], rec["source"]) == ("hb-rec", "options", 1, "push")
    assert rec["payload"] == cap.messages[0][1]     # byte for byte what the broker retains
    # the broker loses the retained document (a crash before autosave): the store
    # still knows v1, so the next push is v2, not a v1 the box would ignore as a replay
    publish(broker.port, "homebox/v1/hb-rec/desired/options", b"")
    capsys.readouterr()
    assert cli.main(base + ["--json"]) == 2
    assert json.loads(capsys.readouterr().out)["version"] == 2
    assert store.desired_version("hb-rec", "options") == 2
    # --no-record leaves the store alone; another store is chosen with --db
    assert cli.main(base + ["--no-record"]) == 2
    assert store.desired_version("hb-rec", "options") == 2
    other = f"sqlite:///{tmp_path}/other.db"
    assert cli.main(base + ["--db", other]) == 2
    assert Store(other).desired_version("hb-rec", "options") == 4
    cap.close()

    # status: the box reports v1 in force while the store wants v2 -> pending
    from backend.ingest import classify
    recs = [classify("homebox/v1/hb-rec/status", json.dumps({"state": "online", "box": "hb-rec", "boot": 1,
                                                              "fw": "t", "ts": 1}).encode()),
            classify("homebox/v1/hb-rec/reported/options",
                     json.dumps({"version": 1, "status": "applied", "box": "hb-rec",
                                 "section": "options"}).encode())]
    assert [r.what for r in recs] == ["status", "reported"], [r.errors for r in recs]
    store.write_batch(recs)
    (row,) = status.fleet(store)
    assert row["versions"] == {"options": 1} and row["desired"] == {"options": 2}
    assert row["pending"] == ["options"]
    assert status.summary([row])["pending_updates"] == 1
    status.print_table([row])
    assert "options=1→2" in capsys.readouterr().out
    store.close()
