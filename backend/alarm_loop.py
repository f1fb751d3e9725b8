"""The alarms' own loop, beside ingest or the API server (a thread of its own, with
its own store connection: it never holds up ingest's writes).

    from backend.alarm_loop import AlarmLoop, sweep, deliver_once
    loop = AlarmLoop("sqlite:///fleet.db", webhook="http://alertmanager:9093/hook").start()
    sweep(store, now=time.time(), interval=300, grace=7 * 86400)   # the time-based alarms
    deliver_once(store, "http://127.0.0.1:9000/hook")               # one batch of the outbox

- `sweep`: raises `silent` (no message for 3 telemetry intervals) and
  `never_connected` (in the inventory, bench-tested more than `grace` ago, never
  seen), ends water_leak and declared_drops EXPIRE_S after their last event, drops
  what the outbox could not deliver in OUTBOX_MAX_AGE_S and the cleared history
  older than HISTORY_DAYS.
- `deliver_once`: POSTs the due rows of alarm_outbox as one Alertmanager webhook
  payload (version 4: status firing/resolved, alerts with labels, annotations,
  startsAt/endsAt, fingerprint). A 2xx deletes them; anything else (or no answer)
  puts them back with a backoff doubling from BACKOFF_S to BACKOFF_MAX_S. Rows are
  claimed with a lease (next_at moved ahead), so two loops never send the same row
  at once; delivery is at least once.
"""
from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
import urllib.error
import urllib.request

from backend import alarms, inventory
from backend.store import Store

SWEEP_EVERY_S = 60.0
BACKOFF_S = 1.0
BACKOFF_MAX_S = 300.0
BATCH = 100
POST_TIMEOUT_S = 10.0
OUTBOX_MAX_AGE_S = 7 * 86400
HISTORY_DAYS = 400
ZERO_TIME = "0001-01-01T00:00:00Z"     # Alertmanager's "no end yet"


def sweep(store: Store, now: float | None = None, interval: float = 300.0,
          grace: float = inventory.GRACE_S) -> dict:
    """The alarms that time decides. Returns {"raised": n, "cleared": n}."""
    now = time.time() if now is None else now
    inventory.ensure_schema(store)
    silent_cut, never_cut = now - 3 * interval, now - grace

    def tx(cur):
        inventory.mark_connected(store, cur)
        obs: dict[tuple[str, str], str | None] = {}
        cur.execute(store._sql(
            "SELECT b.box, b.last_seen FROM boxes b WHERE b.last_seen < ? AND NOT EXISTS "
            "(SELECT 1 FROM alarm_log a WHERE a.box = b.box AND a.kind = 'silent' AND a.cleared_at IS NULL)"),
            (silent_cut,))
        for box, last in cur.fetchall():
            obs[(box, "silent")] = f"no message since {_iso(last)}"
        cur.execute(store._sql(
            "SELECT a.box FROM alarm_log a JOIN boxes b ON b.box = a.box WHERE a.kind = 'silent' "
            "AND a.cleared_at IS NULL AND b.last_seen >= ?"), (silent_cut,))
        for (box,) in cur.fetchall():
            obs[(box, "silent")] = None
        cur.execute(store._sql(
            "SELECT i.box, i.tested_at FROM inventory i WHERE i.connected_at IS NULL AND i.tested_at < ? "
            "AND NOT EXISTS (SELECT 1 FROM boxes b WHERE b.box = i.box) AND NOT EXISTS "
            "(SELECT 1 FROM alarm_log a WHERE a.box = i.box AND a.kind = 'never_connected' "
            "AND a.cleared_at IS NULL)"), (never_cut,))
        for box, tested in cur.fetchall():
            obs[(box, "never_connected")] = (f"tested at the bench {(now - tested) / 86400:.0f} days ago "
                                             f"({_iso(tested)}), never connected")
        cur.execute(store._sql(
            "SELECT a.box FROM alarm_log a WHERE a.kind = 'never_connected' AND a.cleared_at IS NULL "
            "AND EXISTS (SELECT 1 FROM boxes b WHERE b.box = a.box)"))
        for (box,) in cur.fetchall():
            obs[(box, "never_connected")] = None
        marks = ",".join("?" * len(alarms.EXPIRING))
        cur.execute(store._sql(f"SELECT box, kind FROM alarm_log WHERE cleared_at IS NULL AND kind IN ({marks}) "
                               "AND updated_at < ?"), (*alarms.EXPIRING, now - alarms.EXPIRE_S))
        for box, kind in cur.fetchall():
            obs[(box, kind)] = None
        done = alarms.apply(store, cur, obs, now)
        cur.execute(store._sql("DELETE FROM alarm_outbox WHERE created_at < ?"), (now - OUTBOX_MAX_AGE_S,))
        cur.execute(store._sql("DELETE FROM alarm_log WHERE cleared_at < ?"), (now - HISTORY_DAYS * 86400,))
        return done
    return store._tx(tx)


def _iso(t) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(t))) if t is not None else ZERO_TIME


def payload(rows: list[dict], external_url: str | None = None) -> dict:
    """The Alertmanager webhook payload (version 4) of outbox rows."""
    alerts = []
    for r in rows:
        labels = {"alertname": r["kind"], "box": r["box"], "severity": r["severity"], "source": "homebox"}
        alerts.append({
            "status": r["status"], "labels": labels,
            "annotations": {"summary": alarms.KINDS.get(r["kind"], ("", r["kind"]))[1], "description": r["detail"]},
            "startsAt": _iso(r["starts_at"]),
            "endsAt": _iso(r["ends_at"]) if r["status"] == "resolved" else ZERO_TIME,
            "generatorURL": f"{external_url.rstrip('/')}/boxes/{r['box']}" if external_url else "",
            "fingerprint": hashlib.sha256(f"{r['box']}\0{r['kind']}\0{r['alarm_id']}".encode()).hexdigest()[:16],
        })
    common = {k: v for k, v in alerts[0]["labels"].items()
              if all(a["labels"].get(k) == v for a in alerts)} if alerts else {}
    return {"version": "4", "groupKey": "{}:{source=\"homebox\"}", "truncatedAlerts": 0,
            "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
            "receiver": "homebox", "groupLabels": {"source": "homebox"}, "commonLabels": common,
            "commonAnnotations": {}, "externalURL": external_url or "", "alerts": alerts}


