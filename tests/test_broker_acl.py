"""The generated Mosquitto configuration on a real Mosquitto: isolation proven by
delivery (what a client actually receives), never by SUBACK codes."""
from __future__ import annotations

import json
import ssl
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from backend import broker_config
from tests.helpers import FleetBroker

A, B, C = "box-a", "box-b", "box-c"
PW = {A: "pw-a-9f8e7d6c5b4a", B: "pw-b-1a2b3c4d5e6f", C: "pw-c-0011223344556677"}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    out = tmp_path_factory.mktemp("brokercfg")
    # box-c comes from the ledger as a hash made by Mosquitto's own tool
    pwfile = out / "c.passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pwfile), C, PW[C]], check=True)
    c_hash = pwfile.read_text().strip().split(":", 1)[1]
    creds = out / "boxes.json"
    creds.write_text(json.dumps({A: PW[A], B: {"password": PW[B]}, C: {"hash": c_hash}}))
    b = FleetBroker(out, broker_config.load_credentials(creds)).start()
    yield b
    b.stop()


class Client:
    def __init__(self, port, user, password, client_id="", tls_ca=None, protocol=mqtt.MQTTv311, cert=None):
        self.msgs: list[tuple[str, bytes]] = []
        self.retained: list[tuple[str, bytes]] = []
        self.rc = None
        self.disconnects = 0
        self.connected = threading.Event()
        self.done = threading.Event()
        kw = {"protocol": protocol}
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, **kw)
        if user is not None:
            self.c.username_pw_set(user, password)
        if tls_ca:
            ctx = ssl.create_default_context(cafile=str(tls_ca))
            if cert:
                ctx.load_cert_chain(str(cert), str(cert.with_suffix(".key")))
            self.c.tls_set_context(ctx)
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_disconnect = self._on_disconnect
        self.c.on_subscribe = lambda *a: self.subacked.set()
        self.subacked = threading.Event()
        self.c.connect("127.0.0.1" if not tls_ca else "localhost", port)
        self.c.loop_start()
        self.done.wait(5)

    def _on_message(self, c, u, m):
        # retained copies left by earlier tests are kept apart from live messages
        (self.retained if m.retain else self.msgs).append((m.topic, bytes(m.payload)))

    def _on_connect(self, c, u, flags, rc, props):
        self.rc = rc
        if not rc.is_failure:
            self.connected.set()
        self.done.set()

    def _on_disconnect(self, c, u, flags, rc, props):
        self.disconnects += 1
        self.done.set()

    def sub(self, *filters):
        self.subacked.clear()
        self.c.subscribe([(f, 1) for f in filters])
        assert self.subacked.wait(5)

    def pub(self, topic, payload, retain=False):
        info = self.c.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(5)

    def topics(self):
        return sorted({t for t, _ in self.msgs})

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def box(fleet, name, **kw):
    c = Client(fleet.plain, name, PW[name], client_id=kw.pop("client_id", name), **kw)
    assert c.connected.is_set(), f"{name} could not log in: {c.rc}"
    return c


def backend(fleet, user, **kw):
    """A backend service on the backend listener, with its certificate."""
    c = Client(fleet.backend, None, None, client_id=user, tls_ca=fleet.ca, cert=fleet.cert(user), **kw)
    assert c.connected.is_set(), f"{user}: {c.rc}"
    return c


