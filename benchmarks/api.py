"""Operator API and console benchmark: latency of the main calls and pages at
100,000 synthetic boxes, on SQLite and on PostgreSQL (a throwaway server of the
benchmark's own, tests/pgserver.py).

    python -m benchmarks.api [--boxes 100000] [--n 60] [--db sqlite|postgresql|both]

The store is filled directly (boxes, latest health/speed/coverage per box, an
active alarm on 5% of them and a cleared one on 20% in alarm_log, tags by
building, the inventory with 1% never connected),
then one real server (backend/api.py) answers N sequential requests of each call
from one client on this machine: p50/p95/max in ms. Target (issue 18): p95 <= 200
ms for the API calls, <= 500 ms for the pages.

`run()` returns a dict of figures (used by `make bench`).
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from backend import accounts, campaign, inventory
from backend.alarm_loop import sweep
from backend.api import Api, serve
from backend.store import Store
from tests.pgserver import ThrowawayPostgres, pg_bindir

GOOD = {"excellent": 0.55, "good": 0.3, "fair": 0.1, "weak": 0.05, "unusable": 0.0}


def fill(store: Store, n: int) -> None:
    campaign.ensure_schema(store)
    inventory.ensure_schema(store)
    now = time.time()
    ids = [f"HB-{i:06d}" for i in range(n)]
    seen = ids[: n - n // 100]
    cov = json.dumps({"interval_s": 3600, "samples": 60, "rssi": "ok", "scan": "unsupported",
                      "channel": "unsupported", "stations": [
                          {"id": f"{j:016x}", "assoc_s": 3600, "seen_s": 3600, "bands": GOOD,
                           "signal_strength": {"min": -80, "avg": -60, "max": -45}} for j in range(3)]})
    health = json.dumps({"fw": "0.1.0", "uptime_s": 3600, "outbox_backlog": 0, "outbox_dropped": 0})

    def speed(i):
        return json.dumps({"plan_down_bps": 10_000_000, "ratio_down": 0.6 if i % 50 == 0 else 0.95,
                           "client_limited": False, "bytes": 1, "budget": 1})

    def chunks(rows, k=5000):
        for a in range(0, len(rows), k):
            yield rows[a:a + k]

    def put(q, rows):
        for c in chunks(rows):
            store._tx(lambda cur, c=c: cur.executemany(store._sql(q), c))

    put("INSERT INTO boxes (box, first_seen, last_seen, state, state_boot, fw, state_at) VALUES (?,?,?,?,?,?,?)",
        [(b, now - 86400, now - (i % 600), "offline" if i % 40 == 0 else "online", 1, "0.1.0", now)
         for i, b in enumerate(seen)])
    put("INSERT INTO latest (box, kind, boot, seq, ts, received_at, data) VALUES (?,?,?,?,?,?,?)",
        [(b, k, 1, s, int(now), now, d) for i, b in enumerate(seen)
         for k, s, d in (("health", 1, health), ("coverage", 2, cov), ("speed", 3, speed(i)))])
    put("INSERT INTO alarms (box, code, detail, n, first_at, last_at) VALUES (?,?,?,?,?,?)",
        [(b, "retained_cleared", "a retained message on telemetry/health", 1, now - 3600, now)
         for i, b in enumerate(seen) if i % 20 == 0])
    # the alarms ingest raised: active on 5% of the boxes, and a cleared history on 20%
    put("INSERT INTO alarm_log (box, kind, severity, detail, raised_at, updated_at, cleared_at) VALUES (?,?,?,?,?,?,?)",
        [(b, "slow_line", "warning", "60% of the plan", now - 3600 - i, now - i, None)
         for i, b in enumerate(seen) if i % 20 == 0]
        + [(b, "outbox_backlog", "warning", "80 messages waiting", now - 86400 - i, now - 80000, now - 80000)
           for i, b in enumerate(seen) if i % 5 == 0])
    put("INSERT INTO box_tags (box, tag) VALUES (?,?)", [(b, f"building-{i // 100:04d}") for i, b in enumerate(ids)])
    put("INSERT INTO inventory (box, mac, chip, verdict, tested_at, checks_passed, checks_failed, labelled, "
        "address, building, imported_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        [(b, f"a4:5e:60:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}", "ESP32", "pass",
          now - 30 * 86400, 12, 0, 1, f"{i % 200} rue {i // 200}, Nantes", f"building-{i // 100:04d}", now)
         for i, b in enumerate(ids)])
    # what a running deployment has done by then: the alarm loop's sweep (marks the
    # inventory's connected boxes, raises never_connected) and autovacuum (statistics,
    # and the trigram indexes' pending lists merged)
    sweep(store, now=now)
    if store.dialect == "postgresql":
        store.conn.autocommit = True
        store.conn.execute("VACUUM ANALYZE")
        store.conn.autocommit = False


def _time(url: str, headers: dict, n: int) -> dict:
    ms = []
    for _ in range(n):
        req = urllib.request.Request(url, headers=headers)
        t = time.perf_counter()
        with urllib.request.urlopen(req, timeout=60) as r:
            r.read()
            assert r.status == 200
        ms.append((time.perf_counter() - t) * 1000)
    ms.sort()
    return {"p50_ms": round(ms[len(ms) // 2], 1), "p95_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.95))], 1),
            "max_ms": round(ms[-1], 1)}


CALLS = {
    "api_boxes_page": "/api/v1/boxes?limit=50&after=HB-050000",
    "api_boxes_page_offset": "/api/v1/boxes?limit=50&offset=50000",
    "api_boxes_building": "/api/v1/boxes?tag=building-0420",
    "api_boxes_search": "/api/v1/boxes?q=HB-0420",
    "api_boxes_alarm_any": "/api/v1/boxes?alarm=any&limit=50",
    "api_boxes_never_connected": "/api/v1/boxes?alarm=never_connected&limit=50",
    "api_box_detail": "/api/v1/boxes/HB-042000",
    "api_alarms": "/api/v1/alarms?limit=50",
    "api_alarms_page": "/api/v1/alarms?limit=50&cursor=",      # + the `next` of a page 40 pages in
    "api_alarms_history": "/api/v1/alarms?state=all&kind=outbox_backlog&limit=50",
}
PAGES = {
    "page_search": "/?q=HB-0420",
    "page_box": "/boxes/HB-042000",
    "page_alarms": "/alarms",
}


def measure(url_db: str, boxes: int, n: int) -> dict:
    st = Store(url_db)
    t = time.time()
    fill(st, boxes)
    fill_s = time.time() - t
    accounts.add(st, "bench", "viewer", "bench-password-1", author="bench")
    tok = accounts.new_token(st, "bench", "bench")
    sess = accounts.new_token(st, "bench", "console", kind="session", ttl=3600)
    st.close()
    api = Api(url_db)
    srv = serve(api, "127.0.0.1", 0)
    base = "http://%s:%d" % srv.server_address[:2]
    out: dict = {"boxes": boxes, "fill_s": round(fill_s, 1), "requests_each": n}
    try:
        # a cursor 40 pages into the active alarms (keyset: as fast as the first page)
        cur = ""
        for _ in range(40):
            req = urllib.request.Request(base + "/api/v1/alarms?limit=50&cursor=" + cur,
                                         headers={"Authorization": f"Bearer {tok}"})
            with urllib.request.urlopen(req, timeout=60) as r:
                cur = urllib.parse.quote(json.loads(r.read())["next"] or "")
        for name, path in CALLS.items():
            if name == "api_alarms_page":
                path += cur
            out[name] = _time(base + path, {"Authorization": f"Bearer {tok}"}, n)
        for name, path in PAGES.items():
            out[name] = _time(base + path, {"Cookie": f"hb_session={sess}"}, n)
    finally:
        srv.shutdown()
        srv.server_close()
        api.close()
    # offset paging is kept for old clients, not a main call: `after` (keyset) is
    out["api_p95_max_ms"] = max(out[k]["p95_ms"] for k in CALLS if k != "api_boxes_page_offset")
    out["page_p95_max_ms"] = max(out[k]["p95_ms"] for k in PAGES)
    out["targets_met"] = out["api_p95_max_ms"] <= 200 and out["page_p95_max_ms"] <= 500
    return out


def run(boxes: int = 100_000, n: int = 60, db: str = "both") -> dict:
    kinds = ["sqlite", "postgresql"] if db == "both" else [db]
    out: dict = {"note": "one client, sequential requests, server and database on this machine"}
    work = Path(tempfile.mkdtemp(prefix="hb-bench-api-"))
    server = None
    try:
        for k in kinds:
            if k == "sqlite":
                out["sqlite"] = measure(f"sqlite:///{work}/api.db", boxes, n)
                continue
            bindir = pg_bindir()
            if bindir is None:
                out["postgresql"] = "skipped: PostgreSQL binaries (initdb, pg_ctl) not found"
                continue
            server = ThrowawayPostgres(bindir).start()
            out["postgresql"] = measure(f"{server.url}?schema=bench_{uuid.uuid4().hex[:8]}", boxes, n)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--boxes", type=int, default=100_000)
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--db", default="both", choices=("sqlite", "postgresql", "both"))
    a = ap.parse_args()
    print(json.dumps(run(a.boxes, a.n, a.db), indent=1))
