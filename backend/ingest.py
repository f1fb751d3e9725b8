"""Ingest: all boxes' telemetry, events, status, reported (and desired) documents into the store.

- Subscribes with QoS 1 over MQTT 5 with a persistent session (clean_start false,
  a session expiry), so what arrives while ingest is down waits in the broker;
  Retain Handling 1, so a reconnect that resumes the session replays nothing.
- With `share`, subscribes to the streams (telemetry, event) through
  `$share/GROUP/...` (Retain Handling 2): N processes split the load; with `state`
  (the default) also to the state documents, not shared. A member stopped on
  purpose leaves without parking anything in its session (see _leave).
- `retention_days`: hourly Store.maintain (partitions ahead, retention).
- Validates every payload against the contract (backend.contract); an invalid one is
  counted and stored in the quarantine table, never dropped silently.
- Batches inserts (size or age, whichever comes first) and acknowledges each message
  (paho-mqtt manual acks) only after its batch has committed. A process killed
  mid-batch loses nothing: the broker redelivers what was not acknowledged, and the
  store removes duplicates on (box, boot, seq).
- Poison-proof: a failure anywhere between the socket and the commit (a payload that
  breaks the parser, the classifier or the store) quarantines that one message and
  acknowledges it. A batch the store refuses is bisected down to the culprits; the
  good messages around them are stored.
- Survives its database: when a write fails and the database does not answer, the
  batch stays pending and unacknowledged while ingest reconnects with backoff
  (0.5 s doubling to 30 s); the broker holds the rest (Receive Maximum).
- Clears unexpected retained messages: a retained message on a telemetry or event
  topic (the contract retains only status, reported and desired) is stored as usual,
  then cleared on the broker (an empty retained message) and raised as the box's
  alarm `retained_cleared` (store.alarms, `homebox ops status`).
- Alarms: write_batch raises and clears them as the data arrives (backend/alarms.py);
  a thread of its own (backend/alarm_loop.AlarmLoop, its own store connection)
  sweeps the time-based ones every minute and, with `alarm_webhook`, delivers the
  raises and clears as Alertmanager webhook payloads, retried with backoff:
  a webhook that is down never holds up ingest.
- `metrics_port`: an HTTP endpoint (backend.metrics): /metrics in the Prometheus
  text format, /healthz for liveness.
"""
from __future__ import annotations

import gc
import socket
import ssl
import struct
import sys
import threading
import time
from collections import deque
from itertools import islice

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent import topics
from backend import contract
from backend.store import POISON, Rec, Store
from common.broker import Broker, parse_broker

# The box's streams: shared between the members of a share group.
STREAM_FILTERS = (
    "homebox/v1/+/telemetry/#",
    "homebox/v1/+/event",
)
# The retained state documents: one state consumer (not shared) learns them.
STATE_FILTERS = (
    "homebox/v1/+/status",
    "homebox/v1/+/reported/+",
    "homebox/v1/+/desired/+",
)
FILTERS = STREAM_FILTERS + STATE_FILTERS
# MQTT 5 Retain Handling: 1 = retained messages only when the subscription is new
# (not on the resumption of a persistent session), 2 = never.
RH_IF_NEW, RH_NEVER = 1, 2
# A leaving share member: after its unsubscribe, the broker's queue for it is
# taken as drained once nothing has come for this long (and everything is acked).
DRAIN_QUIET_S = 2.0
DRAIN_MAX_S = 30.0
MAINTAIN_EVERY_S = 3600


# Bytes read from the socket at once by a bulk reader (ChunkedReadClient).
RECV_CHUNK = 65536
# At most this many packets a loop_read() turn handles, when the socket still has data.
READ_BURST = 1000


