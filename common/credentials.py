"""Per-box credentials, in memory only; one module for the bench (flashing/), the
backend and the CLI. Nothing here is ever written in clear to the ledger, a log or
a report (docs/decisions/0013-per-box-secrets.md).

The bench generates each box's secrets at random (`generate`): they go into the box's
image and, sealed to the operator's public key (`seal`: X25519 + HKDF-SHA256 +
ChaCha20-Poly1305), into an escrow record that only the operator's private key opens
(`escrow`, `unseal`). The bench keeps no secret that opens another box. Every set of
credentials carries a key version (`key_version`); the operator's registry
(backend/keys.py) rotates and revokes them.

Legacy, operator side only: the master-secret derivation below (`derive`), kept for
`ops push --master-secret-file` against boxes provisioned before per-box secrets:

    hmac_key       = HMAC-SHA256(master, "homebox-box-key:" + box_id)   (agent/rules/sign.py)
    mqtt_password  = base32(HMAC-SHA256(master, "homebox-mqtt-password:" + box_id))[:26]
    wifi_key       = 16 characters from an unambiguous alphabet, from
                     HMAC-SHA256(master, "homebox-wifi-key:" + box_id), in groups of 4

The ledger keeps only the broker's hash of the MQTT password (Mosquitto's $7$) and
the sealed escrow records.
"""
from __future__ import annotations

import base64
import hashlib
import hmac as _hmac
import json
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from agent.rules import sign

ENV_SECRET = "HOMEBOX_MASTER_SECRET_FILE"
ENV_OPERATOR_PUB = "HOMEBOX_OPERATOR_PUBKEY"     # the bench: the operator's public key (not a secret)
ENV_OPERATOR_KEY = "HOMEBOX_OPERATOR_KEY"        # the operator side: its private key (mode 0600)
SEAL_INFO = b"homebox-escrow-v1"
MIN_SECRET = 16
# No 0/o, 1/l/i: read off a sticker and typed on a phone.
WIFI_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
# Mosquitto's default: box passwords are random and high-entropy, and a reconnect
# storm of the whole fleet must not saturate the broker's CPU.
PBKDF2_ITERATIONS = 101


class MasterSecretError(ValueError):
    """No usable operator master secret or key (unreadable file, too short, readable by others)."""


def check_private(path: Path) -> None:
    """Refuse a secret file that others can read (group or world bits set)."""
    try:
        mode = path.stat().st_mode
    except OSError as e:
        raise MasterSecretError(f"cannot read {path}: {e.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise MasterSecretError(f"{path} is readable by others (mode {stat.S_IMODE(mode):o}): "
                                f"chmod 600 {path}")


def load_master(path: Path | str | None = None, env: dict | None = None) -> bytes | None:
    """The master secret: the file's bytes, surrounding whitespace stripped (as
    `homebox ops push` and `homebox bench run` read it). None when neither the path nor
    $HOMEBOX_MASTER_SECRET_FILE names a file."""
    env = os.environ if env is None else env
    if path is None and env.get(ENV_SECRET):
        path = env[ENV_SECRET]
    if path is None:
        return None
    path = Path(path)
    check_private(path)
    try:
        data = path.read_bytes().strip()
    except OSError as e:
        raise MasterSecretError(f"cannot read the master secret file {path}: {e.strerror}") from None
    if len(data) < MIN_SECRET:
        raise MasterSecretError(f"the master secret in {path} is too short (at least {MIN_SECRET} bytes)")
    return data


def throwaway_master() -> bytes:
    """A random master secret for a virtual run; it is never written anywhere."""
    return secrets.token_hex(32).encode()


def _mac(master: bytes, label: str, box_id: str) -> bytes:
    return _hmac.new(master, (label + box_id).encode(), "sha256").digest()


def wifi_key(master: bytes, box_id: str) -> str:
    n = int.from_bytes(_mac(master, "homebox-wifi-key:", box_id), "big")
    chars = []
    for _ in range(16):
        n, r = divmod(n, len(WIFI_ALPHABET))
        chars.append(WIFI_ALPHABET[r])
    s = "".join(chars)
    return "-".join(s[i:i + 4] for i in range(0, 16, 4))


def mqtt_password(master: bytes, box_id: str) -> str:
    return base64.b32encode(_mac(master, "homebox-mqtt-password:", box_id)).decode().rstrip("=").lower()[:26]