def wait_for(pred, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def test_logins(fleet):
    cases = [(A, PW[A], True), (C, PW[C], True), (A, "wrong", False), (A, PW[B], False),
             (B, PW[A], False), ("box-zz", "whatever", False), (None, None, False),
             # the services have no password: only their certificate, on the backend listener
             ("homebox-ingest-1", "", False), ("homebox-push", "homebox-push", False)]
    for user, pw, ok in cases:
        c = Client(fleet.plain, user, pw, client_id=user or "anon")
        assert c.connected.is_set() == ok, (user, c.rc)
        if not ok:
            assert c.rc is not None and c.rc.is_failure
        c.close()
    assert backend(fleet, "homebox-ingest-1").connected.is_set()
    # the backend listener takes no password: a box's is refused there
    try:
        c = Client(fleet.backend, A, PW[A], client_id=A, tls_ca=fleet.ca)
        assert wait_for(lambda: c.done.is_set()) and not c.connected.is_set()
        c.close()
    except (ssl.SSLError, OSError):
        pass                            # the handshake itself failed: refused just as well


def test_box_receives_nothing_of_another_box(fleet):
    spy_filters = [f"homebox/v1/{B}/desired/+", f"homebox/v1/{B}/reported/+", f"homebox/v1/{B}/#",
                   "homebox/#", "#", "+/+/+/desired/+", "homebox/v1/+/reported/+",
                   "homebox/v1/+/telemetry/#", "$share/g/homebox/v1/+/desired/+", "$SYS/#"]
    spy = box(fleet, A)
    spy.sub(*spy_filters)
    b = box(fleet, B)
    b.sub(f"homebox/v1/{B}/desired/+")
    ing = backend(fleet, "homebox-ingest-1")
    ing.sub("homebox/v1/+/reported/+", "homebox/v1/+/telemetry/#")
    push = backend(fleet, "homebox-push")
    push.pub(f"homebox/v1/{B}/desired/parental", b'{"version": 7}', retain=True)
    b.pub(f"homebox/v1/{B}/reported/parental", b'{"version": 7}', retain=True)
    b.pub(f"homebox/v1/{B}/telemetry/health", b"{}")
    # positive controls: the messages did flow to their rightful readers
    assert wait_for(lambda: b.topics() == [f"homebox/v1/{B}/desired/parental"])
    assert wait_for(lambda: len(ing.msgs) == 2)
    time.sleep(0.5)
    assert spy.msgs == [] and spy.retained == []
    spy.close()
    # a fresh subscription gets retained messages at once: still nothing of B's
    spy2 = box(fleet, A)
    spy2.sub(*spy_filters)
    late = box(fleet, C)                       # control: retained delivery does work
    push.pub(f"homebox/v1/{C}/desired/channels", b'{"version": 1}', retain=True)
    late.sub(f"homebox/v1/{C}/desired/+")
    assert wait_for(lambda: late.retained)
    assert spy2.retained == [] and spy2.msgs == []
    assert wait_for(lambda: late.retained)
    time.sleep(0.3)
    assert spy2.msgs == [] and spy2.retained == []
    for c in (spy2, b, ing, push, late):
        c.close()


def test_box_cannot_publish_into_other_topics(fleet):
    ing = backend(fleet, "homebox-ingest-2")
    ing.sub("homebox/v1/+/telemetry/#", "homebox/v1/+/event", "homebox/v1/+/status",
            "homebox/v1/+/reported/+", "homebox/v1/+/desired/+")
    push = backend(fleet, "homebox-push")
    push.sub("homebox/v1/+/desired/+")
    b = box(fleet, B)
    b.sub(f"homebox/v1/{B}/desired/+")
    a = box(fleet, A)
    forged = [f"homebox/v1/{B}/telemetry/health", f"homebox/v1/{B}/status", f"homebox/v1/{B}/event",
              f"homebox/v1/{B}/reported/parental", f"homebox/v1/{B}/desired/parental",
              f"homebox/v1/{A}/desired/parental",          # nor its own desired document
              f"homebox/v1/{B}/telemetry/../../{A}/x", "other/topic",
              # its own topics, but not a kind or section of the contract
              f"homebox/v1/{A}/telemetry/x", f"homebox/v1/{A}/telemetry/health/x",
              f"homebox/v1/{A}/reported/x", f"homebox/v1/{A}/event/x"]
    for t in forged:
        a.pub(t, b'{"version": 99}')
    a.pub(f"homebox/v1/{A}/telemetry/health", b"{}")        # control: its own telemetry flows
    a.pub(f"homebox/v1/{A}/event", b"{}")
    assert wait_for(lambda: len(ing.msgs) >= 2)
    time.sleep(0.5)
    assert ing.topics() == [f"homebox/v1/{A}/event", f"homebox/v1/{A}/telemetry/health"]
    assert push.msgs == [] and b.msgs == []
    for c in (ing, push, b, a):
        c.close()


def test_client_id_takeover_is_impossible(fleet):
    b = box(fleet, B)
    b.sub(f"homebox/v1/{B}/desired/+")
    time.sleep(0.2)
    b.msgs.clear()                        # retained documents from earlier tests
    # A logs in with its own credentials but asks for B's client id (and a persistent session)
    a = Client(fleet.plain, A, PW[A], client_id=B)
    assert a.connected.is_set()
    a.sub(f"homebox/v1/{B}/desired/+")
    push = backend(fleet, "homebox-push")
    push.pub(f"homebox/v1/{B}/desired/options", b'{"version": 3}')
    assert wait_for(lambda: b.msgs)       # B is still connected and still served
    time.sleep(0.3)
    assert b.disconnects == 0 and b.c.is_connected()
    assert a.msgs == [] and a.retained == []
    # and B's own credentials from another place do replace B (the broker keys on username)
    b2 = box(fleet, B, client_id="anything")
    assert wait_for(lambda: b.disconnects >= 1)
    for c in (a, b, b2, push):
        c.close()


def test_backend_accounts_have_only_their_rights(fleet):
    b = box(fleet, B)
    b.sub(f"homebox/v1/{B}/desired/+")
    time.sleep(0.2)
    b.msgs.clear()
    watcher = backend(fleet, "homebox-ingest-1")
    watcher.sub("homebox/v1/+/telemetry/#", "homebox/v1/+/desired/+")
    ing = backend(fleet, "homebox-ingest-2")
    ing.pub(f"homebox/v1/{B}/desired/parental", b'{"version": 50}')     # ingest may not push
    push = backend(fleet, "homebox-push")
    push.pub(f"homebox/v1/{B}/telemetry/health", b"{}")                  # push may not forge telemetry
    push.pub(f"homebox/v1/{B}/desired/parental", b'{"version": 51}')     # but may push
    assert wait_for(lambda: b.msgs)
    time.sleep(0.4)
    assert b.msgs == [(f"homebox/v1/{B}/desired/parental", b'{"version": 51}')]
    assert watcher.topics() == [f"homebox/v1/{B}/desired/parental"]
    for c in (b, watcher, ing, push):
        c.close()


def test_ops_push_with_the_push_account(fleet, tmp_path, monkeypatch, capsys):
    """`homebox ops push` under the generated configuration: the push account over
    TLS, the box gets the document, answers, and push reports it applied."""
    from pathlib import Path

    from homebox import cli
    ex = Path(__file__).resolve().parent.parent / "docs" / "contract" / "examples" / "desired-options.json"
    monkeypatch.setenv("HOMEBOX_DB", f"sqlite:///{tmp_path}/backend.db")
    monkeypatch.delenv("HOMEBOX_MASTER_SECRET_FILE", raising=False)
    a = box(fleet, A)
    a.sub(f"homebox/v1/{A}/desired/+")
    argv = ["ops", "push", "options", str(ex), "--box", A, "--broker", f"mqtts://homebox-push@localhost:{fleet.tls}",
            "--tls-ca", str(fleet.out / "ca.crt"), "--timeout", "10", "--json"]
    monkeypatch.delenv("HOMEBOX_MQTT_CERT", raising=False)
    monkeypatch.setenv("HOMEBOX_MQTT_PASSWORD", "wrong")
    assert cli.main(argv) == 2
    assert "refused" in json.loads(capsys.readouterr().out)["message"]
    argv[argv.index("--broker") + 1] = fleet.url("homebox-push")
    rc: list = []
    t = threading.Thread(target=lambda: rc.append(cli.main(argv)))
    t.start()
    assert wait_for(lambda: a.msgs, 10), "the box did not get the document"
    ((topic, payload),) = a.msgs
    v = json.loads(payload)["version"]
    a.pub(f"homebox/v1/{A}/reported/options",
          json.dumps({"version": v, "status": "applied", "box": A, "section": "options"}), retain=True)
    t.join(15)
    out = json.loads(capsys.readouterr().out)
    assert rc == [0] and out["result"] == "applied" and out["version"] == v, out
    a.close()


def test_shared_subscription_and_tls_listener(fleet):
    cfg = fleet.out
    ing = backend(fleet, "homebox-ingest-1", protocol=mqtt.MQTTv5)
    assert ing.connected.is_set()
    ing.sub("$share/ingest/homebox/v1/+/telemetry/#")
    a = Client(fleet.tls, A, PW[A], client_id=A, tls_ca=cfg / "ca.crt")
    assert a.connected.is_set(), a.rc
    a.pub(f"homebox/v1/{A}/telemetry/health", b'{"over": "tls"}')
    assert wait_for(lambda: ing.msgs == [(f"homebox/v1/{A}/telemetry/health", b'{"over": "tls"}')])
    a.close()
    ing.close()
    # the TLS listener really is TLS: a client that does not trust our CA fails
    bad = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="t")
    bad.username_pw_set(A, PW[A])
    bad.tls_set_context(ssl.create_default_context())
    with pytest.raises(ssl.SSLError):
        bad.connect("localhost", fleet.tls)