class ChunkedReadClient(mqtt.Client):
    """paho's Client for a subscriber that receives a flood (ingest): the socket
    is read 64 KiB at a time and served from that buffer, and one turn of the
    network loop handles every packet that is there. paho reads each packet with
    three or more recv() calls (one a byte for the header) and handles one packet
    per select(): a third of ingest's time in the profile, over TLS.

    loop_read() returns only with the buffer empty (what is left is then in the
    kernel or in the TLS layer, where select() and pending() see it), after at most
    READ_BURST packets when more keep coming, so the writes (PUBACKs) go out. The
    buffer belongs to one socket: a new connection drops it. paho 2.x internals
    (_sock_recv, _packet_read, _loop_rc_handle), pinned in the lock;
    tests/test_ingest.py runs ingest through it."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._rbuf = b""
        self._rpos = 0
        self._rsock = None

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rpos >= len(self._rbuf) or self._rsock is not self._sock:
            chunk = super()._sock_recv(RECV_CHUNK)     # BlockingIOError when nothing is there
            if len(chunk) <= bufsize:
                self._rbuf, self._rpos = b"", 0
                return chunk                           # b"": the connection closed
            self._rbuf, self._rpos, self._rsock = chunk, 0, self._sock
        pos = self._rpos
        self._rpos = pos + bufsize
        return self._rbuf[pos:pos + bufsize]

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        n = 0
        while True:
            if self._sock is None:
                return mqtt.MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == mqtt.MQTTErrorCode.MQTT_ERR_AGAIN:
                return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
            n += 1
            if n >= READ_BURST and self._rpos >= len(self._rbuf):
                return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS


def make_client(url: Broker, client_id: str, tls_ca: str | None = None,
                manual_ack: bool = False, protocol=mqtt.MQTTv5, bulk_read: bool = False) -> mqtt.Client:
    cls = ChunkedReadClient if bulk_read else mqtt.Client
    c = cls(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
            manual_ack=manual_ack)
    if url.username:
        c.username_pw_set(url.username, url.password)
    if url.tls:
        ctx = ssl.create_default_context(cafile=tls_ca) if tls_ca else ssl.create_default_context()
        if url.cert:
            url = url.identities()[0]       # a directory of identities: its first
            ctx.load_cert_chain(url.cert, url.key)
        c.tls_set_context(ctx)
    c.reconnect_delay_set(0.2, 10)
    return c


def _safe(s: str | None) -> str | None:
    """A string any store holds (no NUL, no lone surrogate)."""
    if s is None:
        return None
    return s.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def quarantined(rec: Rec, why: str) -> Rec:
    """The record of a message the store could not hold: quarantined, payload byte for byte."""
    return Rec("invalid", _safe(rec.topic) or "", bytes(rec.payload), box=_safe(rec.box),
               errors=[POISON + _safe(why)[:500]], retained=rec.retained, received_at=rec.received_at)


class _DatabaseDown(Exception):
    pass


_PUBACK = struct.Struct("!BBH")


def _ack_all(c: mqtt.Client, acks: list[tuple[int, int]]) -> None:
    """Acknowledge a committed batch: its PUBACKs in one write (one TLS record, one
    wake-up of paho's network thread), not one per message as Client.ack() sends
    them. QoS 2 (never subscribed here) and a paho without the internal queue fall
    back to Client.ack()."""
    queue = getattr(c, "_packet_queue", None)
    ones = [mid for mid, qos in acks if qos == 1]
    if queue is None or len(ones) < 2:
        for mid, qos in acks:
            c.ack(mid, qos)
        return
    # PUBACK, remaining length 2, the packet id (MQTT 3.1.1 3.4, and MQTT 5 3.4.2.1:
    # without a reason code, success)
    queue(mqtt.PUBACK, b"".join([_PUBACK.pack(mqtt.PUBACK, 2, mid) for mid in ones]), 0, 1)
    for mid, qos in acks:
        if qos != 1:
            c.ack(mid, qos)


def classify(topic: str, payload: bytes, retained: bool = False,
             received_at: float | None = None) -> Rec:
    """Validate one message against the contract and say what it is."""
    now = received_at or time.time()
    t = topics.parse(topic)
    box = t[0] if t else None
    try:
        doc = contract.validate(topic, payload, t)
    except contract.ContractError as e:
        return Rec("invalid", topic, payload, box=box, errors=e.errors, retained=retained,
                   received_at=now)
    except Exception as e:                  # RecursionError, MemoryError in a parser, ...
        return Rec("invalid", topic, payload, box=box, errors=[f"$: {type(e).__name__}"],
                   retained=retained, received_at=now)
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


def tune_gc() -> None:
    """For a process that is ingest alone (`homebox ops ingest`): what it imported
    and compiled at start (modules, schemas, the compiled checks) is never garbage,
    so out of the collector's sight (gc.freeze); and a batch's records all live until
    its commit, so collections of the young generation every 700 allocations only
    walk them again and again: every 20,000."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


class Ingest:
    def __init__(self, broker: str, store: Store, share: str | None = None,
                 client_id: str | None = None, batch_size: int = 500, batch_wait: float = 0.2,
                 receive_max: int = 2000, session_expiry: int = 7 * 24 * 3600,
                 tls_ca: str | None = None, log=None, metrics_port: int | None = None,
                 metrics_host: str = "127.0.0.1", state: bool = True,
                 retention_days: float | None = None, alarm_webhook: str | None = None,
                 alarm_interval: float = 300.0, alarm_grace: float | None = None,
                 alarm_loop: bool = True):
        self.url = parse_broker(broker)
        self.store = store
        self.share = share
        self.state = state
        self.retention_days = retention_days
        self.alarm_webhook, self.alarm_interval, self.alarm_grace = alarm_webhook, alarm_interval, alarm_grace
        self.alarm_loop = alarm_loop and ":memory:" not in store.url
        self.alarms = None                   # backend.alarm_loop.AlarmLoop once running
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
        self.leaving = False                 # a share member on its way out (see _leave)
        self.last_message = 0.0
        self.gen = 0                         # connection generation: mids are per connection
        self.subscribed = threading.Event()
        self.stop_event = threading.Event()
        self.totals = {"received": 0, "stored": 0, "duplicates": 0, "invalid": 0, "batches": 0,
                       "poison": 0, "db_reconnects": 0, "mqtt_connects": 0, "unstorable": 0}
        self.client: mqtt.Client | None = None
        self.mqtt_connected = False
        self.db_up = True
        self.last_commit: float | None = None
        self.heartbeat = time.time()         # the main loop's last turn (liveness)
        self.missing: int | None = None      # seqs missing at the database (gaps), refreshed
        self.quarantine_rows: int | None = None
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self.metrics = None                  # backend.metrics.MetricsServer once running
        self._cleared: dict[str, float] = {}  # topics whose retained message we cleared: when
        self.totals["retained_cleared"] = 0

    def subscriptions(self) -> list[tuple[str, SubscribeOptions]]:
        """What ingest subscribes to, all QoS 1. Alone: every filter, Retain Handling 1
        (a reconnect that resumes the session replays nothing). In a share group: the
        streams shared, Retain Handling 2 (MQTT 5 section 4.8.2: no retained messages
        to shared subscriptions; Mosquitto 2.0 sends them anyway); with `state` (the
        default) also the state documents, not shared, Retain Handling 1."""
        if not self.share:
            return [(f, SubscribeOptions(qos=1, retainHandling=RH_IF_NEW)) for f in FILTERS]
        subs = [(f"$share/{self.share}/{f}", SubscribeOptions(qos=1, retainHandling=RH_NEVER))
                for f in STREAM_FILTERS]
        if self.state:
            subs += [(f, SubscribeOptions(qos=1, retainHandling=RH_IF_NEW)) for f in STATE_FILTERS]
        return subs

    def filters(self) -> list[str]:
        return [f for f, _o in self.subscriptions()]

    # ---- MQTT callbacks (network thread) ------------------------------------------
    def _on_connect(self, client, userdata, flags, rc, props):
        if rc.is_failure:
            self.log(f"ingest: connect refused: {rc}")
            return
        self.gen += 1
        self.mqtt_connected = True
        self.totals["mqtt_connects"] += 1
        if self.leaving:
            return
        if flags.session_present:
            # A session that ran unshared before (the broker may take the account for
            # the client id) keeps those subscriptions: each message would come twice.
            # Dropped before the SUBSCRIBE: its SUBACK then says they are gone.
            stale = [f for f in FILTERS if f not in self.filters()]
            if stale:
                client.unsubscribe(stale)
        client.subscribe(self.subscriptions())
        self.log(f"ingest: connected as {self.client_id} (session present: {flags.session_present})")

    def _on_subscribe(self, client, userdata, mid, reason_codes, props):
        bad = [str(r) for r in reason_codes if r.is_failure]
        if bad:
            self.log(f"ingest: subscription refused: {bad}")
        else:
            if not self.subscribed.is_set():
                self.log(f"ingest: subscribed as {self.client_id}")
            self.subscribed.set()

    def _on_message(self, client, userdata, msg):
        # Nothing may escape into paho's network thread: an exception there ends it
        # silently (the process stays up and stores nothing more).
        self.last_message = time.time()
        try:
            if not msg.payload and not msg.retain and msg.topic in self._cleared:
                self.pending.append((self.gen, msg.mid, msg.qos, None))     # our own clear: ack only
                return
            rec = classify(msg.topic, bytes(msg.payload), bool(msg.retain))
        except Exception as e:
            try:
                topic = msg.topic
            except Exception:
                topic = bytes(getattr(msg, "_topic", b"")).decode("utf-8", "replace")
            t = topics.parse(topic) if isinstance(topic, str) else None
            rec = quarantined(Rec("invalid", topic, bytes(msg.payload or b""), box=t[0] if t else None,
                                  retained=bool(msg.retain)), f"classify: {type(e).__name__}: {e}")
        self.pending.append((self.gen, msg.mid, msg.qos, rec))

    def _on_disconnect(self, client, userdata, flags, rc, props):
        self.mqtt_connected = False
        self.log(f"ingest: disconnected: {rc}")

    # ---- batching (main thread) -----------------------------------------------------
    def _write(self, recs: list[Rec]) -> dict:
        """Write recs; bisect a batch the store refuses down to the records it cannot
        hold and quarantine those. Raises _DatabaseDown when the database is away."""
        try:
            return self.store.write_batch(recs)
        except Exception as e:
            if not self.store.ping():
                raise _DatabaseDown(f"{type(e).__name__}: {e}") from None
            if len(recs) > 1:
                h = len(recs) // 2
                a, b = self._write(recs[:h]), self._write(recs[h:])
                return {k: a.get(k, 0) + b.get(k, 0) for k in set(a) | set(b)}
            why = f"store: {type(e).__name__}: {e}"
        self.log(f"ingest: quarantined {_safe(recs[0].topic)!r}: {why}")
        try:
            return self.store.write_batch([quarantined(recs[0], why)])
        except Exception as e:
            if not self.store.ping():
                raise _DatabaseDown(f"{type(e).__name__}: {e}") from None
            self.log(f"ingest: UNSTORABLE, acknowledged without a trace in the store: "
                     f"{_safe(recs[0].topic)!r} {bytes(recs[0].payload)[:200]!r}: {e}")
            return {"received": 1, "unstorable": 1}

    def _commit(self, recs: list[Rec]) -> dict | None:
        """Write recs, waiting out a database outage (reconnecting with backoff).
        None when stopped meanwhile (nothing written, nothing acknowledged)."""
        delay = 0.5
        while True:
            try:
                counts = self._write(recs)
            except _DatabaseDown as e:
                if self.db_up:
                    self.log(f"ingest: database away ({e}); {len(self.pending)} pending, unacknowledged")
                self.db_up = False
                if self.stop_event.wait(delay):
                    return None
                delay = min(delay * 2, 30.0)
                self.heartbeat = time.time()
                try:
                    self.store.reconnect()
                    self.totals["db_reconnects"] += 1
                    self.log("ingest: database reconnected")
                except Exception as e2:
                    self.log(f"ingest: database reconnect failed: {type(e2).__name__}: {str(e2)[:200]}")
                continue
            self.db_up = True
            self.last_commit = time.time()
            return counts

    def flush(self) -> int:
        """Commit what is pending, then acknowledge it. Returns how many were written."""
        n = len(self.pending)
        if not n:
            return 0
        batch = list(islice(self.pending, 0, min(n, self.batch_size)))
        recs = [b[3] for b in batch if b[3] is not None]
        counts = self._commit(recs) if recs else {}
        if counts is None:
            return 0
        self._clear_unexpected_retained(recs)
        for _ in batch:
            self.pending.popleft()
        self.totals["batches"] += 1
        for k in ("received", "stored", "duplicates", "invalid", "poison", "unstorable"):
            self.totals[k] += counts.get(k, 0)
        c = self.client
        if c is not None:
            # A message from an earlier connection is redelivered by the broker on
            # this one (with a new mid); its old mid means nothing any more.
            g = self.gen
            _ack_all(c, [(mid, qos) for gen, mid, qos, _rec in batch if qos and gen == g])
        return len(batch)

    def run(self, duration: float | None = None, stats_every: float = 10.0) -> dict:
        c = make_client(self.url, self.client_id, self.tls_ca, manual_ack=True, bulk_read=True)
        self.client = c
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        c.on_disconnect = self._on_disconnect
        # an exception in a callback must not end the network thread (belt and braces:
        # _on_message catches everything itself)
        c.suppress_exceptions = True
        if self.metrics_port is not None and self.metrics is None:
            from backend.metrics import MetricsServer
            self.metrics = MetricsServer(self, self.metrics_host, self.metrics_port).start()
            self.log(f"ingest: metrics on http://{self.metrics_host}:{self.metrics.port}/metrics")
        if self.alarm_loop and self.alarms is None:
            from backend import inventory
            from backend.alarm_loop import AlarmLoop
            self.alarms = AlarmLoop(self.store.url, webhook=self.alarm_webhook, interval=self.alarm_interval,
                                    grace=inventory.GRACE_S if self.alarm_grace is None else self.alarm_grace,
                                    log=self.log).start()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry
        props.ReceiveMaximum = min(self.receive_max, 65535)
        c.connect_async(self.url.host, self.url.port, keepalive=30, clean_start=False,
                        properties=props)
        c.loop_start()
        end = time.time() + duration if duration else None
        last_stats = time.time()
        last_maintain = 0.0
        first_wait = None
        last_gauges = 0.0
        try:
            while not self.stop_event.is_set() and (end is None or time.time() < end):
                self.heartbeat = time.time()
                if self.retention_days is not None and time.time() - last_maintain >= MAINTAIN_EVERY_S:
                    last_maintain = time.time()
                    self.maintain()
                if self.metrics is not None and time.time() - last_gauges >= 5.0:
                    last_gauges = time.time()
                    self.refresh_gauges()
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
            while self.pending and not self.stop_event.is_set() and self.flush():
                pass
            if self.stop_event.is_set() and self.db_up:
                # stopped: commit what was received (and is not yet acked), briefly
                self.stop_event.clear()
                t0 = time.time()
                while self.pending and time.time() - t0 < 5 and self.flush():
                    pass
                self.stop_event.set()
            if self.share and self.db_up and not self.pending:
                self._leave(c)
        finally:
            c.disconnect()
            c.loop_stop()
            if self.metrics is not None:
                self.metrics.stop()
                self.metrics = None
            if self.alarms is not None:
                self.alarms.stop()
                self.alarms = None
        return dict(self.totals)

    def maintain(self) -> None:
        """Partitions ahead and retention (Store.maintain); a failure is logged, and
        tried again at the next turn."""
        try:
            done = self.store.maintain(retention_days=self.retention_days or None)
            if done["created"] or done["dropped"] or done["deleted"]:
                self.log(f"ingest: maintenance: {done}")
        except Exception as e:
            self.log(f"ingest: maintenance failed: {type(e).__name__}: {str(e)[:200]}")

    def _leave(self, c: mqtt.Client) -> None:
        """A share member that stops leaves the group without parking anything: it
        unsubscribes from the shared streams (the broker sends it nothing new), stores
        and acknowledges what its session still holds, then ends the session
        (Session Expiry 0 on DISCONNECT). Without this, Mosquitto keeps queueing a
        share of the traffic into the absent member's session until it returns.
        A member killed without a goodbye keeps its session (and its queue) for its
        restart under the same client id (the systemd unit restarts it)."""
        if not self.mqtt_connected:
            return
        self.leaving = True
        shared = [f for f, _o in self.subscriptions() if f.startswith("$share/")]
        done = threading.Event()
        c.on_unsubscribe = lambda *a: done.set()
        c.unsubscribe(shared)
        if not done.wait(10):
            self.log("ingest: no UNSUBACK: the session is kept")
            return
        t0 = time.time()
        self.last_message = max(self.last_message, time.time())
        while time.time() - t0 < DRAIN_MAX_S:
            if self.pending:
                if self.flush() == 0 and not self.db_up:
                    return                       # database away: keep the session
                continue
            if time.time() - self.last_message >= DRAIN_QUIET_S:
                break
            time.sleep(0.02)
        else:
            self.log("ingest: the session still receives: kept")
            return
        props = Properties(PacketTypes.DISCONNECT)
        props.SessionExpiryInterval = 0
        c.disconnect(properties=props)
        self.log(f"ingest: left share group {self.share} (session ended)")

    def _clear_unexpected_retained(self, recs: list[Rec]) -> None:
        c = self.client
        for r in recs:
            if not r.retained:
                continue
            t = topics.parse(r.topic)
            if not t or t[1] not in ("telemetry", "event"):
                continue
            self.log(f"ingest: clearing an unexpected retained message on {_safe(r.topic)!r}")
            # noted before the publish: the broker's echo of the clear may reach the
            # network thread before publish() returns
            self._cleared[r.topic] = time.time()
            if c is not None:
                c.publish(r.topic, b"", qos=1, retain=True)
            self.totals["retained_cleared"] += 1
            try:
                self.store.note_alarm(_safe(t[0]), "retained_cleared", f"retained message on {_safe(r.topic)}")
            except Exception as e:
                self.log(f"ingest: cannot record the alarm: {e}")
        if len(self._cleared) > 10000:
            cut = time.time() - 60
            self._cleared = {k: v for k, v in self._cleared.items() if v > cut}

    def refresh_gauges(self) -> None:
        """The database-side gauges of /metrics (read here, on the store's thread)."""
        try:
            self.missing = sum(v.get("missing", 0) for v in self.store.gap_summary().values())
            self.quarantine_rows = int(self.store._q("SELECT COUNT(*) FROM quarantine")[0][0])
        except Exception:
            pass

    def lag(self) -> float:
        """Seconds the oldest pending (received, not committed) message has waited."""
        try:
            return max(0.0, time.time() - self.pending[0][3].received_at)
        except IndexError:
            return 0.0

    def stop(self) -> None:
        self.stop_event.set()
