"""A year of retention on synthetic data, then the status queries at 100,000 boxes
(issue 16, acceptance), on PostgreSQL (a throwaway server of the benchmark's own).

    python -m benchmarks.retention [--days 400] [--retention 365] [--per-day 500] [--boxes 100000]

1. `days` simulated days, one after the other: each day Store.maintain(now=that
   day) (daily partitions created ahead, those wholly older than `retention` days
   dropped), then `per_day` health messages received that day (one batch through
   classify + Store.write_batch, from `per_day` boxes). Figures: partitions created
   and dropped, the daily partitions left (their first and last day), the messages
   kept and the age of the oldest, the slowest maintain() call.
2. The fleet of benchmarks.api (100,000 boxes: boxes, latest health/coverage/speed,
   alarms, inventory) in the same schema, beside the year of messages. Timed (best
   of 3): the paged status query of the API and console (boxes with an alarm, 50 a
   page, with the total), one box's status (status.fleet for that box alone), and
   `homebox ops status` (status.fleet over every box, alarms derived in Python).

Goal (issue 16): the status query on 100,000 boxes under 1 s.
"""
from __future__ import annotations

import argparse
import json
import time

from backend import fleetq, status
from backend.ingest import classify
from backend.store import DAY, Store, _day
from benchmarks.api import fill
from benchmarks.ingest import _db, _pg_server
from benchmarks.ingest_fleet import _health


def _best(fn, n: int = 3) -> float:
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def year(store: Store, days: int, retention: float, per_day: int) -> dict:
    # from today on (the store made today's partitions and the next ones when it
    # opened; maintain() creates partitions only above the newest bound)
    t0 = _day(time.time()) + 3600
    created = dropped = 0
    slowest = 0.0
    boxes = [f"ret{b:05d}" for b in range(per_day)]
    for d in range(days):
        now = t0 + d * DAY
        t = time.perf_counter()
        done = store.maintain(now=now, retention_days=retention)
        slowest = max(slowest, time.perf_counter() - t)
        created += len(done["created"])
        dropped += len(done["dropped"])
        recs = [classify(f"homebox/v1/{b}/telemetry/health", _health(b, d + 1), received_at=now + i)
                for i, b in enumerate(boxes)]
        c = store.write_batch(recs)
        assert c["stored"] == len(recs), c
    end = t0 + (days - 1) * DAY
    daily = sorted(p["from"] for p in store.partitions() if p["name"].startswith("messages_p"))
    kept, oldest = store._q("SELECT COUNT(*), MIN(received_at) FROM messages")[0]
    return {"days": days, "retention_days": retention, "messages_per_day": per_day,
            "partitions_created": created, "partitions_dropped": dropped,
            "daily_partitions_left": len(daily),
            "first_partition": time.strftime("%Y-%m-%d", time.gmtime(daily[0])) if daily else None,
            "last_partition": time.strftime("%Y-%m-%d", time.gmtime(daily[-1])) if daily else None,
            "messages_kept": int(kept), "messages_written": days * per_day,
            "oldest_kept_days": round((end - float(oldest)) / DAY, 2) if oldest is not None else None,
            "slowest_maintain_ms": round(slowest * 1000, 1)}


def status_queries(store: Store, boxes: int) -> dict:
    t = time.time()
    fill(store, boxes)
    out: dict = {"boxes": boxes, "fill_s": round(time.time() - t, 1)}
    page = fleetq.search_boxes(store, {"alarm": "any", "limit": "50"})
    out["paged_alarm_query_s"] = round(_best(lambda: fleetq.search_boxes(store, {"alarm": "any", "limit": "50"})), 3)
    out["paged_alarm_total"] = page["total"]
    one = f"HB-{boxes * 42 // 100:06d}"
    out["one_box_status_s"] = round(_best(lambda: fleetq.box_detail(store, one)), 3)
    rows: list = []
    out["ops_status_all_boxes_s"] = round(_best(lambda: rows.append(status.fleet(store)), 2), 2)
    out["ops_status_rows"] = len(rows[-1])
    out["goal_status_under_1s"] = out["paged_alarm_query_s"] < 1 and out["one_box_status_s"] < 1
    return out


def run(days: int = 400, retention: float = 365, per_day: int = 500, boxes: int = 100_000) -> dict:
    out: dict = {"goal": "365-day retention: partitions created and dropped; status query on 100,000 boxes < 1 s"}
    kinds = ["postgresql"]
    with _pg_server(kinds, out) as server:
        if server is None:
            return out
        url, drop = _db("postgresql", None, "retention", server.url, "hbret_")
        store = Store(url)
        try:
            t = time.time()
            out["year"] = year(store, days, retention, per_day)
            out["year"]["seconds"] = round(time.time() - t, 1)
            out["status"] = status_queries(store, boxes)
        finally:
            store.close()
            drop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=400)
    ap.add_argument("--retention", type=float, default=365)
    ap.add_argument("--per-day", type=int, default=500)
    ap.add_argument("--boxes", type=int, default=100_000)
    a = ap.parse_args()
    print(json.dumps(run(a.days, a.retention, a.per_day, a.boxes), indent=1))
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main())
