"""One parser of a broker address, for every tool that takes one.

Accepted: ``host``, ``host:port``, ``mqtt://[user[:password]@]host[:port]``,
``mqtts://...`` (TLS; also ``tcp://`` and ``ssl://``). Default ports: 1883
(plain) and 8883 (TLS). The password may come from $HOMEBOX_MQTT_PASSWORD.

A client certificate instead of a password (the backend's listener of a fleet
broker, docs/decisions/0018-broker-identities.md): ``?cert=PATH`` in the address or
$HOMEBOX_MQTT_CERT, PATH a certificate (its key beside it, .key for .crt) or a
directory of them (one identity each: `homebox ops broker-login` writes one).
The broker then takes the certificate's name as the username.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

PLAIN_PORT = 1883
TLS_PORT = 8883
ENV_PASSWORD = "HOMEBOX_MQTT_PASSWORD"
ENV_CERT = "HOMEBOX_MQTT_CERT"
_PLAIN = ("mqtt", "tcp")
_TLS = ("mqtts", "ssl")


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    # a client certificate (PEM) and its private key: a broker with
    # use_identity_as_username takes the certificate's name as the username
    cert: str | None = None
    key: str | None = None

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def identity(self) -> str | None:
        """Who the broker will see: the certificate, else the username."""
        return self.cert or self.username

    def identities(self) -> list[Broker]:
        """One Broker per identity: a directory of certificates gives one per
        certificate in it (sorted), anything else itself."""
        if not self.cert or not Path(self.cert).is_dir():
            return [self]
        crts = sorted(Path(self.cert).glob("*.crt"))
        if not crts:
            raise ValueError(f"no certificate (*.crt) in {self.cert}")
        return [replace(self, cert=str(c), key=str(c.with_suffix(".key"))) for c in crts]


def parse_broker(url: str, default_host: str = "127.0.0.1", env: dict | None = None) -> Broker:
    """The broker an address names. Raises ValueError on a bad scheme or port."""
    env = os.environ if env is None else env
    url = url.strip()
    if "://" not in url:
        url = "mqtt://" + url
    p = urlsplit(url)
    scheme = p.scheme.lower()
    if scheme not in _PLAIN + _TLS:
        raise ValueError(f"broker URL scheme must be mqtt:// or mqtts://, got {url!r}")
    tls = scheme in _TLS
    try:
        port = p.port
    except ValueError:
        raise ValueError(f"bad port in broker address {url!r}") from None
    if p.path not in ("", "/"):
        raise ValueError(f"a broker address has no path: {url!r}")
    query = parse_qs(p.query)
    if set(query) - {"cert"}:
        raise ValueError(f"a broker address takes only ?cert=PATH: {url!r}")
    cert = query["cert"][-1] if "cert" in query else env.get(ENV_CERT) or None
    key = None
    if cert:
        if not tls:
            raise ValueError(f"a client certificate needs TLS (mqtts://): {url!r}")
        if not Path(cert).exists():
            raise ValueError(f"client certificate {cert}: no such file or directory")
        if not Path(cert).is_dir():
            key = str(Path(cert).with_suffix(".key"))
    # with a certificate, no password from the environment (the broker ignores it)
    pw = unquote(p.password) if p.password else (None if cert else env.get(ENV_PASSWORD))
    return Broker(host=p.hostname or default_host, port=port or (TLS_PORT if tls else PLAIN_PORT), tls=tls,
                  username=unquote(p.username) if p.username else None, password=pw, cert=cert, key=key)
