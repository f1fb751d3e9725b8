"""The operator's key registry: every box's credentials by key version, and the
commands that rotate and revoke them (`homebox ops keys|rotate|revoke`).
docs/decisions/0013-per-box-secrets.md.

    reg = Registry("registry.sqlite")
    reg.import_records(json.load(open("escrow.json")), operator_key)   # from `bench export-escrow`
    reg.hmac_key("HB-000001", operator_key)          # signs desired documents (backend/push.py)
    reg.broker_hashes()                              # {box: $7$ hash}: the broker's password file
    rotate(reg, operator_key, broker, "HB-000001", broker_dir=Path("cfg"), reload=pid)
    revoke(reg, "HB-000001", broker_dir=Path("cfg"), reload=pid)

The registry holds no secret in clear: per version, the broker's hash of the MQTT
password and the secrets sealed to the operator's public key (as the bench made
them); only the operator's private key (a separate file, mode 0600) opens them.

States of a version: pending (sent to the box, not yet in the broker), active (the
one the broker takes and documents are signed with), retired (replaced), revoked.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

from backend.errors import BrokerRefused, BrokerTimeout, OpsError
from common import credentials

ENV_REGISTRY = "HOMEBOX_REGISTRY"
SCHEMA = """
CREATE TABLE IF NOT EXISTS box_keys (
    box TEXT NOT NULL,
    version INTEGER NOT NULL,
    state TEXT NOT NULL,
    mqtt_hash TEXT NOT NULL,
    wifi_ssid TEXT,
    sealed TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (box, version)
);
"""


class RegistryError(OpsError):
    """A registry operation that cannot be done (unknown or revoked box, bad record)."""


class Registry:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- queries ----------------------------------------------------------------
    def versions(self, box: str) -> list[dict]:
        return [dict(r) for r in self.db.execute("SELECT * FROM box_keys WHERE box = ? ORDER BY version", (box,))]

    def row(self, box: str, state: str) -> dict | None:
        r = self.db.execute("SELECT * FROM box_keys WHERE box = ? AND state = ? ORDER BY version DESC LIMIT 1",
                            (box, state)).fetchone()
        return dict(r) if r else None

    def listing(self) -> list[dict]:
        """One row per box: its active version, a pending one, revoked or not (no secret)."""
        out: dict[str, dict] = {}
        for r in self.db.execute("SELECT box, version, state, updated_at FROM box_keys ORDER BY box, version"):
            b = out.setdefault(r["box"], {"box": r["box"], "active": None, "pending": None, "revoked": False,
                                          "versions": 0})
            b["versions"] += 1
            if r["state"] in ("active", "pending"):
                b[r["state"]] = r["version"]
            if r["state"] == "revoked":
                b["revoked"] = True
        return list(out.values())

    def credentials(self, box: str, key: bytes, state: str = "active") -> credentials.Credentials:
        r = self.row(box, state)
        if r is None:
            raise RegistryError(f"{box}: no {state} key version in the registry"
                            + (" (revoked)" if self.row(box, "revoked") else ""))
        return credentials.open_escrow(key, {"box": box, "version": r["version"], "sealed": r["sealed"],
                                             "wifi_ssid": r["wifi_ssid"]})

    def hmac_key(self, box: str, key: bytes) -> bytes:
        """The active HMAC key of a box (bytes), to sign its desired documents."""
        return bytes.fromhex(self.credentials(box, key).hmac_key)

    def signer(self, key: bytes):
        """A function box id -> its active HMAC key, for the signers that take a
        `master` (backend/push.py prepare, backend/campaign.py run)."""
        return lambda box: self.hmac_key(box, key)

    def broker_hashes(self) -> dict[str, str]:
        """{box: $7$ hash} of every box's active version; revoked boxes are absent."""
        return {r["box"]: r["mqtt_hash"]
                for r in self.db.execute("SELECT box, mqtt_hash FROM box_keys WHERE state = 'active' ORDER BY box")}

    def boxes(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT DISTINCT box FROM box_keys")}

    # ---- changes ----------------------------------------------------------------
    def import_records(self, records: list, key: bytes) -> list[dict]:
        """Escrow records from the bench (`bench export-escrow`). Each one is opened
        with the operator key first (a record sealed to another key is refused);
        the newest record of a box becomes its active version (the box was just
        flashed with it). Records already imported are skipped."""
        if not isinstance(records, list):
            raise RegistryError("an escrow file is a JSON list of records (`homebox bench export-escrow`)")
        out = []
        for rec in sorted(records, key=lambda r: (r.get("created_at") or 0) if isinstance(r, dict) else 0):
            try:
                box, sealed, h = rec["box"], rec["sealed"], rec["mqtt_hash"]
                creds = credentials.open_escrow(key, rec)
                if not credentials.check_hash(creds.mqtt_password, h):
                    raise ValueError("its broker hash is not the hash of its password")
            except (KeyError, TypeError, ValueError, credentials.MasterSecretError) as e:
                raise RegistryError(f"escrow record {str(rec)[:60]}...: {e}") from None
            if self.db.execute("SELECT 1 FROM box_keys WHERE box = ? AND sealed = ?", (box, sealed)).fetchone():
                out.append({"box": box, "version": None, "result": "already imported"})
                continue
            now = time.time()
            with _Tx(self.db):
                top = self.db.execute("SELECT MAX(version) FROM box_keys WHERE box = ?", (box,)).fetchone()[0] or 0
                version = max(top + 1, int(rec["version"]))
                self.db.execute("UPDATE box_keys SET state = 'retired', updated_at = ? "
                                "WHERE box = ? AND state IN ('active', 'pending')", (now, box))
                # the version is inside the seal's associated data: re-seal when the registry numbers it anew
                if version != int(rec["version"]):
                    sealed = _reseal(key, creds, version)["sealed"]
                self.db.execute("INSERT INTO box_keys VALUES (?, ?, 'active', ?, ?, ?, 'bench', ?, ?)",
                                (box, version, h, rec.get("wifi_ssid"), sealed, now, now))
            out.append({"box": box, "version": version, "result": "imported" if top == 0 else "replaced"})
        return out

    def add_pending(self, creds: credentials.Credentials, key: bytes) -> None:
        now = time.time()
        rec = _reseal(key, creds, creds.key_version)
        with _Tx(self.db):
            self.db.execute("INSERT INTO box_keys VALUES (?, ?, 'pending', ?, ?, ?, 'rotate', ?, ?)",
                            (creds.box_id, creds.key_version, rec["mqtt_hash"], creds.wifi_ssid, rec["sealed"],
                             now, now))

    def activate(self, box: str, version: int) -> None:
        now = time.time()
        with _Tx(self.db):
            self.db.execute("UPDATE box_keys SET state = 'retired', updated_at = ? WHERE box = ? AND state = 'active'",
                            (now, box))
            self.db.execute("UPDATE box_keys SET state = 'active', updated_at = ? WHERE box = ? AND version = ?",
                            (now, box, version))

    def revoke(self, box: str) -> int:
        """Every version of the box revoked; returns how many."""
        with _Tx(self.db):
            cur = self.db.execute("UPDATE box_keys SET state = 'revoked', updated_at = ? "
                                  "WHERE box = ? AND state != 'revoked'", (time.time(), box))
        return cur.rowcount


def _reseal(key: bytes, creds: credentials.Credentials, version: int) -> dict:
    from dataclasses import replace
    return credentials.escrow(replace(creds, key_version=version), credentials.operator_pub_of(key))


class _Tx:
    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, *a):
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return False