def test_password_hash_format_matches_mosquitto():
    from common.credentials import mosquitto_hash
    h = mosquitto_hash("s3cret", salt=b"0123456789ab")
    parts = h.split("$")
    assert parts[1] == "7" and parts[2] == "101"
    import base64
    assert len(base64.b64decode(parts[3])) == 12 and len(base64.b64decode(parts[4])) == 64
    assert broker_config.queue_size(1_000_000) > 1000 and broker_config.queue_size(10) == 10000
    with pytest.raises(ValueError):
        broker_config.generate("/tmp/never-used-homebox", {"a/b": "x"}, tls=False)


def _ops(args, env, stdin=None):
    import sys

    from tests.helpers import ROOT
    return subprocess.run([sys.executable, "-m", "homebox.cli", "ops"] + args, cwd=str(ROOT), env=env,
                          input=stdin, capture_output=True, text=True, timeout=120)


def test_an_operator_pushes_as_themselves_and_once_revoked_is_refused(fleet, tmp_path):
    """alice (operator) logs in to the broker with her console password and pushes
    as op.alice: the box gets the document, the broker's log names her; bob (a
    viewer) gets no identity; revoked, alice is refused and the box gets nothing."""
    from backend import accounts
    from backend.store import Store
    db = f"sqlite:///{tmp_path}/api.db"
    st = Store(db)
    accounts.add(st, "alice", "operator", "alice-console-pw-1", author="admin")
    accounts.add(st, "bob", "viewer", "bob-console-pw-22", author="admin")
    st.close()
    env = fleet.cli_env("alice")
    env.pop("HOMEBOX_MQTT_PASSWORD", None)
    ids = tmp_path / "alice-ids"
    login = ["broker-login", "alice", "--broker-dir", str(fleet.out), "--out", str(ids), "--hours", "1",
             "--broker-pid", str(fleet.proc.pid), "--password-stdin", "--db", db, "--json"]
    r = _ops(login, env, "wrong-password\n")
    assert r.returncode == 2 and not ids.exists(), r.stdout + r.stderr
    r = _ops(["broker-login", "bob"] + login[2:], env, "bob-console-pw-22\n")
    assert r.returncode == 2 and "not an enabled operator" in r.stdout
    r = _ops(login, env, "alice-console-pw-1\n")
    assert r.returncode == 0, r.stdout + r.stderr
    got = json.loads(r.stdout)
    assert got["names"] == ["op.alice"] and got["acl_changed"] and got["reloaded"]
    from backend import identities
    from common.broker import parse_broker
    url = f"mqtts://localhost:{fleet.backend}"
    alice = parse_broker(url, env={"HOMEBOX_MQTT_CERT": str(ids)})
    assert identities.wait_admitted(alice, str(fleet.ca)), "the reloaded broker never admitted op.alice"
    ex = Path(__file__).resolve().parent.parent / "docs" / "contract" / "examples" / "desired-options.json"
    a = box(fleet, A)
    a.sub(f"homebox/v1/{A}/desired/options")
    a.msgs.clear()
    push = ["push", "options", str(ex), "--box", A, "--broker", url, "--tls-ca", str(fleet.ca),
            "--timeout", "20", "--json", "--db", db]
    env["HOMEBOX_MQTT_CERT"] = str(ids)
    import sys

    from tests.helpers import ROOT
    p = subprocess.Popen([sys.executable, "-m", "homebox.cli", "ops"] + push, cwd=str(ROOT), env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: a.msgs, 30), p.communicate(timeout=30)
    v = json.loads(a.msgs[-1][1])["version"]
    a.pub(f"homebox/v1/{A}/reported/options",
          json.dumps({"version": v, "status": "applied", "box": A, "section": "options"}), retain=True)
    so, se = p.communicate(timeout=60)
    assert p.returncode == 0 and json.loads(so)["result"] == "applied", so + se
    log = (fleet.out / "mosquitto.log").read_text()
    assert "u'op.alice'" in log, log[-2000:]                    # the broker's record says who
    # revoked: on the CRL and out of the ACL, the broker reloaded
    r = _ops(["broker-revoke", "alice", "--broker-dir", str(fleet.out), "--broker-pid", str(fleet.proc.pid),
              "--json", "--db", db], env)
    assert r.returncode == 0 and json.loads(r.stdout) == {"revoked": ["op.alice"], "reloaded": True}, r.stdout
    assert wait_for(lambda: not identities.wait_admitted(alice, str(fleet.ca), timeout=1), 30)
    n = len(a.msgs)
    push[push.index("--timeout") + 1] = "5"
    r = _ops(push, env)
    assert r.returncode == 2 and "refused" in json.loads(r.stdout)["message"], r.stdout + r.stderr
    # whatever the push got through before it was refused, the box got nothing newer
    assert all(json.loads(p)["version"] <= v for _t, p in a.msgs[n:])
    a.close()


