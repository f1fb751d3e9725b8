"""The leaf modules shared by bench, backend and CLI (common/)."""
from __future__ import annotations

import pytest

from agent.rules import sign
from common import credentials
from common.broker import Broker, parse_broker

MASTER = b"common-test-master-secret-0123456789"


def test_parse_broker_forms():
    env: dict = {}
    assert parse_broker("h", env=env) == Broker("h", 1883, False)
    assert parse_broker("10.0.0.2:1999", env=env) == Broker("10.0.0.2", 1999, False)
    assert parse_broker("mqtt://h", env=env) == Broker("h", 1883, False)
    assert parse_broker("mqtts://h", env=env) == Broker("h", 8883, True)
    assert parse_broker("ssl://h:8884", env=env).tls
    u = parse_broker("mqtts://ingest:s%40cret@broker.example:8884", env=env)
    assert (u.host, u.port, u.username, u.password, u.tls) == ("broker.example", 8884, "ingest", "s@cret", True)
    assert u.hostport == "broker.example:8884"
    assert "s@cret" not in repr(u)


def test_parse_broker_password_from_env():
    assert parse_broker("mqtt://ingest@h", env={"HOMEBOX_MQTT_PASSWORD": "fromenv"}).password == "fromenv"
    assert parse_broker("mqtt://ingest:inurl@h", env={"HOMEBOX_MQTT_PASSWORD": "fromenv"}).password == "inurl"


def test_parse_broker_client_certificates(tmp_path):
    from backend.fanout import plan
    ids = tmp_path / "ids"
    ids.mkdir()
    for n in ("op.alice", "op.alice~2", "op.alice~3"):
        (ids / f"{n}.crt").write_text("x")
        (ids / f"{n}.key").write_text("x")
    one = parse_broker(f"mqtts://h:8884?cert={ids}/op.alice~2.crt", env={"HOMEBOX_MQTT_PASSWORD": "ignored"})
    assert (one.cert, one.key, one.password) == (f"{ids}/op.alice~2.crt", f"{ids}/op.alice~2.key", None)
    d = parse_broker("mqtts://h:8884", env={"HOMEBOX_MQTT_CERT": str(ids)})
    assert [b.cert for b in d.identities()] == [f"{ids}/op.alice.crt", f"{ids}/op.alice~2.crt", f"{ids}/op.alice~3.crt"]
    assert len(plan(d, 8)) == 3                     # one connection per identity, never two of one
    assert len(plan([one, one], 8)) == 1
    for bad in (f"mqtt://h?cert={ids}/op.alice.crt", f"mqtts://h?cert={tmp_path}/none.crt", "mqtts://h?user=x"):
        with pytest.raises(ValueError):
            parse_broker(bad, env={})


@pytest.mark.parametrize("bad", ["http://h:1", "h:port", "h:99999", "mqtt://h:1/x"])
def test_parse_broker_rejects(bad):
    with pytest.raises(ValueError):
        parse_broker(bad, env={})


def test_credentials_are_deterministic_and_secret():
    a = credentials.derive(MASTER, "HB-000001")
    b = credentials.derive(MASTER, "HB-000001")
    c = credentials.derive(MASTER, "HB-000002")
    assert a == b and a.values() != c.values()
    # the key the box verifies with is the key `homebox ops push` signs with
    assert a.hmac_key == credentials.box_key(MASTER, "HB-000001").hex()
    doc = {"version": 1, "box": "HB-000001"}
    sign.Verifier("HB-000001", a.hmac_key)("options", dict(doc, sig=sign.sign(doc, credentials.box_key(MASTER, "HB-000001"))))
    assert len(a.wifi_key) == 19 and set(a.wifi_key.replace("-", "")) <= set(credentials.WIFI_ALPHABET)
    assert a.wifi_ssid == "homebox-000001"
    assert a.mqtt_password == credentials.mqtt_password(MASTER, "HB-000001") and len(a.mqtt_password) == 26
    text = repr(a) + str(a)
    assert not any(v in text for v in a.values())


def test_mosquitto_hash():
    h = credentials.mosquitto_hash("s3cret", salt=b"0123456789ab")
    assert h.split("$")[1:3] == ["7", "101"] and credentials.check_hash("s3cret", h)
    a = credentials.derive(MASTER, "HB-000001").mqtt_password
    c = credentials.derive(MASTER, "HB-000002").mqtt_password
    h = credentials.broker_hash(a)
    assert h.startswith("$7$") and credentials.check_hash(a, h) and not credentials.check_hash(c, h)
    assert credentials.broker_hash(a, previous=h) == h           # kept when it matches
    assert credentials.broker_hash(c, previous=h) != h


def test_master_secret_file(tmp_path):
    f = tmp_path / "m.key"
    f.write_text("  " + MASTER.decode() + "\n")
    with pytest.raises(credentials.MasterSecretError, match="readable by others"):
        credentials.load_master(f)
    f.chmod(0o600)
    assert credentials.load_master(f) == MASTER
    assert credentials.load_master(None, env={"HOMEBOX_MASTER_SECRET_FILE": str(f)}) == MASTER
    assert credentials.load_master(None, env={}) is None
    f.write_text("short")
    with pytest.raises(credentials.MasterSecretError, match="too short"):
        credentials.load_master(f)
    with pytest.raises(credentials.MasterSecretError, match="cannot read"):
        credentials.load_master(tmp_path / "missing")
