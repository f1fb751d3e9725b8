"""The leaf modules shared by bench, backend and CLI (common/)."""
from __future__ import annotations

import pytest

from common.broker import Broker, parse_broker


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


@pytest.mark.parametrize("bad", ["http://h:1", "h:port", "h:99999", "mqtt://h:1/x"])
def test_parse_broker_rejects(bad):
    with pytest.raises(ValueError):
        parse_broker(bad, env={})
