"""backend.fanout (several connections, own client ids) and reconcile streaming the
store in pages, publishing only what the broker lacks or holds older."""
from __future__ import annotations

import json
import uuid

import pytest

from backend.errors import BrokerUnreachable
from backend.fanout import Publisher, plan
from backend.reconcile import broker_versions, reconcile, stream_desired
from backend.store import Store
from common.broker import parse_broker
from tests.helpers import free_port, publish, retained


def test_plan_one_connection_per_account():
    anon = parse_broker("127.0.0.1:1883")
    assert plan(anon, 3) == [anon] * 3
    a, b = parse_broker("mqtt://homebox-push-1:x@h:1883"), parse_broker("mqtt://homebox-push-2:y@h:1883")
    # a fleet broker makes the username the client id: one connection per account
    assert plan([a, b, a], 8) == [a, b]


def test_publisher_ids_and_acks(broker):
    url = parse_broker(f"127.0.0.1:{broker.port}")
    box = f"fo-{uuid.uuid4().hex[:6]}"
    with Publisher(url, "homebox-test-fanout", connections=3) as p:
        assert len(set(p.client_ids)) == 3 and all(c.startswith("homebox-test-fanout-") for c in p.client_ids)
        n = p.publish([(f"homebox/v1/{box}-{i}/desired/options", json.dumps({"version": i}).encode())
                       for i in range(30)])
    assert n == 30
    got = [t for t, _ in retained(broker.port, "homebox/v1/+/desired/options") if t.split("/")[2].startswith(box)]
    assert len(got) == 30
    with pytest.raises(BrokerUnreachable):
        Publisher(parse_broker(f"127.0.0.1:{free_port()}"), "homebox-test-nobody", connections=1)


def test_reconcile_pages_and_compares(broker, tmp_path):
    store = Store(f"sqlite:///{tmp_path}/backend.db")
    tag = uuid.uuid4().hex[:6]
    boxes = [f"rcs{tag}-{i}" for i in range(5)]
    for i, b in enumerate(boxes):
        store.put_desired(b, "options", {"version": 3, "speed_tier": "10M", "n": i})
    assert [d["box"] for d in stream_desired(store, page=2)] == boxes          # every row, in pages
    # the broker holds box 0 at v3 (same), box 1 at v2 (older), box 2 at v9 (newer)
    for b, v in ((boxes[0], 3), (boxes[1], 2), (boxes[2], 9)):
        publish(broker.port, f"homebox/v1/{b}/desired/options", {"version": v})
    url = parse_broker(f"127.0.0.1:{broker.port}")
    held = broker_versions(url, f"homebox-test-read-{tag}", boxes)
    assert held == {(boxes[0], "options"): 3, (boxes[1], "options"): 2, (boxes[2], "options"): 9}
    n = reconcile(store, f"127.0.0.1:{broker.port}", page=2)
    assert n == 3                                                              # boxes 1, 3, 4
    got = {t.split("/")[2]: json.loads(p) for t, p in retained(broker.port, "homebox/v1/+/desired/options")}
    assert got[boxes[1]] == {"version": 3, "speed_tier": "10M", "n": 1}
    assert got[boxes[2]] == {"version": 9} and got[boxes[0]] == {"version": 3}
    assert reconcile(store, f"127.0.0.1:{broker.port}") == 0                 # box 2: the broker holds a newer one
    assert reconcile(store, f"127.0.0.1:{broker.port}", compare=False) == 5
    store.close()


def test_pushers_with_their_own_accounts_on_a_fleet_broker(tmp_path):
    """broker-config's homebox-push-1..N: a publisher with two accounts keeps both
    connections, and a `push` session of homebox-push stays connected meanwhile
    (the broker makes the username the client id)."""
    from backend.push import Session
    from tests.helpers import FleetBroker
    box = "fo-box-1"
    fleet = FleetBroker(tmp_path, {box: "a-long-random-box-password-0123456789"}).start()
    try:
        url = fleet.broker
        ca = str(fleet.ca)
        s = Session(url("homebox-push"), box, "options", tls_ca=ca)
        try:
            assert s.wait(lambda: s.probed, 10)
            with Publisher([url("homebox-push-1"), url("homebox-push-2")], "ignored-by-the-broker",
                           connections=8, tls_ca=ca) as p:
                assert len(p.clients) == 2
                assert p.publish([(f"homebox/v1/{box}/desired/options", b'{"version": 5}')] * 4) == 4
                assert all(c.is_connected() for c in p.clients)
            assert s.wait(lambda: (s.desired or {}).get("version") == 5, 10)
            assert s.c.is_connected()                    # not kicked off by the publisher
        finally:
            s.close()
    finally:
        fleet.stop()
