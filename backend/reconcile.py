"""`homebox ops reconcile`: re-publish the boxes' desired documents, retained, from
the backend's own store, where the broker lacks them or holds an older version.

A broker that crashes loses the retained messages it had not saved yet (Mosquitto
saves every `autosave_interval` seconds). The store is the truth: run this after a
broker restart, or periodically. It is idempotent: a box that already applied a
version ignores the same document again (a replay changes nothing).

How, at fleet scale:
1. what the broker holds: subscribe to the retained desired documents (all boxes',
   or each listed box's) and keep only (box, section) -> version, until a probe
   published after the SUBACK comes back (the retained ones arrive before it);
2. stream the `desired` table in pages of `page` rows (keyset order on box,
   section), never the whole table in memory, and publish each document the broker
   lacks or holds at a lower version, through backend.fanout.Publisher (several
   connections, each with its own client id: `homebox-reconcile-...`, not the
   push account's id, so a running push or campaign is not kicked off).
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator

from agent import topics
from backend.store import Store
from common.broker import Broker, parse_broker


def stream_desired(store: Store, page: int = 1000, boxes: list[str] | None = None) -> Iterator[dict]:
    """The stored desired documents in (box, section) order, `page` rows at a time."""
    if boxes:
        for b in sorted(set(boxes)):
            for box, section, v, p in store._q(
                    "SELECT box, section, version, payload FROM desired WHERE box=? ORDER BY section", (b,)):
                yield {"box": box, "section": section, "version": int(v), "payload": bytes(p)}
        return
    last = ("", "")
    while True:
        rows = store._q("SELECT box, section, version, payload FROM desired WHERE box > ? OR "
                        "(box = ? AND section > ?) ORDER BY box, section LIMIT ?",
                        (last[0], last[0], last[1], page))
        for box, section, v, p in rows:
            yield {"box": box, "section": section, "version": int(v), "payload": bytes(p)}
        if len(rows) < page:
            return
        last = (rows[-1][0], rows[-1][1])


def broker_versions(url: Broker, client_id: str, boxes: list[str] | None = None, tls_ca: str | None = None,
                    timeout: float = 60.0) -> dict[tuple[str, str], int]:
    """(box, section) -> version of the desired documents the broker retains."""
    import paho.mqtt.client as mqtt

    from backend.ingest import make_client
    held: dict[tuple[str, str], int] = {}
    probe = f"homebox-ops/probe/{uuid.uuid4().hex}"
    done = threading.Event()

    def on_message(c, u, msg):
        if msg.topic == probe:
            done.set()
            return
        t = topics.parse(msg.topic)
        if not t or t[1] != "desired" or not msg.payload:
            return
        try:
            v = json.loads(msg.payload).get("version")
        except (ValueError, AttributeError):
            return
        if isinstance(v, int) and not isinstance(v, bool):
            held[(t[0], t[2])] = v

    def on_subscribe(c, u, mid, rcs, props=None):
        c.publish(probe, b"probe", qos=1)

    c = make_client(url, client_id, tls_ca, protocol=mqtt.MQTTv311)
    c.on_message = on_message
    c.on_subscribe = on_subscribe
    c.connect(url.host, url.port, keepalive=30)
    c.loop_start()
    try:
        filters = [(topics.desired(b, "+"), 1) for b in boxes] if boxes else [("homebox/v1/+/desired/+", 1)]
        filters.append((probe, 1))
        c.subscribe(filters)
        if not done.wait(timeout):
            raise TimeoutError("the broker did not send its retained desired documents in time")
        return held
    finally:
        c.disconnect()
        c.loop_stop()


def reconcile(store: Store, broker: str, tls_ca: str | None = None, boxes: list[str] | None = None,
              client_id: str | None = None, timeout: float = 60.0, page: int = 1000,
              connections: int = 2, compare: bool = True) -> int:
    """Publish each stored desired document the broker lacks (or holds older),
    retained with QoS 1; returns how many were published and acknowledged. Raises
    TimeoutError if some were not."""
    from backend.errors import BrokerError
    from backend.fanout import Publisher
    url = parse_broker(broker)
    cid = client_id or f"homebox-reconcile-{uuid.uuid4().hex[:8]}"
    try:
        held = broker_versions(url, cid + "-read", boxes, tls_ca, timeout) if compare else {}
    except OSError as e:
        raise TimeoutError(f"cannot connect to the broker at {url.host}:{url.port}: {e}") from None
    try:
        pub = Publisher(url, cid, connections=connections, tls_ca=tls_ca, connect_timeout=timeout)
    except (BrokerError, OSError) as e:
        raise TimeoutError(f"cannot connect to the broker at {url.host}:{url.port}: {e}") from None
    n = 0
    deadline = time.time() + timeout
    try:
        batch: list[tuple[str, bytes]] = []
        for d in stream_desired(store, page, boxes):
            if held.get((d["box"], d["section"]), -1) >= d["version"]:
                continue
            batch.append((topics.desired(d["box"], d["section"]), d["payload"]))
            if len(batch) >= page:
                n += _send(pub, batch, deadline)
                batch = []
        if batch:
            n += _send(pub, batch, deadline)
    finally:
        pub.close()
    return n


def _send(pub, batch, deadline) -> int:
    from backend.errors import BrokerTimeout
    try:
        return pub.publish(batch, timeout=max(0.1, deadline - time.time()))
    except BrokerTimeout as e:
        raise TimeoutError(str(e)) from None
