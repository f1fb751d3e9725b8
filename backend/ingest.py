"""Ingest: all boxes' telemetry, events, status, reported (and desired) documents into the store.

- Subscribes with QoS 1 over MQTT 5 with a persistent session (clean_start false,
  a session expiry), so what arrives while ingest is down waits in the broker.
- With `share`, subscribes through `$share/GROUP/...`: N processes split the load.
- Validates every payload against the contract (backend.contract); an invalid one is
  counted and stored in the quarantine table, never dropped silently.
- Batches inserts (size or age, whichever comes first) and acknowledges each message
  (paho-mqtt manual acks) only after its batch has committed. A process killed
  mid-batch loses nothing: the broker redelivers what was not acknowledged, and the
  store removes duplicates on (box, boot, seq).
"""
from __future__ import annotations

import socket
import ssl
import sys
import threading
import time
from collections import deque

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent import topics
from backend import contract
from backend.store import Rec, Store
from common.broker import Broker, parse_broker

FILTERS = (
    "homebox/v1/+/telemetry/#",
    "homebox/v1/+/event",
    "homebox/v1/+/status",
    "homebox/v1/+/reported/+",
    "homebox/v1/+/desired/+",
)


def make_client(url: Broker, client_id: str, tls_ca: str | None = None,
                manual_ack: bool = False, protocol=mqtt.MQTTv5) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
                    manual_ack=manual_ack)
    if url.username:
        c.username_pw_set(url.username, url.password)
    if url.tls:
        ctx = ssl.create_default_context(cafile=tls_ca) if tls_ca else ssl.create_default_context()
        c.tls_set_context(ctx)
    c.reconnect_delay_set(0.2, 10)
    return c


def classify(topic: str, payload: bytes, retained: bool = False,
             received_at: float | None = None) -> Rec:
    """Validate one message against the contract and say what it is."""
    now = received_at or time.time()
    t = topics.parse(topic)
    box = t[0] if t else None
    try:
        doc = contract.validate(topic, payload)
    except contract.ContractError as e:
        return Rec("invalid", topic, payload, box=box, errors=e.errors, retained=retained,
                   received_at=now)
    _box, kind, rest = t
    bad = None
    what = {"telemetry": "msg", "event": "msg", "status": "status", "reported": "reported",
            "desired": "desired"}.get(kind)
    if kind == "telemetry" and doc.get("kind") != rest:
        bad = f"$.kind: {doc.get('kind')!r} does not match the topic's kind {rest!r}"
    elif kind == "event" and doc.get("kind") != "event":
        bad = "$.kind: must be 'event' on the event topic"
    elif kind == "status" and doc.get("box") != box:
        bad = "$.box: does not match the topic's box id"
    elif kind == "reported" and doc.get("section") not in (None, rest):
        bad = f"$.section: {doc.get('section')!r} does not match the topic's section {rest!r}"
    elif what is None:
        bad = "not an ingested topic"
    if bad:
        return Rec("invalid", topic, payload, box=box, errors=[bad], retained=retained, received_at=now)
    return Rec(what, topic, payload, box=box, doc=doc, section=rest, retained=retained,
               received_at=now)


