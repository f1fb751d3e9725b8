"""`homebox ops broker-config`: a Mosquitto (2.x) configuration for the fleet.

Writes into OUT:
- mosquitto.conf  listeners (TLS, optionally a plain loopback one), persistence,
                  queues, and the files below;
- passwd          Mosquitto's PBKDF2-SHA512 format ($7$), from the ledger's hashes or
                  from plain credentials (hashed here; plain ones are never written);
- acl             per-box rights through `pattern` lines with %u: a box writes only its
                  own telemetry/status/reported/event and reads only its own desired.
                  With use_username_as_clientid, %u is also the client id, so a box
                  can neither pick another box's client id nor take over its session;
- ca.crt, server.crt/server.key, and optionally clients/<box>.crt|key (and one per
  backend account): client certificates live CLIENT_DAYS days and are bound to the
  box (use_identity_as_username: the certificate's CN is the username, so a box's
  certificate cannot log in as another box), with a CRL (crl.pem) that
  `homebox ops revoke` extends. The CA's private key is kept apart from the broker's
  files, in CA_DIR (default OUT-ca/, mode 0700; a ca.key found in OUT from an older
  run is moved there);
- clients/<name>.crt|key for the backend's own identities: homebox-ingest-1..N
  (read everything boxes send, and the desired documents), homebox-push (write
  desired documents, read reported/status) and homebox-push-1..M, the same rights
  (campaign drivers, reconcile, fan-out connections: each its own identity, hence its
  own client id). They log in on the backend listener (BACKEND_PORT, default the TLS
  port + 1), which takes a client certificate only and its CN as the username: no
  backend identity has a password, and no file written here holds one (an older
  run's backend-accounts.json is deleted). Operators push as themselves: `homebox
  ops broker-login NAME` (backend/identities.py) issues op.NAME certificates that
  live hours, and adds them to the ACL (identities.json: names and roles, no secret).
  Re-running keeps the existing CA and the people's identities, and re-issues the
  services' certificates.

Box passwords must be random and high-entropy (the bench generates them): the
hash (common/credentials.py) uses Mosquitto's default 101 PBKDF2 iterations so that a reconnect storm of
the whole fleet does not saturate the broker's CPU.
"""
from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
from pathlib import Path

from common.credentials import mosquitto_hash

BOX_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
INGEST_USER = "homebox-ingest-%d"
PUSH_USER = "homebox-push"
# More push accounts, each its own client id (the broker makes the username the
# client id): campaign drivers, reconcile, one account per fan-out connection.
PUSHER_USER = "homebox-push-%d"
# the backend's listener (client certificates only): the TLS port + this
BACKEND_PORT_OFFSET = 1
IDENTITIES = "identities.json"      # the people's broker identities: {name: {"role": "push", ...}}
# Messages per box per 5 minutes (health, plus coverage/consumption/speed/events on
# average) and how long the backend may be away before its queue overflows.
CLIENT_DAYS = 90          # client certificates: short, re-issued by re-running broker-config
CRL_DAYS = 30             # the CRL's next update: re-run broker-config (or ops revoke) before
MSGS_PER_BOX_5MIN = 2
OUTAGE_S = 3600
# Bytes a queued message takes in Mosquitto's memory, on average (payload ~200-600 B,
# topic, and the broker's own record).
QUEUED_MSG_BYTES = 1024
# A backend session's queue never below this (a small fleet still bursts: every box
# empties its outbox at once after a broker restart).
MIN_QUEUE_BYTES = 256 * 1024 * 1024
# The count limit, out of the way (the bytes bound the queue). Not 0 ("no maximum"):
# with 0, Mosquitto 2.0.11 drops the connection of a client whose QoS 1 publish the
# ACL refuses (tests/test_broker_acl.py).
QUEUE_COUNT_UNBOUNDED = 100_000_000


def is_hash(s: str) -> bool:
    return bool(re.match(r"^\$[67]\$", s))