def test_no_file_the_backend_writes_holds_a_clear_password(tmp_path):
    """broker-config (over an older run's backend-accounts.json) and a person's
    broker-login: no file written holds a box's password, a person's console
    password or an older backend password."""
    from backend import accounts, identities
    from backend.store import Store
    out = tmp_path / "broker"
    out.mkdir()
    legacy = {"homebox-push": "legacy-push-password-0123456789"}
    (out / "backend-accounts.json").write_text(json.dumps(legacy))
    boxes = {A: PW[A], B: PW[B]}
    broker_config.generate(out, boxes, port=18883, client_certs=True)
    st = Store(f"sqlite:///{tmp_path}/api.db")
    accounts.add(st, "carol", "operator", "carol-console-pw-333", author="admin")
    st.close()
    identities.issue(out, "carol", tmp_path / "carol", connections=3)
    broker_config.generate(out, boxes, port=18883)          # a re-run keeps carol
    clear = list(boxes.values()) + list(legacy.values()) + ["carol-console-pw-333"]
    files = [f for f in tmp_path.rglob("*") if f.is_file()]          # the accounts' store too (Argon2id)
    assert len(files) > 10 and not (out / "backend-accounts.json").exists()
    for f in files:
        data = f.read_bytes()
        assert not [c for c in clear if c.encode() in data], f
    acl = (out / "acl").read_text()
    assert "user op.carol\n" in acl and "user op.carol~3\n" in acl
    assert "op.carol" not in (out / "passwd").read_text()
    # disabling the account takes her out of the broker too: ACL and CRL
    import os
    r = _ops(["account", "disable", "carol", "--broker-dir", str(out), "--db", f"sqlite:///{tmp_path}/api.db",
              "--json"], dict(os.environ))
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["broker_revoked"] == ["op.carol", "op.carol~2", "op.carol~3"]
    assert "op.carol" not in (out / "acl").read_text() and broker_config.people(out) == {}
    from cryptography import x509
    crl = x509.load_pem_x509_crl((out / "crl.pem").read_bytes())
    serial = x509.load_pem_x509_certificate((tmp_path / "carol" / "op.carol~2.crt").read_bytes()).serial_number
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None


