"""`homebox ops reconcile`: re-publish every box's desired documents, retained, from
the backend's own store.

A broker that crashes loses the retained messages it had not saved yet (Mosquitto
saves every `autosave_interval` seconds). The store is the truth: run this after a
broker restart, or periodically. It is idempotent: a box that already applied a
version ignores the same document again (a replay changes nothing).
"""
from __future__ import annotations

import os
import time

from agent import topics
from backend.ingest import make_client
from backend.store import Store
from common.broker import parse_broker


def reconcile(store: Store, broker: str, tls_ca: str | None = None, boxes: list[str] | None = None,
              client_id: str | None = None, timeout: float = 60.0) -> int:
    """Publish each stored desired document retained with QoS 1; returns how many
    were acknowledged by the broker. Raises TimeoutError if some were not."""
    docs = [d for d in store.desired() if not boxes or d["box"] in boxes]
    if not docs:
        return 0
    url = parse_broker(broker)
    import paho.mqtt.client as mqtt
    c = make_client(url, client_id or url.username or f"homebox-reconcile-{os.getpid()}", tls_ca,
                    protocol=mqtt.MQTTv311)
    c.max_inflight_messages_set(100)
    c.max_queued_messages_set(0)
    c.connect(url.host, url.port, keepalive=30)
    c.loop_start()
    try:
        deadline = time.time() + timeout
        while not c.is_connected() and time.time() < deadline:
            time.sleep(0.01)
        if not c.is_connected():
            raise TimeoutError(f"cannot connect to the broker at {url.host}:{url.port}")
        infos = [c.publish(topics.desired(d["box"], d["section"]), d["payload"], qos=1, retain=True)
                 for d in docs]
        for i in infos:
            i.wait_for_publish(max(0.1, deadline - time.time()))
        done = sum(1 for i in infos if i.is_published())
        if done < len(infos):
            raise TimeoutError(f"only {done} of {len(infos)} desired documents were acknowledged")
        return done
    finally:
        c.disconnect()
        c.loop_stop()