def load_credentials(path: Path) -> dict[str, str]:
    """Box credentials: JSON {box: password|hash} or {box: {"hash"|"mqtt_hash"|"password": ...}}
    or a list of such objects with a "box" key; or CSV rows `box,password-or-hash`."""
    path = Path(path)
    text = path.read_text()
    out: dict[str, str] = {}
    if path.suffix.lower() == ".csv":
        for row in csv.reader(text.splitlines()):
            if len(row) >= 2 and row[0].strip() and row[0].strip().lower() not in ("box", "box_id"):
                out[row[0].strip()] = row[1].strip()
        return out
    data = json.loads(text)
    items = data.items() if isinstance(data, dict) else (
        (d.get("box") or d.get("box_id"), d) for d in data if isinstance(d, dict))
    for box, v in items:
        if isinstance(v, dict):
            v = v.get("mqtt_hash") or v.get("hash") or v.get("mqtt_password") or v.get("password")
        if box and isinstance(v, str):
            out[str(box)] = v
    return out


def acl_text(ingest_accounts: int, push_accounts: int = 0, people: list[str] | tuple = (),
             readers: list[str] | tuple = ()) -> str:
    """people: the operators' own identities (op.NAME...), each with the push rights;
    readers: password accounts with the ingest rights (a bench's own broker)."""
    lines = ["# homebox ACL (generated by `homebox ops broker-config`)", ""]
    for user in [INGEST_USER % i for i in range(1, ingest_accounts + 1)] + sorted(readers):
        lines += [f"user {user}",
                  "topic read homebox/v1/+/telemetry/#",
                  "topic read homebox/v1/+/event",
                  "topic read homebox/v1/+/status",
                  "topic read homebox/v1/+/reported/+",
                  "topic read homebox/v1/+/desired/+",
                  # to clear a retained message where the contract has none (ingest does)
                  "topic write homebox/v1/+/telemetry/#",
                  "topic write homebox/v1/+/event", ""]
    for user in [PUSH_USER] + [PUSHER_USER % i for i in range(1, push_accounts + 1)] + sorted(people):
        lines += [f"user {user}",
                  "topic readwrite homebox/v1/+/desired/+",
                  "topic read homebox/v1/+/reported/+",
                  "topic read homebox/v1/+/status",
                  # `ops push` round-trips a probe here to know it has seen the retained documents
                  "topic readwrite homebox-ops/probe/#", ""]
    # `pattern` lines apply to every user. %u: the username, which is also the
    # client id (use_username_as_clientid). Box ids cannot contain + # or /.
    lines += ["# each box: its own topics only, exactly the kinds and sections of the contract",
              "pattern write homebox/v1/%u/status",
              "pattern write homebox/v1/%u/event"]
    lines += [f"pattern write homebox/v1/%u/telemetry/{k}" for k in box_telemetry_kinds()]
    lines += [f"pattern write homebox/v1/%u/reported/{s}" for s in box_sections()]
    # key rotation (backend/keys.py): the box reports applied/confirmed
    lines += ["pattern write homebox/v1/%u/reported/keys"]
    lines += ["pattern read homebox/v1/%u/desired/+", ""]
    return "\n".join(lines)


def box_telemetry_kinds() -> list[str]:
    """The telemetry kinds of the contract: one schema telemetry-{kind}.json each."""
    from backend import contract
    return sorted(n[len("telemetry-"):-len(".json")] for n in contract.schema_names()
                  if n.startswith("telemetry-"))


def box_sections() -> list[str]:
    """The sections a box reports: one desired-{section}.json schema each."""
    from backend import contract
    return sorted(n[len("desired-"):-len(".json")] for n in contract.schema_names()
                  if n.startswith("desired-"))


def _write_private(path: Path, data: bytes | str) -> None:
    if isinstance(data, str):
        data = data.encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def default_ca_dir(out: Path) -> Path:
    out = Path(out).resolve()
    return out.parent / (out.name + "-ca")


def _load_ca(out: Path, ca_dir: Path):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    return (x509.load_pem_x509_certificate((out / "ca.crt").read_bytes()),
            serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None))


