"""Publishing many retained desired documents at once: several MQTT connections,
each with its own client id, each with a window of QoS 1 messages in flight.

    from backend.fanout import Publisher
    with Publisher(parse_broker("mqtt://h:1883"), "homebox-campaign-c1", connections=4) as p:
        p.publish([(topic, payload), ...])     # returns once the broker acknowledged each

One connection is limited by the broker's in-flight window (Mosquitto's
`max_inflight_messages`, sent to the client as its Receive Maximum) and by its own
round trip under load: the old fan-out, one client, took 4.8 s to have 1,000 PUBACKs.
Used by campaigns (`backend.campaign`), `reconcile`, and the fleet benchmark.
"""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable

from backend.errors import BrokerRefused, BrokerTimeout, BrokerUnreachable
from common.broker import Broker


def plan(url: Broker | list[Broker], connections: int) -> list[Broker]:
    """The connections to open. Anonymous: `connections` to the one broker. With
    accounts or certificates: one connection per identity, since a fleet broker
    makes the username the client id (use_username_as_clientid) and two connections
    of one identity would take each other's session (broker-config makes
    homebox-push-1..N; `ops broker-login` a directory of op.NAME, op.NAME~2...)."""
    urls = [i for u in (url if isinstance(url, (list, tuple)) else [url]) for i in u.identities()]
    if not urls:
        raise ValueError("no broker")
    if all(u.identity is None for u in urls):
        return [urls[i % len(urls)] for i in range(max(1, connections))]
    seen: dict[str | None, Broker] = {}
    for u in urls:
        seen.setdefault(u.identity, u)
    return list(seen.values())


class Publisher:
    def __init__(self, url: Broker | list[Broker], client_id: str, connections: int = 4,
                 tls_ca: str | None = None, inflight: int = 100, connect_timeout: float = 10.0):
        import paho.mqtt.client as mqtt

        from backend.ingest import make_client
        urls = plan(url, connections)
        self.url = urls[0]
        self.clients = []
        self.client_ids = []
        self._refused: list[str] = []
        self._lock = threading.Lock()
        # the same prefix, a unique suffix: two publishers never take each other's session
        tag = uuid.uuid4().hex[:8]
        try:
            for i, url in enumerate(urls):
                cid = f"{client_id}-{tag}-{i}"
                c = make_client(url, cid, tls_ca, protocol=mqtt.MQTTv311)
                c.max_inflight_messages_set(inflight)
                c.max_queued_messages_set(0)
                c.on_connect = self._on_connect
                try:
                    c.connect(url.host, url.port, keepalive=30)
                except OSError as e:
                    raise BrokerUnreachable(f"cannot connect to {url.host}:{url.port}: {e}") from None
                c.loop_start()
                self.clients.append(c)
                self.client_ids.append(cid)
            deadline = time.time() + connect_timeout
            while time.time() < deadline and not self._refused and \
                    not all(c.is_connected() for c in self.clients):
                time.sleep(0.01)
            if self._refused:
                raise BrokerRefused(f"the broker refused the connection: {self._refused[0]}")
            if not all(c.is_connected() for c in self.clients):
                raise BrokerTimeout(f"timeout: no CONNACK from {url.host}:{url.port}")
        except Exception:
            self.close()
            raise

    def _on_connect(self, client, userdata, flags, rc, props=None):
        if rc.is_failure:
            with self._lock:
                self._refused.append(str(rc))

    def publish(self, items: Iterable[tuple[str, bytes]], timeout: float = 60.0,
                on_sent=None) -> int:
        """Publish each (topic, payload) retained with QoS 1, round robin over the
        connections; wait for every PUBACK. `on_sent(topic, t)` is called as each
        leaves (for latency figures). Returns how many were acknowledged; raises
        BrokerTimeout if some were not within `timeout`."""
        infos = []
        n = len(self.clients)
        for i, (topic, payload) in enumerate(items):
            if on_sent is not None:
                on_sent(topic, time.time())
            infos.append(self.clients[i % n].publish(topic, payload, qos=1, retain=True))
        deadline = time.time() + timeout
        for info in infos:
            info.wait_for_publish(max(0.05, deadline - time.time()))
        done = sum(1 for i in infos if i.is_published())
        if done < len(infos):
            raise BrokerTimeout(f"only {done} of {len(infos)} documents were acknowledged by the broker")
        return done

    def close(self) -> None:
        for c in self.clients:
            try:
                c.disconnect()
                c.loop_stop()
            except Exception:
                pass
        self.clients = []

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
