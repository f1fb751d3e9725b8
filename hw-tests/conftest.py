"""Options of the acceptance suite (see README.md beside this file)."""
from __future__ import annotations

import pytest


def pytest_addoption(parser):
    g = parser.getgroup("homebox", "homebox box acceptance")
    g.addoption("--box-serial", default=None, help="the serial the ledger gave this box")
    g.addoption("--box-mac", default=None, help="the MAC esptool read from this box")
    g.addoption("--bench-broker", default=None,
                help="the bench broker (HOST:PORT, mqtt://HOST:PORT or mqtts://HOST:PORT): the box's self-test "
                     "sends one telemetry message there with its own credentials, and it must arrive")
    g.addoption("--bench-broker-ca", default=None, help="CA certificate of an mqtts:// bench broker")
    g.addoption("--bench-broker-user", default=None,
                help="account that may read the box's telemetry (password: $HOMEBOX_BENCH_BROKER_PASSWORD)")
    g.addoption("--no-reset", action="store_true", help="do not reset the box first (its boot banner is then not checked)")
    g.addoption("--boot-timeout", type=float, default=30.0, help="seconds from reset to the boot banner")


@pytest.fixture(scope="session")
def box_opts(request):
    o = request.config.option
    return {"serial": o.box_serial, "mac": o.box_mac, "broker": o.bench_broker,
            "broker_user": o.bench_broker_user, "broker_ca": o.bench_broker_ca, "reset": not o.no_reset, "boot_timeout": o.boot_timeout}