def wifi_ssid(serial: str) -> str:
    return "homebox-" + serial.rsplit("-", 1)[-1].lower()


@dataclass(frozen=True)
class Credentials:
    """One box's secrets. repr() and str() never show them."""
    box_id: str
    wifi_ssid: str
    wifi_key: str = field(repr=False)
    mqtt_password: str = field(repr=False)
    hmac_key: str = field(repr=False)            # hex, as agent/rules/sign.py's Verifier takes it
    key_version: int = 1

    def secrets_json(self) -> dict:
        """The box's /secrets.json."""
        return {"mqtt_user": self.box_id, "mqtt_password": self.mqtt_password,
                "hmac_key": self.hmac_key, "wifi_key": self.wifi_key, "key_version": self.key_version}

    def values(self) -> list[str]:
        return [self.wifi_key, self.mqtt_password, self.hmac_key]


def box_key(master: bytes, box_id: str) -> bytes:
    """The per-box HMAC key that signs desired documents (agent/rules/sign.py)."""
    return sign.box_key(master, box_id)


def derive(master: bytes, box_id: str) -> Credentials:
    return Credentials(box_id=box_id, wifi_ssid=wifi_ssid(box_id), wifi_key=wifi_key(master, box_id),
                       mqtt_password=mqtt_password(master, box_id),
                       hmac_key=box_key(master, box_id).hex())


def mosquitto_hash(password: str, salt: bytes | None = None,
                   iterations: int = PBKDF2_ITERATIONS) -> str:
    """A password-file hash in Mosquitto's $7$ (PBKDF2-HMAC-SHA512) format."""
    salt = salt or os.urandom(12)
    dk = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return "$7$%d$%s$%s" % (iterations, base64.b64encode(salt).decode(), base64.b64encode(dk).decode())


def broker_hash(password: str, previous: str | None = None) -> str:
    """Mosquitto's $7$ hash of the password. Keeps `previous` if it is a hash of
    the same password (a box that comes back keeps its broker entry)."""
    if previous and check_hash(password, previous):
        return previous
    return mosquitto_hash(password)


def check_hash(password: str, h: str) -> bool:
    """Does a Mosquitto $7$ hash match this password?"""
    try:
        _, seven, iters, salt, dk = h.split("$")
        if seven != "7":
            return False
        got = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iters))
        return _hmac.compare_digest(got, base64.b64decode(dk))
    except (ValueError, TypeError):
        return False


# ---- per-box random secrets, sealed to the operator ------------------------------

def random_wifi_key() -> str:
    s = "".join(secrets.choice(WIFI_ALPHABET) for _ in range(16))
    return "-".join(s[i:i + 4] for i in range(0, 16, 4))


def random_mqtt_password() -> str:
    return base64.b32encode(secrets.token_bytes(20)).decode().rstrip("=").lower()[:26]


def generate(box_id: str, key_version: int = 1, wifi: str | None = None) -> Credentials:
    """Fresh random credentials for one box (the bench, and `ops rotate`). `wifi`: keep
    this Wi-Fi key (a rotation does not change the tenant's Wi-Fi)."""
    return Credentials(box_id=box_id, wifi_ssid=wifi_ssid(box_id), wifi_key=wifi or random_wifi_key(),
                       mqtt_password=random_mqtt_password(), hmac_key=secrets.token_bytes(32).hex(),
                       key_version=key_version)


