import os
import uuid

import pytest

from tests.helpers import Mosquitto
from tests.pgserver import ThrowawayPostgres, pg_bindir

# tests/onbox/ holds on-box tests that run under both interpreters through
# tests/test_onbox.py, not as pytest modules.
collect_ignore = ["onbox"]


@pytest.fixture
def broker(tmp_path):
    m = Mosquitto(tmp_path / "broker").start()
    yield m
    m.stop()


@pytest.fixture(scope="session")
def pg_server():
    """The tests' own throwaway PostgreSQL server: its base URL. Skips without the
    binaries (make setup installs them as root); under CI=true that is a failure."""
    bindir = pg_bindir()
    if bindir is None:
        reason = ("PostgreSQL binaries (initdb, pg_ctl) not found and not root: "
                  "run make setup as root or apt-get install postgresql")
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (mandatory under CI=true)")
        pytest.skip(reason)
    pg = ThrowawayPostgres(bindir).start()
    yield pg.url
    pg.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A store URL on each backend: a SQLite file, or a schema of its own on the
    throwaway PostgreSQL server (dropped after the test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/backend.db"
        return
    base = request.getfixturevalue("pg_server")
    schema = "hbtest_" + uuid.uuid4().hex[:10]
    yield f"{base}?schema={schema}"
    import psycopg
    with psycopg.connect(base, autocommit=True) as c:
        c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