def write_crl(out: Path, ca_dir: Path | None = None) -> Path:
    """OUT/crl.pem from CA_DIR/revoked.json ({box: [serial, ...]}), signed by the CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    out = Path(out).resolve()
    ca_dir = Path(ca_dir) if ca_dir else default_ca_dir(out)
    ca, key = _load_ca(out, ca_dir)
    revoked = json.loads((ca_dir / "revoked.json").read_text()) if (ca_dir / "revoked.json").exists() else {}
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    b = (x509.CertificateRevocationListBuilder().issuer_name(ca.subject)
         .last_update(now).next_update(now + dt.timedelta(days=CRL_DAYS)))
    for serials in revoked.values():
        for sn in serials:
            b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(int(sn))
                                          .revocation_date(now).build())
    crl = b.sign(key, hashes.SHA256())
    p = out / "crl.pem"
    tmp = p.with_name("crl.pem.tmp")
    tmp.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, p)
    return p


def revoke_cert(out: Path, box: str, ca_dir: Path | None = None) -> bool:
    """Put the box's client certificate (OUT/clients/BOX.crt) on the CRL; False if it has none."""
    from cryptography import x509
    out = Path(out).resolve()
    crt = out / "clients" / f"{box}.crt"
    if not crt.exists():
        return False
    ca_dir = Path(ca_dir) if ca_dir else default_ca_dir(out)
    sn = x509.load_pem_x509_certificate(crt.read_bytes()).serial_number
    path = ca_dir / "revoked.json"
    revoked = json.loads(path.read_text()) if path.exists() else {}
    if sn not in revoked.setdefault(box, []):
        revoked[box].append(sn)
    _write_private(path, json.dumps(revoked, indent=1))
    write_crl(out, ca_dir)
    return True


def _pem_key(k) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption())


def _issue(ca, ca_key, cn: str, sans: list, usage, lifetime: dt.timedelta):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    k = ec.generate_private_key(ec.SECP256R1())
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
         .issuer_name(ca.subject).public_key(k.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now).not_valid_after(now + lifetime)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return k, b.sign(ca_key, hashes.SHA256())


def issue_client(out: Path, cn: str, dest: Path, lifetime: dt.timedelta,
                 ca_dir: Path | None = None) -> tuple[Path, Path]:
    """A client certificate for `cn` from the fleet CA: DEST/CN.crt and DEST/CN.key
    (mode 0600; DEST mode 0700). Returns their paths."""
    from cryptography.x509.oid import ExtendedKeyUsageOID
    out = Path(out).resolve()
    ca, ca_key = _load_ca(out, Path(ca_dir) if ca_dir else default_ca_dir(out))
    return _write_client(dest, cn, *_issue(ca, ca_key, cn, [], ExtendedKeyUsageOID.CLIENT_AUTH, lifetime))


def _write_client(dest: Path, cn: str, k, c) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, 0o700)
    crt, key = dest / f"{cn}.crt", dest / f"{cn}.key"
    _write_private(key, _pem_key(k))
    crt.write_bytes(c.public_bytes(serialization.Encoding.PEM))
    return crt, key


def _pki(out: Path, hosts: list[str], client_boxes: list[str], ca_dir: Path) -> dict[str, str]:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    ca_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(ca_dir, 0o700)
    ca_crt, ca_key = out / "ca.crt", ca_dir / "ca.key"
    if (out / "ca.key").exists() and not ca_key.exists():
        os.replace(out / "ca.key", ca_key)          # an older run kept it beside the broker's files
    if ca_crt.exists() and ca_key.exists():
        ca = x509.load_pem_x509_certificate(ca_crt.read_bytes())
        key = serialization.load_pem_private_key(ca_key.read_bytes(), None)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "homebox fleet CA")])
        ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
              .public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now).not_valid_after(now + dt.timedelta(days=3650))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                             critical=True)
              .sign(key, hashes.SHA256()))
        _write_private(ca_key, _pem_key(key))
        ca_crt.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    sans = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    k, c = _issue(ca, key, hosts[0], sans, ExtendedKeyUsageOID.SERVER_AUTH, dt.timedelta(days=825))
    _write_private(out / "server.key", _pem_key(k))
    (out / "server.crt").write_bytes(c.public_bytes(serialization.Encoding.PEM))
    files = {"ca": str(ca_crt), "server_cert": str(out / "server.crt")}
    if client_boxes:
        cdir = out / "clients"
        for box in client_boxes:
            _write_client(cdir, box, *_issue(ca, key, box, [], ExtendedKeyUsageOID.CLIENT_AUTH,
                                             dt.timedelta(days=CLIENT_DAYS)))
        files["client_certs"] = str(cdir)
    files["crl"] = str(write_crl(out, ca_dir))
    files["ca_key"] = str(ca_key)
    return files