OUT_COLS = ("id", "alarm_id", "status", "box", "kind", "severity", "detail", "starts_at", "ends_at", "attempts")


def deliver_once(store: Store, url: str, now: float | None = None, *, external_url: str | None = None,
                 backoff: float = BACKOFF_S, backoff_max: float = BACKOFF_MAX_S,
                 timeout: float = POST_TIMEOUT_S, headers: dict | None = None, batch: int = BATCH) -> dict:
    """One batch of the outbox: claim the due rows, POST them, delete them on a 2xx,
    else put them back with a backoff. Returns {"sent": n, "failed": n}."""
    now = time.time() if now is None else now
    lease = now + timeout * 3

    def claim(cur):
        cur.execute(store._sql(
            "UPDATE alarm_outbox SET next_at = ? WHERE next_at <= ? AND id IN "
            "(SELECT id FROM alarm_outbox WHERE next_at <= ? ORDER BY id LIMIT ?) RETURNING "
            + ", ".join(OUT_COLS)), (lease, now, now, batch))
        return [dict(zip(OUT_COLS, r)) for r in cur.fetchall()]
    rows = sorted(store._tx(claim), key=lambda r: r["id"])
    if not rows:
        return {"sent": 0, "failed": 0}
    body = json.dumps(payload(rows, external_url)).encode()
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    error = None
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            if not 200 <= r.status < 300:
                error = f"HTTP {r.status}"
    except urllib.error.HTTPError as e:
        error = f"HTTP {e.code}"
    except (OSError, ValueError) as e:
        error = f"{type(e).__name__}: {e}"[:300]
    ids = [r["id"] for r in rows]
    marks = ",".join("?" * len(ids))
    if error is None:
        store._tx(lambda cur: cur.execute(store._sql(f"DELETE FROM alarm_outbox WHERE id IN ({marks})"), ids))
        return {"sent": len(rows), "failed": 0}
    attempts = max(int(r["attempts"]) for r in rows) + 1
    delay = min(backoff * 2 ** (attempts - 1), backoff_max)
    store._tx(lambda cur: cur.execute(store._sql(
        f"UPDATE alarm_outbox SET attempts = attempts + 1, next_at = ?, last_error = ? WHERE id IN ({marks})"),
        [now + delay, error] + ids))
    return {"sent": 0, "failed": len(rows), "error": error, "retry_in_s": delay}


def outbox(store: Store) -> list[dict]:
    cols = OUT_COLS + ("next_at", "last_error")
    return [dict(zip(cols, r)) for r in store._q("SELECT " + ", ".join(cols) + " FROM alarm_outbox ORDER BY id")]


class AlarmLoop:
    """sweep() every `sweep_every` s, and (with a webhook) the outbox drained as it fills."""

    def __init__(self, db_url: str, *, webhook: str | None = None, interval: float = 300.0,
                 grace: float = inventory.GRACE_S, sweep_every: float = SWEEP_EVERY_S,
                 external_url: str | None = None, backoff: float = BACKOFF_S,
                 backoff_max: float = BACKOFF_MAX_S, poll: float = 1.0, log=None, clock=time.time):
        self.db_url, self.webhook, self.interval, self.grace = db_url, webhook, interval, grace
        self.sweep_every, self.external_url = sweep_every, external_url
        self.backoff, self.backoff_max, self.poll, self.clock = backoff, backoff_max, poll, clock
        self.log = log or (lambda *a: print(*a, file=sys.stderr, flush=True))
        self.stop_event = threading.Event()
        self.totals = {"sweeps": 0, "raised": 0, "cleared": 0, "sent": 0, "failed": 0}
        self.thread: threading.Thread | None = None

    def start(self) -> AlarmLoop:
        self.thread = threading.Thread(target=self._run, name="homebox-alarms", daemon=True)
        self.thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout)

    def _run(self) -> None:
        store = None
        last_sweep = -1e18
        while not self.stop_event.is_set():
            try:
                if store is None:
                    store = Store(self.db_url)
                busy = False
                if time.monotonic() - last_sweep >= self.sweep_every:
                    last_sweep = time.monotonic()
                    d = sweep(store, self.clock(), self.interval, self.grace)
                    self.totals["sweeps"] += 1
                    self.totals["raised"] += d["raised"]
                    self.totals["cleared"] += d["cleared"]
                if self.webhook:
                    r = deliver_once(store, self.webhook, self.clock(), external_url=self.external_url,
                                     backoff=self.backoff, backoff_max=self.backoff_max)
                    self.totals["sent"] += r["sent"]
                    self.totals["failed"] += r["failed"]
                    if r["failed"]:
                        self.log(f"alarms: webhook delivery failed ({r['error']}); retry in {r['retry_in_s']:.0f} s")
                    busy = r["sent"] > 0
                if not busy:
                    self.stop_event.wait(self.poll)
            except Exception as e:          # the database away: a new connection next turn
                self.log(f"alarms: {type(e).__name__}: {str(e)[:200]}")
                if store is not None:
                    store.close()
                store = None
                self.stop_event.wait(min(5.0, self.poll * 5))
        if store is not None:
            store.close()