# ---- the broker's files ------------------------------------------------------------

def write_passwd(broker_dir: Path, reg: Registry) -> Path:
    """Rewrite the box lines of BROKER_DIR/passwd from the registry (atomically): the
    active hash of each box, no line for a revoked one. Lines of users the registry
    does not know (the backend accounts, boxes from before the registry) stay."""
    p = Path(broker_dir) / "passwd"
    try:
        old = p.read_text().splitlines()
        mode = p.stat().st_mode & 0o777
    except OSError as e:
        raise RegistryError(f"cannot read the broker's password file {p}: {e.strerror} "
                        "(give the directory `homebox ops broker-config --out` wrote)") from None
    known = reg.boxes()
    hashes = reg.broker_hashes()
    lines = [ln for ln in old if ln.split(":", 1)[0] not in known]
    lines += [f"{b}:{h}" for b, h in sorted(hashes.items())]
    tmp = p.with_name(p.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, p)
    return p


def reload_broker(reload: int | str | Path | None) -> bool:
    """SIGHUP to the broker (a pid, or a pid file): Mosquitto re-reads its password and
    ACL files and disconnects the clients they no longer admit. False: nothing given."""
    if reload is None or reload == "":
        return False
    try:
        pid = int(reload)
    except (TypeError, ValueError):
        try:
            pid = int(Path(reload).read_text().strip())
        except (OSError, ValueError) as e:
            raise RegistryError(f"--broker-pid {reload}: not a pid nor a pid file ({e})") from None
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as e:
        raise RegistryError(f"cannot signal the broker (pid {pid}): {e.strerror}") from None
    return True


