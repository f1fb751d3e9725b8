"""The operators' own broker identities: each person pushes as op.NAME, with a
client certificate that lives hours, never with a shared account's password
(docs/decisions/0018-broker-identities.md).

    from backend import identities
    crts = identities.issue(broker_dir, "alice", dest, hours=12, connections=4)
    # dest/op.alice.crt|key, dest/op.alice~2.crt|key ...: HOMEBOX_MQTT_CERT=dest
    identities.revoke(broker_dir, "alice")      # on the CRL, out of the ACL

The first certificate of an account adds its names to the broker's ACL (with the
push rights) and identities.json: the broker must then re-read it (SIGHUP, with
`reload`). One name per connection, since the broker makes the username the
client id: a campaign's fan-out opens one connection per certificate. Revoking
puts every certificate the account was issued on the CRL and takes its names
out of the ACL; after the SIGHUP the broker refuses them.
"""
from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

from backend import broker_config
from backend.errors import OpsError

PREFIX = "op."
# between a person's name and a connection's number: not a character of an
# account name (backend/accounts.py), so op.alice~2 is never another person's
SEP = "~"
DEFAULT_HOURS = 12
MAX_HOURS = 7 * 24
MAX_CONNECTIONS = 16


class IdentityError(OpsError):
    """A broker identity cannot be issued or revoked as asked."""


def names(account: str, connections: int = 1) -> list[str]:
    """The broker usernames of a person: op.NAME, then op.NAME~2 .. op.NAME~N."""
    return [PREFIX + account] + [f"{PREFIX}{account}{SEP}{i}" for i in range(2, connections + 1)]


def account_of(username: str) -> str | None:
    """The person behind a broker username (op.alice~2 -> alice), None for a service or a box."""
    if not username.startswith(PREFIX):
        return None
    return username[len(PREFIX):].split(SEP, 1)[0]


def issue(broker_dir: Path, account: str, dest: Path, *, hours: float = DEFAULT_HOURS,
          connections: int = 1, first: int = 1, ca_dir: Path | None = None) -> dict:
    """Certificates for `account` in DEST (op.NAME.crt|key ...). Returns
    {"names", "certs", "not_after", "acl_changed"}: acl_changed says the broker must
    re-read its ACL (SIGHUP) before the names are let in."""
    from backend.accounts import _check_name
    _check_name(account)
    if not 0 < hours <= MAX_HOURS:
        raise IdentityError(f"--hours must be in (0, {MAX_HOURS}]")
    if not 1 <= connections <= MAX_CONNECTIONS:
        raise IdentityError(f"--connections must be in [1, {MAX_CONNECTIONS}]")
    broker_dir = Path(broker_dir).resolve()
    if not (broker_dir / "services.json").exists():
        raise IdentityError(f"{broker_dir}: not a directory `homebox ops broker-config` wrote")
    ids = broker_config.people(broker_dir)
    want = names(account, first + connections - 1)[first - 1:]
    changed = any(n not in ids for n in want)
    from cryptography import x509
    certs, not_after = [], 0.0
    for n in want:
        crt, _key = broker_config.issue_client(broker_dir, n, Path(dest), dt.timedelta(hours=hours), ca_dir)
        c = x509.load_pem_x509_certificate(crt.read_bytes())
        rec = ids.setdefault(n, {"account": account, "role": "push", "certs": []})
        not_after = c.not_valid_after_utc.timestamp()
        rec["certs"].append([c.serial_number, not_after])
        certs.append(str(crt))
    # an expired certificate needs no CRL entry: keep the lists short
    now = time.time()
    for rec in ids.values():
        rec["certs"] = [sn for sn in rec["certs"] if sn[1] > now]
    broker_config.write_people(broker_dir, ids)
    return {"names": want, "certs": certs, "not_after": not_after, "acl_changed": changed}