def people(out: Path) -> dict[str, dict]:
    """The operators' broker identities (OUT/identities.json): {name: {...}}."""
    p = Path(out) / IDENTITIES
    return json.loads(p.read_text()) if p.exists() else {}


def write_people(out: Path, ids: dict[str, dict]) -> None:
    """identities.json and the ACL that gives them the push rights (atomic each);
    the broker reads the ACL again on SIGHUP."""
    out = Path(out)
    conf = json.loads((out / "services.json").read_text())
    for name, text in ((IDENTITIES, json.dumps(ids, indent=1, sort_keys=True)),
                       ("acl", acl_text(conf["ingest_accounts"], conf["push_accounts"], list(ids),
                                        conf.get("readers", [])))):
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out / name)


def queue_size(fleet_size: int) -> int:
    """Messages the backend's persistent sessions must hold to ride out OUTAGE_S of the
    whole fleet's telemetry."""
    return max(10000, fleet_size * MSGS_PER_BOX_5MIN * OUTAGE_S // 300)


def queue_bytes(fleet_size: int) -> int:
    """max_queued_bytes: queue_size in bytes, doubled for the burst of outboxes that
    follows an outage, never below MIN_QUEUE_BYTES. The queue is bounded in bytes
    (memory), not in messages: a count limit (Mosquitto's default 1000, or ours of
    10,000) dropped 6,000 of a 30,000-message burst to a slow consumer, after the
    boxes had their PUBACKs and had deleted them."""
    return max(MIN_QUEUE_BYTES, 2 * queue_size(fleet_size) * QUEUED_MSG_BYTES)


def generate(out: Path, boxes: dict[str, str], port: int = 8883, plain_port: int = 0,
             hosts: list[str] | None = None, client_certs: bool = False, fleet_size: int = 1000,
             ingest_accounts: int = 4, tls: bool = True, run_as: str | None = None,
             push_accounts: int = 4, ca_dir: Path | None = None,
             backend_port: int | None = None, readers: dict[str, str] | None = None) -> dict[str, str]:
    """Write the configuration; returns the paths written. `boxes`: {box id: password or $7$ hash}.
    run_as: the `user` Mosquitto switches to when started as root (default: Mosquitto's
    own default, `mosquitto`, which must be able to read OUT).
    readers: {name: password or hash} of accounts that read what boxes send with a
    password (a bench's own broker, where the bench watches its boxes); hashed here."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    hosts = hosts or ["localhost"]
    bad = [b for b in boxes if not BOX_ID.match(b)]
    if bad:
        raise ValueError(f"box ids must match {BOX_ID.pattern}: {bad[:5]}")
    services = [INGEST_USER % i for i in range(1, ingest_accounts + 1)] + [PUSH_USER] + \
        [PUSHER_USER % i for i in range(1, push_accounts + 1)]
    readers = readers or {}
    clash = (set(boxes) | set(readers)) & set(services) | set(boxes) & set(readers)
    if clash:
        raise ValueError(f"box ids clash with backend accounts: {sorted(clash)}")
    legacy = out / "backend-accounts.json"
    if legacy.exists():
        legacy.unlink()             # an older run's clear passwords: the services now use certificates
    lines = []
    for box, secret in sorted({**boxes, **readers}.items()):
        lines.append(f"{box}:{secret if is_hash(secret) else mosquitto_hash(secret)}")
    _write_private(out / "passwd", "\n".join(lines) + "\n")
    # which services exist (names only): `ops broker-login` rewrites the ACL from it
    (out / "services.json").write_text(json.dumps({"ingest_accounts": ingest_accounts,
                                                   "push_accounts": push_accounts, "services": services,
                                                   "readers": sorted(readers)}))
    write_people(out, people(out))
    ca_dir = Path(ca_dir).resolve() if ca_dir else default_ca_dir(out)
    # the backend's services log in with certificates (clients/NAME.crt|key); with
    # --client-certs the boxes get one too (the TLS listener then takes the
    # certificate's CN as the username, not a password)
    files = _pki(out, hosts, (sorted(boxes) if client_certs else []) + services, ca_dir) if tls else {}
    if not client_certs:
        files.pop("client_certs", None)         # the services' certificates only: backend_certs below
    backend_port = (port + BACKEND_PORT_OFFSET if backend_port is None else backend_port) if tls else 0
    data = out / "data"
    data.mkdir(exist_ok=True)
    conf = [
        "# homebox fleet broker (generated by `homebox ops broker-config`; Mosquitto 2.x)",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {out / 'passwd'}",
        f"acl_file {out / 'acl'}",
        "",
        "# retained desired/reported documents and the backend's persistent sessions",
        "persistence true",
        f"persistence_location {data}/",
        "# a kill -9 loses what changed since the last save: run `homebox ops reconcile` after",
        "autosave_interval 60",
        "",
        f"# sized for {fleet_size} boxes: {MSGS_PER_BOX_5MIN} msgs/box/5 min for {OUTAGE_S} s of backend outage",
        f"# bounded in bytes ({queue_bytes(fleet_size) >> 20} MiB per session), not in messages",
        f"max_queued_messages {QUEUE_COUNT_UNBOUNDED}",
        f"max_queued_bytes {queue_bytes(fleet_size)}",
        "max_inflight_messages 20",
        "# a desired document is at most 8 KiB on the box; telemetry is far smaller",
        "max_packet_size 65536",
        "persistent_client_expiration 14d",
        "",
    ] + ([f"user {run_as}", ""] if run_as else []) + [
        f"log_dest file {out / 'mosquitto.log'}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "connection_messages true",
        "",
    ]
    if tls:
        conf += [
            f"listener {port}",
            "protocol mqtt",
            "# the client id is the username: no box can use another box's client id",
            "use_username_as_clientid true",
            f"cafile {out / 'ca.crt'}",
            f"certfile {out / 'server.crt'}",
            f"keyfile {out / 'server.key'}",
            "tls_version tlsv1.2",
        ]
        if client_certs:
            conf += ["# a client certificate is required and names its holder: its CN is the",
                     "# username (a box's certificate cannot log in as another box)",
                     "require_certificate true", "use_identity_as_username true",
                     f"crlfile {out / 'crl.pem'}"]
        conf.append("")
    if backend_port:
        conf += ["# the backend's listener: a client certificate only, its CN is the username",
                 "# (services homebox-ingest-N, homebox-push-N; people op.NAME): no password",
                 f"listener {backend_port}",
                 "protocol mqtt",
                 "use_username_as_clientid true",
                 f"cafile {out / 'ca.crt'}",
                 f"certfile {out / 'server.crt'}",
                 f"keyfile {out / 'server.key'}",
                 "tls_version tlsv1.2",
                 "require_certificate true", "use_identity_as_username true",
                 f"crlfile {out / 'crl.pem'}", ""]
    if plain_port:
        conf += ["# plain listener on loopback only: boxes on a test bench, and tests (passwords:",
                 "# the backend's identities have none, they use the backend listener)",
                 f"listener {plain_port} 127.0.0.1", "protocol mqtt",
                 "use_username_as_clientid true", ""]
    (out / "mosquitto.conf").write_text("\n".join(conf))
    result = {"config": str(out / "mosquitto.conf"), "passwd": str(out / "passwd"),
              "acl": str(out / "acl")}
    if backend_port:
        result["backend_port"] = str(backend_port)
        result["backend_certs"] = str(out / "clients")
    result.update(files)
    return result
