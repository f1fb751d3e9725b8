"""Issue 16, ingest survives its database: the connection killed (pg_terminate_backend
from another connection), PostgreSQL stopped and started again, ingest killed -9 and
restarted. Messages stay unacknowledged meanwhile (the broker keeps them), so nothing
is lost at the database: the test counts every seq. Also the /metrics and /healthz
endpoint while the database is away."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.helpers import ROOT, free_port, mqtt_client
from tests.pgserver import ThrowawayPostgres, pg_bindir

BOX = "K"


@pytest.fixture
def pg():
    bindir = pg_bindir()
    if bindir is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL binaries not found (mandatory under CI=true)")
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found: run make setup as root")
    server = ThrowawayPostgres(bindir).start()
    yield server
    server.stop()


def _pg_ctl(server, action: str) -> None:
    opts = f"-h 127.0.0.1 -p {server.port} -k {server.sock} -c fsync=off"
    if action == "stop":
        server._run("pg_ctl", "-D", str(server.data), "-m", "fast", "-w", "stop")
    else:
        server._run("pg_ctl", "-D", str(server.data), "-l", str(server.root / "pg.log"), "-o", opts,
                    "-w", "-t", "60", "start")


def _query(url: str, q: str):
    import psycopg
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as c:
        return c.execute(q).fetchall()


def _stored(url: str) -> int:
    try:
        return _query(url, f"SELECT COUNT(*) FROM messages WHERE box = '{BOX}'")[0][0]
    except Exception:
        return -1


def _wait_stored(url: str, n: int, timeout: float = 30) -> int:
    deadline = time.time() + timeout
    got = _stored(url)
    while time.time() < deadline and got < n:
        time.sleep(0.1)
        got = _stored(url)
    return got


def _metrics(port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {ln.split()[0]: float(ln.split()[1]) for ln in body.splitlines() if ln and not ln.startswith("#")}


def _health(port: int, path: str) -> int:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).status
    except urllib.error.HTTPError as e:
        return e.code


def _env(seq: int) -> str:
    return json.dumps({"v": 1, "box": BOX, "boot": 1, "seq": seq, "ts": 1767225600, "kind": "health",
                       "data": {"fw": "0.1.0", "uptime_s": seq, "outbox_backlog": 0, "outbox_bytes": 0,
                                "outbox_dropped": 0, "reconnects": 0}})


def test_database_killed_restarted_and_ingest_killed_nothing_lost(broker, pg, tmp_path):
    url = pg.url
    log = open(tmp_path / "ingest.log", "wb")

    def start_ingest():
        port = free_port()
        cmd = [sys.executable, "-m", "homebox.cli", "ops", "ingest", "--broker", f"mqtt://127.0.0.1:{broker.port}",
               "--db", url, "--client-id", "ing-outage", "--batch", "50", "--batch-wait", "0.05",
               "--metrics-port", str(port)]
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if _metrics(port)["homebox_ingest_mqtt_connected"] == 1:
                    return p, port
            except (OSError, KeyError):
                pass
            time.sleep(0.1)
        raise AssertionError("ingest did not come up: " + (tmp_path / "ingest.log").read_text())

    pub = mqtt_client(broker.port, client_id="pub-outage", max_inflight=1000)
    pub.loop_start()
    sent = 0

    def send(n: int, rate: float = 0) -> None:
        nonlocal sent
        infos = []
        for _ in range(n):
            sent += 1
            infos.append(pub.publish(f"homebox/v1/{BOX}/telemetry/health", _env(sent), qos=1))
            if rate:
                time.sleep(1 / rate)
        for i in infos:
            i.wait_for_publish(10)

    proc, mport = start_ingest()
    try:
        # 1. running normally
        send(100)
        assert _wait_stored(url, 100) == 100
        # 2. its connection killed from another connection
        killed = _query(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE pid <> pg_backend_pid() AND datname = 'test' AND backend_type = 'client backend'")
        assert killed and all(k for (k,) in killed)
        send(100)
        assert _wait_stored(url, 200) == 200
        assert _metrics(mport)["homebox_ingest_db_reconnects_total"] >= 1
        # 3. PostgreSQL stopped: messages wait, unacknowledged; then started again
        _pg_ctl(pg, "stop")
        send(100)
        deadline = time.time() + 10
        m = _metrics(mport)
        while time.time() < deadline and (m["homebox_ingest_db_up"] == 1 or m["homebox_ingest_pending"] < 100):
            time.sleep(0.1)
            m = _metrics(mport)
        assert m["homebox_ingest_db_up"] == 0 and m["homebox_ingest_pending"] == 100, m
        assert m["homebox_ingest_lag_seconds"] > 0
        assert _health(mport, "/healthz") == 200 and _health(mport, "/readyz") == 503
        assert proc.poll() is None
        _pg_ctl(pg, "start")
        assert _wait_stored(url, 300) == 300
        assert _health(mport, "/readyz") == 200
        # 4. ingest killed -9 while messages flow; more arrive while it is dead
        import threading
        th = threading.Thread(target=send, args=(100, 400))
        th.start()
        time.sleep(0.12)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        th.join(30)
        send(100)
        before = _stored(url)
        proc, mport = start_ingest()
        assert _wait_stored(url, 500) == 500
        # every seq exactly once, no gap
        seqs = [s for (s,) in _query(url, f"SELECT seq FROM messages WHERE box = '{BOX}' ORDER BY seq")]
        assert seqs == list(range(1, 501))
        assert _query(url, "SELECT COUNT(*) FROM gaps")[0][0] == 0
        stored = dict(_query(url, "SELECT name, value FROM counters"))["stored"]
        assert stored == 500
        print(f"killed connection, PostgreSQL restart, kill -9 at {before} stored: 500/500 stored")
    finally:
        pub.loop_stop()
        pub.disconnect()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


def test_broker_restarted_ingest_reconnects_nothing_lost(tmp_path):
    """Mosquitto stopped and started again (its persistence keeps ingest's session):
    ingest reconnects, what was received but not acknowledged is redelivered, every
    seq is stored once."""
    from backend.ingest import Ingest
    from backend.store import Store
    from tests.helpers import Mosquitto
    broker = Mosquitto(tmp_path / "broker", persistence=True).start()
    store = Store(f"sqlite:///{tmp_path}/b.db")
    reader = Store(f"sqlite:///{tmp_path}/b.db")
    ing = Ingest(f"mqtt://127.0.0.1:{broker.port}", store, client_id="ing-brk", batch_size=20,
                 batch_wait=0.05, log=lambda *a: None)
    import threading
    th = threading.Thread(target=ing.run, daemon=True)
    th.start()
    try:
        assert ing.subscribed.wait(10)

        def send(first: int, n: int) -> None:
            c = mqtt_client(broker.port, client_id=f"pub-brk-{first}")
            c.loop_start()
            infos = [c.publish(f"homebox/v1/{BOX}/telemetry/health", _env(s), qos=1)
                     for s in range(first, first + n)]
            for i in infos:
                i.wait_for_publish(10)
            c.disconnect()
            c.loop_stop()

        def stored() -> int:
            return len(reader.seqs(BOX))

        send(1, 50)
        deadline = time.time() + 10
        while time.time() < deadline and stored() < 50:
            time.sleep(0.05)
        broker.stop()
        deadline = time.time() + 10
        while time.time() < deadline and ing.mqtt_connected:
            time.sleep(0.05)
        assert not ing.mqtt_connected
        broker.start()
        deadline = time.time() + 15
        while time.time() < deadline and not ing.mqtt_connected:
            time.sleep(0.05)
        assert ing.mqtt_connected and ing.totals["mqtt_connects"] == 2
        send(51, 50)
        deadline = time.time() + 15
        while time.time() < deadline and stored() < 100:
            time.sleep(0.05)
        assert [s for _b, _o, s in reader.seqs(BOX)] == list(range(1, 101))
        assert th.is_alive()
    finally:
        ing.stop()
        th.join(10)
        store.close()
        reader.close()
        broker.stop()