def revoke(broker_dir: Path, account: str, *, ca_dir: Path | None = None) -> list[str]:
    """Every broker identity of `account` on the CRL and out of the ACL; returns
    the names revoked ([] if it had none). Reload the broker after (SIGHUP)."""
    broker_dir = Path(broker_dir).resolve()
    ca_dir = Path(ca_dir) if ca_dir else broker_config.default_ca_dir(broker_dir)
    ids = broker_config.people(broker_dir)
    gone = sorted(n for n in ids if account_of(n) == account)
    if not gone:
        return []
    path = ca_dir / "revoked.json"
    revoked = json.loads(path.read_text()) if path.exists() else {}
    for n in gone:
        serials = revoked.setdefault(n, [])
        serials += [sn for sn, _exp in ids.pop(n)["certs"] if sn not in serials]
    broker_config._write_private(path, json.dumps(revoked, indent=1))
    broker_config.write_crl(broker_dir, ca_dir)
    broker_config.write_people(broker_dir, ids)
    return gone


def wait_admitted(broker, tls_ca: str | None, timeout: float = 15.0) -> bool:
    """True once the broker lets `broker`'s identity round-trip a probe (its ACL
    section is loaded: a SIGHUP is handled in the broker's own time)."""
    import threading
    import uuid

    import paho.mqtt.client as mqtt

    from backend.ingest import make_client
    topic = f"homebox-ops/probe/{uuid.uuid4().hex}"
    back = threading.Event()
    deadline = time.time() + timeout
    c = make_client(broker, f"probe-{uuid.uuid4().hex[:8]}", tls_ca, protocol=mqtt.MQTTv311)
    c.on_message = lambda *a: back.set()
    c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe(topic, 1)
    c.on_subscribe = lambda cl, *a: cl.publish(topic, b"probe", qos=1)
    try:
        c.connect(broker.host, broker.port)
    except OSError:
        return False
    c.loop_start()
    try:
        while time.time() < deadline:
            if back.wait(0.5):
                return True
            if c.is_connected():        # denied (the old ACL): subscribe again, the probe follows
                c.subscribe(topic, 1)
        return False
    finally:
        c.loop_stop()
        c.disconnect()


class Issuer:
    """The API server's certificates for the people it pushes for: op.NAME for a
    push, op.NAME~2.. for a campaign's connections, in a private directory (0700),
    issued on first use and again before they expire (an hour each)."""

    HOURS = 1.0

    def __init__(self, broker_dir: Path, broker, *, tls_ca: str | None = None, ca_dir: Path | None = None,
                 reload=None, campaign_connections: int = 4):
        import tempfile
        import threading
        self.broker_dir, self.broker, self.tls_ca, self.ca_dir = Path(broker_dir), broker, tls_ca, ca_dir
        self.reload, self.fanout = reload, campaign_connections
        self.dir = Path(tempfile.mkdtemp(prefix="homebox-identities-"))
        self.lock = threading.Lock()
        self.valid: dict[tuple[str, str], float] = {}

    def broker_for(self, account: str, purpose: str = "push"):
        """The Broker to publish as `account` (purpose: push or campaign)."""
        from dataclasses import replace

        from backend.keys import reload_broker
        with self.lock:
            dest = self.dir / account / purpose
            if self.valid.get((account, purpose), 0) < time.time() + 600:
                r = issue(self.broker_dir, account, dest, hours=self.HOURS, ca_dir=self.ca_dir,
                          **({"connections": 1} if purpose == "push" else {"first": 2, "connections": self.fanout}))
                if r["acl_changed"]:
                    if not reload_broker(self.reload):
                        raise IdentityError(f"{account}'s broker identity is new: the broker must reload "
                                            "its ACL (ops serve --broker-pid)")
                    b = replace(self.broker, cert=r["certs"][0], key=r["certs"][0][:-4] + ".key")
                    if not wait_admitted(b, self.tls_ca):
                        raise IdentityError(f"the broker does not admit {r['names'][0]} yet")
                self.valid[(account, purpose)] = r["not_after"]
            return replace(self.broker, username=None, password=None, cert=str(dest), key=None)

    def close(self) -> None:
        import shutil
        shutil.rmtree(self.dir, ignore_errors=True)
