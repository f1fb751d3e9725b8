"""The operator master secret and the per-box credentials derived from it, in
memory only; one module for the bench (flashing/), the backend and the CLI. Nothing here is ever written to the ledger, a log or a report:

    hmac_key       = HMAC-SHA256(master, "homebox-box-key:" + box_id)   (agent/rules/sign.py)
    mqtt_password  = base32(HMAC-SHA256(master, "homebox-mqtt-password:" + box_id))[:26]
    wifi_key       = 16 characters from an unambiguous alphabet, from
                     HMAC-SHA256(master, "homebox-wifi-key:" + box_id), in groups of 4

The derivation is deterministic, so a box that comes back to the bench gets the
same credentials (and the same image: flashing skips what is already there),
and the backend can re-derive any box's key from the master secret alone. The
ledger keeps only the broker's hash of the MQTT password (Mosquitto's $7$).
"""
from __future__ import annotations

import base64
import hashlib
import hmac as _hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from agent.rules import sign

ENV_SECRET = "HOMEBOX_MASTER_SECRET_FILE"
MIN_SECRET = 16
# No 0/o, 1/l/i: read off a sticker and typed on a phone.
WIFI_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
# Mosquitto's default: box passwords are random and high-entropy, and a reconnect
# storm of the whole fleet must not saturate the broker's CPU.
PBKDF2_ITERATIONS = 101


class MasterSecretError(ValueError):
    """No usable operator master secret (unreadable file, too short)."""


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

    def secrets_json(self) -> dict:
        """The box's /secrets.json."""
        return {"mqtt_user": self.box_id, "mqtt_password": self.mqtt_password,
                "hmac_key": self.hmac_key, "wifi_key": self.wifi_key}

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