def test_the_api_pushes_as_the_person_who_asked(fleet, tmp_path):
    """`ops serve --broker-dir`: a push through the API reaches the box from the
    broker identity of the account that asked (op.dora), issued on first use in a
    private directory that the server removes when it stops."""
    import urllib.request

    from backend import accounts, identities
    from backend.api import Api, serve
    from backend.store import Store
    from common.broker import parse_broker
    db = f"sqlite:///{tmp_path}/api.db"
    st = Store(db)
    accounts.add(st, "dora", "operator", "dora-console-pw-4", author="admin")
    tok = accounts.new_token(st, "dora", "test")
    st.close()
    broker = parse_broker(f"mqtts://localhost:{fleet.backend}", env={})
    issuer = identities.Issuer(fleet.out, broker, tls_ca=str(fleet.ca), reload=fleet.proc.pid)
    api = Api(db, broker=broker, tls_ca=str(fleet.ca), push_timeout=0.5, identities=issuer)
    srv = serve(api, "127.0.0.1", 0)
    a = box(fleet, A)
    a.sub(f"homebox/v1/{A}/desired/options")
    a.msgs.clear()
    try:
        host, port = srv.server_address[:2]
        doc = json.loads((Path(__file__).resolve().parent.parent / "docs" / "contract" / "examples" /
                          "desired-options.json").read_text())
        doc.pop("version", None)
        req = urllib.request.Request(f"http://{host}:{port}/api/v1/boxes/{A}/desired/options?wait=0.3",
                                     data=json.dumps(doc).encode(), method="PUT",
                                     headers={"Authorization": f"Bearer {tok}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 200, r.read()
        assert wait_for(lambda: a.msgs, 15)
        assert "u'op.dora'" in (fleet.out / "mosquitto.log").read_text()
        keys = list(issuer.dir.rglob("*.key"))
        assert keys and all(k.stat().st_mode & 0o077 == 0 for k in keys)
        assert "op.dora" in broker_config.people(fleet.out)
    finally:
        a.close()
        srv.shutdown()
        srv.server_close()
        api.close()
        issuer.close()
    assert not issuer.dir.exists()


def test_a_campaigns_connections_each_log_in_as_the_person(fleet, tmp_path):
    """`broker-login --connections 3`: a fan-out publisher (campaigns, reconcile)
    on the directory opens one connection per identity, op.erin, op.erin~2,
    op.erin~3, all at once (none takes another's session), and the box gets what
    each sends."""
    import os
    import signal

    from backend import identities
    from backend.fanout import Publisher
    from common.broker import parse_broker
    r = identities.issue(fleet.out, "erin", tmp_path / "erin", hours=1, connections=3)
    assert r["names"] == ["op.erin", "op.erin~2", "op.erin~3"] and r["acl_changed"]
    os.kill(fleet.proc.pid, signal.SIGHUP)
    url = parse_broker(f"mqtts://localhost:{fleet.backend}", env={"HOMEBOX_MQTT_CERT": str(tmp_path / "erin")})
    assert all(identities.wait_admitted(u, str(fleet.ca)) for u in url.identities())
    a = box(fleet, A)
    a.sub(f"homebox/v1/{A}/desired/channels")
    a.msgs.clear()
    with Publisher(url, "campaign-erin", connections=8, tls_ca=str(fleet.ca)) as p:
        assert len(p.clients) == 3
        docs = [(f"homebox/v1/{A}/desired/channels", json.dumps({"version": 900 + i}).encode()) for i in range(6)]
        assert p.publish(docs) == 6
        assert all(c.is_connected() for c in p.clients)
    assert wait_for(lambda: len({p for _t, p in a.msgs}) == 6, 15), a.msgs
    log = (fleet.out / "mosquitto.log").read_text()
    assert all(f"u'{n}'" in log for n in r["names"])
    a.close()
    clear = backend(fleet, "homebox-push")          # leave no retained document to the other tests
    clear.pub(f"homebox/v1/{A}/desired/channels", b"", retain=True)
    clear.close()