# ---- rotation and revocation ---------------------------------------------------------

def keys_doc(box: str, new: credentials.Credentials, current_key: bytes) -> dict:
    """The desired/keys document that carries `new` to the box (agent/keys.py)."""
    from agent import keys
    from agent.rules import sign
    nonce = os.urandom(16)
    plain = json.dumps({"p": new.mqtt_password, "k": new.hmac_key}, separators=(",", ":")).encode()
    d = {"version": new.key_version, "box": box, "nonce": nonce.hex(),
         "enc": keys.wrap(current_key, nonce, plain).hex()}
    d["sig"] = sign.sign(d, current_key)
    return d


def rotate(reg: Registry, key: bytes, broker, box: str, *, broker_dir: Path | None, reload=None,
           tls_ca: str | None = None, timeout: float = 60.0) -> dict:
    """Give `box` new credentials over MQTT: a signed desired/keys document, the box's
    "applied", the broker's password file and a reload, the box's "confirmed" (it
    connected with the new password). Resumes a pending rotation. Returns
    {"box", "version", "status": "confirmed" | "applied" | "pending", "message"}."""
    from backend import push
    old = reg.credentials(box, key)
    if reg.row(box, "pending"):
        new = reg.credentials(box, key, "pending")
    else:
        new = credentials.generate(box, max(r["version"] for r in reg.versions(box)) + 1, wifi=old.wifi_key)
        reg.add_pending(new, key)
    s = push.Session(broker, box, "keys", tls_ca)
    try:
        if not s.wait(lambda: s.probed or s.refused, min(timeout, 10)) or s.refused:
            raise BrokerRefused(f"the broker refused the connection: {s.refused}") if s.refused \
                else BrokerTimeout("timeout: the broker did not answer")

        def said(*states):
            r = s.reported or {}
            return r.get("version") == new.key_version and r.get("status") in states

        if not said("applied", "confirmed"):
            doc = keys_doc(box, new, bytes.fromhex(old.hmac_key))
            s.publish(json.dumps(doc, separators=(",", ":")).encode())
        deadline = time.monotonic() + timeout
        if not s.wait(lambda: said("applied", "confirmed") or _rejected(s, new.key_version), timeout):
            return {"box": box, "version": new.key_version, "status": "pending",
                    "message": f"no answer from {box} in {timeout:g} s: the key update stays retained; "
                               "run `ops rotate` again to finish"}
        if _rejected(s, new.key_version):
            rj = (s.reported or {}).get("rejected") or {}
            return {"box": box, "version": new.key_version, "status": "rejected",
                    "message": f"{box} refused the key update: {rj.get('field')}: {rj.get('reason')}"}
        reg.activate(box, new.key_version)
        if broker_dir is not None:
            write_passwd(broker_dir, reg)
        reloaded = reload_broker(reload)
        ok = s.wait(lambda: said("confirmed"), max(1.0, deadline - time.monotonic())) if reloaded else said("confirmed")
        if ok:
            s.c.publish(s.t_desired, b"", qos=1, retain=True).wait_for_publish(10)   # nothing left retained
            return {"box": box, "version": new.key_version, "status": "confirmed",
                    "message": f"{box} uses key version {new.key_version}"}
        return {"box": box, "version": new.key_version, "status": "applied",
                "message": f"{box} has key version {new.key_version}; the broker takes it once reloaded"
                           + ("" if reloaded else " (give --broker-pid to reload it)")}
    finally:
        s.close()


def _rejected(s, version: int) -> bool:
    r = s.reported or {}
    return r.get("status") == "rejected" and r.get("version", 0) < version and bool(r.get("rejected"))


def revoke(reg: Registry, box: str, *, broker_dir: Path | None, reload=None, ca_dir: Path | None = None) -> dict:
    """Revoke every key version of `box`: its broker line goes (and its client
    certificate, if it has one, onto the CRL), the broker reloads and drops its
    session; documents can no longer be signed for it."""
    if box not in reg.boxes():
        raise RegistryError(f"{box}: not in the registry")
    n = reg.revoke(box)
    cert = False
    if broker_dir is not None:
        from backend import broker_config
        write_passwd(broker_dir, reg)
        cert = broker_config.revoke_cert(broker_dir, box, ca_dir)
    reloaded = reload_broker(reload)
    return {"box": box, "revoked_versions": n, "broker_reloaded": reloaded, "certificate_revoked": cert,
            "message": f"{box} revoked" + ("" if reloaded else "; reload the broker (SIGHUP) to drop its session")}