class Ingest:
    def __init__(self, broker: str, store: Store, share: str | None = None,
                 client_id: str | None = None, batch_size: int = 500, batch_wait: float = 0.2,
                 receive_max: int = 2000, session_expiry: int = 7 * 24 * 3600,
                 tls_ca: str | None = None, log=None):
        self.url = parse_broker(broker)
        self.store = store
        self.share = share
        host = socket.gethostname()
        self.client_id = client_id or ("homebox-ingest-%s-%s" % (share, host) if share
                                       else "homebox-ingest-%s" % host)
        self.batch_size = batch_size
        self.batch_wait = batch_wait
        # MQTT 5 Receive Maximum: how many unacknowledged QoS 1 messages the broker
        # may have in flight to us. It must exceed the batch size, or a batch can
        # never fill before its acks are due.
        self.receive_max = max(receive_max, batch_size + 1)
        self.session_expiry = session_expiry
        self.tls_ca = tls_ca
        self.log = log or (lambda *a: print(*a, file=sys.stderr, flush=True))
        self.pending: deque = deque()
        self.gen = 0                         # connection generation: mids are per connection
        self.subscribed = threading.Event()
        self.stop_event = threading.Event()
        self.totals = {"received": 0, "stored": 0, "duplicates": 0, "invalid": 0, "batches": 0}
        self.client: mqtt.Client | None = None

    def filters(self) -> list[str]:
        return [f"$share/{self.share}/{f}" if self.share else f for f in FILTERS]

    # ---- MQTT callbacks (network thread) ------------------------------------------
    def _on_connect(self, client, userdata, flags, rc, props):
        if rc.is_failure:
            self.log(f"ingest: connect refused: {rc}")
            return
        self.gen += 1
        client.subscribe([(f, SubscribeOptions(qos=1)) for f in self.filters()])
        self.log(f"ingest: connected as {self.client_id} (session present: {flags.session_present})")

    def _on_subscribe(self, client, userdata, mid, reason_codes, props):
        bad = [str(r) for r in reason_codes if r.is_failure]
        if bad:
            self.log(f"ingest: subscription refused: {bad}")
        else:
            self.subscribed.set()

    def _on_message(self, client, userdata, msg):
        rec = classify(msg.topic, bytes(msg.payload), bool(msg.retain))
        self.pending.append((self.gen, msg.mid, msg.qos, rec))

    def _on_disconnect(self, client, userdata, flags, rc, props):
        self.log(f"ingest: disconnected: {rc}")

    # ---- batching (main thread) -----------------------------------------------------
    def flush(self) -> int:
        """Commit what is pending, then acknowledge it. Returns how many were written."""
        n = len(self.pending)
        if not n:
            return 0
        batch = [self.pending.popleft() for _ in range(min(n, self.batch_size))]
        counts = self.store.write_batch([b[3] for b in batch])
        self.totals["batches"] += 1
        for k in ("received", "stored", "duplicates", "invalid"):
            self.totals[k] += counts.get(k, 0)
        c = self.client
        for gen, mid, qos, _rec in batch:
            # A message from an earlier connection is redelivered by the broker on
            # this one (with a new mid); its old mid means nothing any more.
            if qos and c is not None and gen == self.gen:
                c.ack(mid, qos)
        return len(batch)

    def run(self, duration: float | None = None, stats_every: float = 10.0) -> dict:
        c = make_client(self.url, self.client_id, self.tls_ca, manual_ack=True)
        self.client = c
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        c.on_disconnect = self._on_disconnect
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry
        props.ReceiveMaximum = min(self.receive_max, 65535)
        c.connect_async(self.url.host, self.url.port, keepalive=30, clean_start=False,
                        properties=props)
        c.loop_start()
        end = time.time() + duration if duration else None
        last_stats = time.time()
        first_wait = None
        try:
            while not self.stop_event.is_set() and (end is None or time.time() < end):
                n = len(self.pending)
                if n == 0:
                    first_wait = None
                    time.sleep(0.01)
                elif n >= self.batch_size:
                    self.flush()
                    first_wait = None
                else:
                    if first_wait is None:
                        first_wait = time.time()
                    if time.time() - first_wait >= self.batch_wait:
                        self.flush()
                        first_wait = None
                    else:
                        time.sleep(0.005)
                if stats_every and time.time() - last_stats >= stats_every:
                    last_stats = time.time()
                    self.log("ingest: " + " ".join(f"{k}={v}" for k, v in self.totals.items()))
            while self.pending:
                self.flush()
        finally:
            c.disconnect()
            c.loop_stop()
        return dict(self.totals)

    def stop(self) -> None:
        self.stop_event.set()