def new_operator_key() -> tuple[bytes, bytes]:
    """(private, public) raw X25519 keys of an operator."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    k = X25519PrivateKey.generate()
    raw = serialization.Encoding.Raw
    return (k.private_bytes(raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()),
            k.public_key().public_bytes(raw, serialization.PublicFormat.Raw))


def _key_text(kind: str, raw: bytes) -> str:
    return f"homebox-operator-{kind}:{base64.b64encode(raw).decode()}\n"


def write_operator_key(directory: Path) -> tuple[Path, Path]:
    """operator.key (mode 0600) and operator.pub in `directory`; refuses to overwrite a key."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    priv_p, pub_p = directory / "operator.key", directory / "operator.pub"
    if priv_p.exists():
        raise MasterSecretError(f"{priv_p} exists: an operator key is never overwritten")
    priv, pub = new_operator_key()
    fd = os.open(priv_p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(_key_text("key", priv))
    pub_p.write_text(_key_text("pub", pub))
    return priv_p, pub_p


def _read_key(path: Path | str, kind: str) -> bytes:
    path = Path(path)
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise MasterSecretError(f"cannot read the operator {kind} file {path}: {e}") from None
    head = f"homebox-operator-{kind}:"
    try:
        if not text.startswith(head):
            raise ValueError
        raw = base64.b64decode(text[len(head):], validate=True)
        if len(raw) != 32:
            raise ValueError
    except ValueError:
        raise MasterSecretError(f"{path} is not a homebox operator {kind} file "
                                f"(`homebox ops keygen` writes one)") from None
    return raw


def load_operator_pub(path: Path | str | None = None, env: dict | None = None) -> bytes | None:
    """The operator's public key (raw X25519), from the path or $HOMEBOX_OPERATOR_PUBKEY."""
    env = os.environ if env is None else env
    path = path or env.get(ENV_OPERATOR_PUB)
    return _read_key(path, "pub") if path else None


def load_operator_key(path: Path | str | None = None, env: dict | None = None) -> bytes | None:
    """The operator's private key (raw X25519), from the path or $HOMEBOX_OPERATOR_KEY;
    refused when others can read the file."""
    env = os.environ if env is None else env
    path = path or env.get(ENV_OPERATOR_KEY)
    if not path:
        return None
    check_private(Path(path))
    return _read_key(path, "key")


def operator_pub_of(priv: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    raw = serialization.Encoding.Raw
    return X25519PrivateKey.from_private_bytes(priv).public_key().public_bytes(raw, serialization.PublicFormat.Raw)


def _seal_key(shared: bytes, eph_pub: bytes, pub: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    return HKDF(hashes.SHA256(), 32, eph_pub + pub, SEAL_INFO).derive(shared)


def seal(pub: bytes, plaintext: bytes, aad: bytes = b"") -> str:
    """Encrypt to the operator's public key: base64(ephemeral public | nonce | ciphertext)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    eph = X25519PrivateKey.generate()
    eph_pub = eph.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key = _seal_key(eph.exchange(X25519PublicKey.from_public_bytes(pub)), eph_pub, pub)
    nonce = os.urandom(12)
    return base64.b64encode(eph_pub + nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, aad)).decode()


def unseal(priv: bytes, blob: str, aad: bytes = b"") -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    try:
        raw = base64.b64decode(blob, validate=True)
        eph_pub, nonce, ct = raw[:32], raw[32:44], raw[44:]
        k = X25519PrivateKey.from_private_bytes(priv)
        key = _seal_key(k.exchange(X25519PublicKey.from_public_bytes(eph_pub)), eph_pub, operator_pub_of(priv))
        return ChaCha20Poly1305(key).decrypt(nonce, ct, aad)
    except (ValueError, InvalidTag):
        raise MasterSecretError("a sealed record does not open with this operator key "
                                "(another operator's key, or a damaged record)") from None


def escrow(creds: Credentials, pub: bytes) -> dict:
    """The record the bench keeps and hands to the operator: the broker hash (not a
    secret: a hash of a random 130-bit password) and the secrets sealed to `pub`."""
    plain = json.dumps({"mqtt_password": creds.mqtt_password, "hmac_key": creds.hmac_key,
                        "wifi_key": creds.wifi_key}, sort_keys=True).encode()
    aad = f"{creds.box_id}:{creds.key_version}".encode()
    return {"box": creds.box_id, "version": creds.key_version, "mqtt_hash": mosquitto_hash(creds.mqtt_password),
            "wifi_ssid": creds.wifi_ssid, "sealed": seal(pub, plain, aad)}


def open_escrow(priv: bytes, rec: dict) -> Credentials:
    """The credentials in an escrow record (the operator's private key opens it)."""
    box, version = rec["box"], int(rec["version"])
    d = json.loads(unseal(priv, rec["sealed"], f"{box}:{version}".encode()))
    return Credentials(box_id=box, wifi_ssid=rec.get("wifi_ssid") or wifi_ssid(box), wifi_key=d["wifi_key"],
                       mqtt_password=d["mqtt_password"], hmac_key=d["hmac_key"], key_version=version)
