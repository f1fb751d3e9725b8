"""Pushing a desired document to one box: sign it, record it in the store, publish
it retained and wait for the box's report. `homebox ops push` is a thin layer
over `push()`; the demo calls it directly.

    from backend import push
    r = push.push(parse_broker("mqtt://h:1883"), "HB-000001", "options", doc, master, store=store)
    r.status   # "applied" | "rejected" | "timeout" (the document stays retained)

Failures are `backend.errors.OpsError`s: DocumentError, DocumentInvalid,
BrokerUnreachable, BrokerRefused, BrokerTimeout.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from agent import topics
from agent.rules import SECTIONS, sections, sign  # noqa: F401  (SECTIONS: for the ops CLI)
from backend.errors import (
    BrokerRefused,
    BrokerTimeout,
    BrokerUnreachable,
    DocumentError,
    DocumentInvalid,
)
from common import credentials
from common.broker import Broker


def load_doc(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise DocumentError(f"cannot read {path}: {e.strerror}") from None
    except ValueError as e:
        raise DocumentError(f"{path}: not valid JSON ({e})") from None
    return doc


def violations(section: str, doc, ctx: dict | None = None) -> list[tuple[str, str]]:
    if not isinstance(doc, dict):
        return [("$", "must be a JSON object")]
    return sections.errors(section, doc, ctx)


def check(section: str, doc) -> None:
    """Raise DocumentInvalid if the box would refuse `doc` (before its version is set)."""
    errs = violations(section, dict(doc, version=1) if isinstance(doc, dict) else doc)
    if errs:
        raise DocumentInvalid(section, errs)


def prepare(doc: dict, box_id: str, version: int, master: bytes | None, key: bytes | None = None) -> dict:
    """The document as published: version, box, and the signature under the box's
    own key (`key`, from the registry: backend/keys.py), or under `master`'s: a
    signer (a function box id -> key, Registry.signer) or, legacy, a master secret."""
    d = {k: v for k, v in doc.items() if k != "sig"}
    d["version"] = version
    d["box"] = box_id
    if key is None and callable(master):
        key = master(box_id)                  # a signer: box id -> its key (backend/keys.py Registry.signer)
    elif key is None and master is not None:
        key = credentials.box_key(master, box_id)
    if key is not None:
        try:
            d["sig"] = sign.sign(d, key)
        except UnicodeEncodeError as e:
            raise DocumentError(f"the document holds text that is not valid Unicode ({e.reason})") from None
    return d


def wire(d: dict) -> bytes:
    """The bytes published: raw UTF-8 (ensure_ascii=False), so that the box parses
    exactly the strings that were signed. With \\u escapes, a character outside the
    BMP travels as a surrogate pair, which MicroPython decodes half by half into other
    bytes than CPython signed (tests/test_fuzz_unicode.py). A string that is not
    valid Unicode (a lone surrogate) cannot be signed: DocumentError."""
    try:
        return json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError as e:
        raise DocumentError(f"the document holds text that is not valid Unicode ({e.reason})") from None


class Session:
    """One MQTT connection that reads the retained desired/reported documents of
    a section, publishes a new desired document and waits for the report."""

    def __init__(self, url: Broker, box: str, section: str, tls_ca: str | None = None):
        import paho.mqtt.client as mqtt

        from backend.ingest import make_client
        self.box, self.section = box, section
        self.t_desired = topics.desired(box, section)
        self.t_reported = topics.reported(box, section)
        self.t_probe = f"homebox-ops/probe/{uuid.uuid4().hex}"
        self.desired: dict | None = None
        self.reported: dict | None = None
        self.cond = threading.Condition()
        self.probed = False
        self.refused: str | None = None
        # a unique client id (a broker with use_username_as_clientid replaces it)
        self.c = make_client(url, f"homebox-ops-{uuid.uuid4().hex[:12]}", tls_ca, protocol=mqtt.MQTTv311)
        self.c.on_message = self._on_message
        self.c.on_connect = self._on_connect
        if url.cert:
            self.c.on_connect_fail = self._on_connect_fail
            self.c.on_disconnect = self._on_disconnect
        self.connected = False
        self.c.connect(url.host, url.port)
        self.c.loop_start()
        self.c.subscribe([(self.t_desired, 1), (self.t_reported, 1), (self.t_probe, 1)])
        # The broker sends retained messages right after the SUBACK; a probe
        # published after that comes back after them, so when it arrives we
        # have seen whatever was retained.
        self.c.publish(self.t_probe, b"probe", qos=1)

    def _on_connect(self, client, userdata, flags, rc, props=None):
        with self.cond:
            if rc.is_failure:
                self.refused = str(rc)
            self.connected = not rc.is_failure
            self.cond.notify_all()

    def _on_connect_fail(self, client, userdata):
        self._closed_before_connack()

    def _on_disconnect(self, client, userdata, flags, rc, props=None):
        self._closed_before_connack()

    def _closed_before_connack(self):
        # A broker that refuses a client certificate (unknown, revoked, expired)
        # closes the TLS connection before any CONNACK: refused, not a timeout
        # (only with a certificate: a broker still starting is worth the wait).
        with self.cond:
            if not self.connected and self.refused is None:
                self.refused = "the connection was closed before the broker answered " \
                               "(with a client certificate: not admitted, revoked or expired?)"
                self.cond.notify_all()

    def _on_message(self, client, userdata, msg):
        with self.cond:
            if msg.topic == self.t_probe:
                self.probed = True
            else:
                try:
                    doc = json.loads(msg.payload)
                except ValueError:
                    doc = None
                if isinstance(doc, dict):
                    if msg.topic == self.t_desired:
                        self.desired = doc
                    else:
                        self.reported = doc
            self.cond.notify_all()

    def wait(self, pred, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(pred, timeout)

    def next_version(self) -> int:
        vs = [0]
        for d in (self.desired, self.reported):
            if d:
                vs.append(_int(d.get("version")))
        if self.reported:
            for k in ("rejected", "ignored"):
                if isinstance(self.reported.get(k), dict):
                    vs.append(_int(self.reported[k].get("version")))
        return max(vs) + 1

    def publish(self, payload: bytes) -> None:
        info = self.c.publish(self.t_desired, payload, qos=1, retain=True)
        info.wait_for_publish(10)

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def _int(v) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def outcome(rep: dict | None, version: int) -> tuple[str, str] | None:
    """('applied'|'rejected', text) once the reported document speaks of `version`."""
    if not rep:
        return None
    if rep.get("status") == "applied" and rep.get("version") == version:
        return "applied", f"applied v{version}"
    rj = rep.get("rejected")
    if rep.get("status") == "rejected" and isinstance(rj, dict) and rj.get("version") == version:
        return "rejected", f"rejected: {rj.get('field')}: {rj.get('reason')}"
    ig = rep.get("ignored")
    if isinstance(ig, dict) and ig.get("version") == version and rep.get("version", 0) >= version:
        return "rejected", f"rejected: version: {ig.get('reason')}"
    return None


@dataclass(frozen=True)
class PushResult:
    """What the box said of the pushed version. status: "applied", "rejected"
    (message says why) or "timeout" (no report in time; the document stays
    retained and the box applies it when it connects)."""
    box: str
    section: str
    version: int
    status: str
    message: str

    @property
    def applied(self) -> bool:
        return self.status == "applied"


def push(broker: Broker, box: str, section: str, doc: dict, master: bytes | None, *,
         store=None, tls_ca: str | None = None, timeout: float = 30.0, validate: bool = True,
         author: str | None = None, key: bytes | None = None) -> PushResult:
    """Sign `doc` for `box` with its key `key` (backend/keys.py Registry.hmac_key), or
    the legacy `master` (unsigned if both are None), record it in `store` (if given:
    the latest desired document, and the history with `author`) and publish it
    retained; wait up to `timeout` s for the report."""
    if validate:
        check(section, doc)
    try:
        s = Session(broker, box, section, tls_ca)
    except OSError as e:
        raise BrokerUnreachable(f"cannot connect to {broker.host}:{broker.port}: {e}") from None
    try:
        if not s.wait(lambda: s.probed or s.refused, min(timeout, 10)) or s.refused:
            if s.refused:
                raise BrokerRefused(f"the broker refused the connection: {s.refused}")
            raise BrokerTimeout("timeout: the broker did not answer")
        version = s.next_version()
        if store is not None:
            # the store may know a later version than the broker still retains
            version = max(version, store.desired_version(box, section) + 1)
        d = prepare(doc, box, version, master, key)
        payload = wire(d)
        if store is not None:
            # recorded first: a document on the broker is always one the store knows
            store.put_desired(box, section, payload, source="push")
            from backend import history
            history.record(store, box, section, version, payload, author=author)
        s.publish(payload)
        res: list = []
        deadline = time.time() + timeout

        def done():
            o = outcome(s.reported, version)
            if o:
                res.append(o)
            return bool(o)

        if not s.wait(done, max(0.0, deadline - time.time())):
            return PushResult(box, section, version, "timeout",
                              f"timeout: no report from {box} for v{version} after {timeout:g} s "
                              "(the document stays retained; the box applies it when it connects)")
        status, text = res[-1]
        return PushResult(box, section, version, status, text)
    finally:
        s.close()
