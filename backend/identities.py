"""The operators' own broker identities: each person pushes as op.NAME, with a
client certificate that lives hours, never with a shared account's password
(docs/decisions/0017-broker-identities.md).

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
          connections: int = 1, ca_dir: Path | None = None) -> dict:
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
    want = names(account, connections)
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
