"""One parser of a broker address, for every tool that takes one.

Accepted: ``host``, ``host:port``, ``mqtt://[user[:password]@]host[:port]``,
``mqtts://...`` (TLS; also ``tcp://`` and ``ssl://``). Default ports: 1883
(plain) and 8883 (TLS). The password may come from $HOMEBOX_MQTT_PASSWORD.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

PLAIN_PORT = 1883
TLS_PORT = 8883
ENV_PASSWORD = "HOMEBOX_MQTT_PASSWORD"
_PLAIN = ("mqtt", "tcp")
_TLS = ("mqtts", "ssl")


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"


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
    pw = unquote(p.password) if p.password else env.get(ENV_PASSWORD)
    return Broker(host=p.hostname or default_host, port=port or (TLS_PORT if tls else PLAIN_PORT), tls=tls,
                  username=unquote(p.username) if p.username else None, password=pw)
