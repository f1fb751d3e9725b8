"""Alarms with a lifecycle: raised and cleared by ingest as data arrives, with a
severity, an acknowledgement and a history; thresholds per plan; every raise and
clear queued for the webhook (backend/alarm_loop.py delivers it).

    from backend import alarms
    alarms.list_alarms(store, {"state": "active", "limit": "50"})   # a page, newest first
    alarms.acknowledge(store, 42, "oscar")                          # the API audits it
    alarms.set_thresholds(store, "10M", speed_min_ratio=0.7)        # per plan ('*': default)

One row of `alarm_log` per raise: `cleared_at` is NULL while the alarm is active
(at most one active row per box and kind: a partial unique index), set when the
data says it is over; a later raise is a new row, so the history is kept. Who
clears what:

- the data: slow_line, weak_coverage, tic_errors (the frames since the previous
  consumption report, not since boot), outbox_backlog, sequence_gap, offline
  (the box's status, its last will), update_rejected and signature_rejected
  (the reported documents), silent and never_connected (any live message);
- time (alarm_loop.sweep): water_leak and declared_drops end EXPIRE_S after the
  last event that raised them; silent and never_connected are raised by the sweep;
- an acknowledgement: retained_cleared and boot_counter_reset, which report a
  thing that happened, not a state that can end.

This module runs inside the store's write transaction (Store._write calls
`previous` and `on_batch`), so it does not import the store: it takes it as an
argument (its _sql, _in, _upsert, _q and dialect).

Tables (core schema, backend/store.py): alarm_log, alarm_thresholds, alarm_outbox.
"""
from __future__ import annotations

import json
import math
import time

from backend.readings import (
    SPEED_MIN_RATIO,
    TIC_BAD_MIN,
    TIC_BAD_SHARE,
    _num,
    speed_ratio,
    station_weak_shares,
    tic_counts,
)

# kind: (severity, what it means)
KINDS = {
    "slow_line": ("warning", "line speed below the plan's threshold"),
    "weak_coverage": ("warning", "a device spends too much time in weak or unusable Wi-Fi signal"),
    "tic_errors": ("warning", "the Linky TIC link shows errors"),
    "water_leak": ("critical", "the water meter reported a leak"),
    "outbox_backlog": ("warning", "the box holds messages it could not send"),
    "declared_drops": ("warning", "the box dropped messages from its outbox and said so"),
    "sequence_gap": ("warning", "messages of the box are missing (sequence gaps)"),
    "offline": ("warning", "the box is offline (its status, or its last will)"),
    "silent": ("warning", "no message for more than 3 telemetry intervals"),
    "never_connected": ("warning", "provisioned at the bench, never connected"),
    "update_rejected": ("warning", "the box rejected a desired document"),
    "signature_rejected": ("critical", "the box rejected a desired document's signature"),
    "retained_cleared": ("info", "a retained message where the contract has none (ingest cleared it)"),
    "boot_counter_reset": ("info", "the box's boot counter went back (a re-flash or a new chip)"),
}
SEVERITIES = ("info", "warning", "critical")
EXPIRING = ("water_leak", "declared_drops")
CLEARED_BY_ACK = ("retained_cleared", "boot_counter_reset")
EXPIRE_S = 24 * 3600
# thresholds: column -> default (the '*' row, then these, fill what a plan's row leaves NULL)
THRESHOLDS = {"speed_min_ratio": SPEED_MIN_RATIO, "weak_share": 0.25, "backlog_max": 50,
              "tic_bad_share": TIC_BAD_SHARE, "gap_missing_min": 5}
THRESHOLDS_TTL_S = 30.0
MAX_LIMIT = 500
COLS = ("id", "box", "kind", "severity", "detail", "raised_at", "updated_at", "cleared_at",
        "acknowledged_by", "acknowledged_at")


class AlarmError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def ddl(serial: str) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS alarm_log (
            id {serial}, box TEXT NOT NULL, kind TEXT NOT NULL, severity TEXT NOT NULL,
            detail TEXT NOT NULL, raised_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL, cleared_at DOUBLE PRECISION,
            acknowledged_by TEXT, acknowledged_at DOUBLE PRECISION)""",
        "CREATE UNIQUE INDEX IF NOT EXISTS alarm_log_active ON alarm_log (box, kind) WHERE cleared_at IS NULL",
        "CREATE INDEX IF NOT EXISTS alarm_log_recent ON alarm_log (raised_at, id) WHERE cleared_at IS NULL",
        "CREATE INDEX IF NOT EXISTS alarm_log_history ON alarm_log (raised_at, id)",
        "CREATE INDEX IF NOT EXISTS alarm_log_box ON alarm_log (box, raised_at)",
        """CREATE TABLE IF NOT EXISTS alarm_thresholds (
            plan TEXT PRIMARY KEY, speed_min_ratio DOUBLE PRECISION, weak_share DOUBLE PRECISION,
            backlog_max BIGINT, tic_bad_share DOUBLE PRECISION, gap_missing_min BIGINT,
            updated_at DOUBLE PRECISION NOT NULL)""",
        f"""CREATE TABLE IF NOT EXISTS alarm_outbox (
            id {serial}, alarm_id BIGINT NOT NULL, status TEXT NOT NULL, box TEXT NOT NULL,
            kind TEXT NOT NULL, severity TEXT NOT NULL, detail TEXT NOT NULL,
            starts_at DOUBLE PRECISION NOT NULL, ends_at DOUBLE PRECISION,
            created_at DOUBLE PRECISION NOT NULL, attempts BIGINT NOT NULL DEFAULT 0,
            next_at DOUBLE PRECISION NOT NULL, last_error TEXT)""",
        "CREATE INDEX IF NOT EXISTS alarm_outbox_due ON alarm_outbox (next_at, id)",
    ]


# ---- thresholds per plan ---------------------------------------------------------------

def thresholds(store, cur=None) -> dict[str, dict]:
    """{plan: {column: value}} with the defaults filled in ('*' is the default plan).
    Cached on the store for THRESHOLDS_TTL_S (ingest reads them every batch)."""
    cached = getattr(store, "_alarm_thresholds", None)
    if cached is not None and time.monotonic() - cached[0] < THRESHOLDS_TTL_S:
        return cached[1]
    cols = tuple(THRESHOLDS)
    q = store._sql("SELECT plan, " + ", ".join(cols) + " FROM alarm_thresholds")
    if cur is not None:
        cur.execute(q)
        rows = [tuple(r) for r in cur.fetchall()]
    else:
        rows = store._q(q)
    raw = {r[0]: dict(zip(cols, r[1:])) for r in rows}
    base = dict(THRESHOLDS)
    base.update({k: v for k, v in raw.get("*", {}).items() if v is not None})
    out = {"*": base}
    for plan, vals in raw.items():
        if plan != "*":
            out[plan] = {**base, **{k: v for k, v in vals.items() if v is not None}}
    store._alarm_thresholds = (time.monotonic(), out)
    return out


def set_thresholds(store, plan: str, **values) -> dict:
    """Set a plan's thresholds (None: back to the default). Returns the plan's row."""
    bad = set(values) - set(THRESHOLDS)
    if bad or not plan or len(plan) > 64:
        raise AlarmError(400, f"thresholds: a plan name (64 chars at most) and of {', '.join(THRESHOLDS)}")
    for k, v in values.items():
        if v is not None and (_num(v) is None or not 0 <= v <= 1e9):
            raise AlarmError(400, f"{k}: a number in 0..1e9, or null")
    if "\x00" in plan:
        raise AlarmError(400, "plan: no NUL character")
    cols = tuple(THRESHOLDS)
    now = time.time()

    def tx(cur):
        cur.execute(store._sql("INSERT INTO alarm_thresholds (plan, updated_at) VALUES (?, ?) "
                               "ON CONFLICT (plan) DO NOTHING"), (plan, now))
        for k, v in values.items():
            cur.execute(store._sql(f"UPDATE alarm_thresholds SET {k}=?, updated_at=? WHERE plan=?"), (v, now, plan))
    store._tx(tx)
    store._alarm_thresholds = None
    row = store._q("SELECT " + ", ".join(cols) + " FROM alarm_thresholds WHERE plan=?", (plan,))[0]
    return {"plan": plan, **dict(zip(cols, row)), "effective": thresholds(store).get(plan, thresholds(store)["*"])}


def list_thresholds(store) -> list[dict]:
    cols = tuple(THRESHOLDS)
    eff = thresholds(store)
    rows = store._q("SELECT plan, " + ", ".join(cols) + " FROM alarm_thresholds ORDER BY plan")
    out = [{"plan": r[0], **dict(zip(cols, r[1:])), "effective": eff.get(r[0], eff["*"])} for r in rows]
    if not any(r["plan"] == "*" for r in out):
        out.insert(0, {"plan": "*", **dict.fromkeys(cols), "effective": eff["*"]})
    return out


def _plans(store, cur, boxes: list[str]) -> dict[str, str]:
    """{box: plan}: the speed_tier of the options document the operator set."""
    out = {}
    if not boxes:
        return out
    for box, payload in store._in(cur, "SELECT box, payload FROM desired WHERE section = 'options' "
                                  "AND (box) IN {IN}", "t", [(b,) for b in sorted(boxes)]):
        try:
            tier = json.loads(bytes(payload)).get("speed_tier")
        except (ValueError, AttributeError):
            continue
        if isinstance(tier, str):
            out[box] = tier
    return out


# ---- the rules: observations from one batch ---------------------------------------------

def previous(store, cur, latest: dict) -> dict:
    """Before the batch's `latest` rows are written: the stored (boot, seq) of each
    (box, kind) and the previous consumption data (its counters are since boot: the
    frames between two reports are what tic_errors looks at)."""
    keys = sorted(latest)
    if not keys:
        return {}
    out = {}
    want = set(keys)
    # by box (the primary key's prefix): SQLite scans the table for a (box, kind) IN list
    for box, kind, boot, seq, data in store._in(
            cur, "SELECT box, kind, boot, seq, CASE WHEN kind = 'consumption' THEN data END FROM latest "
                 "WHERE (box) IN {IN}", "t", sorted({(b,) for b, _k in keys})):
        if (box, kind) in want:
            out[(box, kind)] = (int(boot), int(seq), data)
    return out


def _tic_between(prev, data, bad_share: float) -> str | None | bool:
    """tic_errors from the frames since the previous consumption report of the same
    boot: a detail (raise), None (clear), False (no frames: no change)."""
    elec = data.get("elec") if isinstance(data, dict) else None
    if not isinstance(elec, dict):
        return False
    ok, bad, nerr = tic_counts(elec)
    if prev is not None:
        pok, pbad, pnerr = tic_counts(prev.get("elec") if isinstance(prev.get("elec"), dict) else {})
        if ok >= pok and bad >= pbad and nerr >= pnerr:
            ok, bad, nerr = ok - pok, bad - pbad, nerr - pnerr
    if ok + bad == 0 and not nerr:
        return False
    if ok == 0:
        return f"no valid frame since the last report ({bad} bad frames, {nerr} rejected groups)"
    if bad >= TIC_BAD_MIN and bad / (ok + bad) >= bad_share:
        return f"{bad} of {ok + bad} frames bad since the last report"
    if nerr >= TIC_BAD_MIN and nerr / ok >= bad_share:
        return f"{nerr} rejected groups in {ok} frames since the last report"
    return None


def on_batch(store, cur, latest: dict, prev: dict, status_boxes: list[str], reported_boxes: list[str],
             live_boxes: list[str], gap_boxes: list[str], now: float) -> None:
    """Raise and clear the alarms that this batch's data decides (in its transaction).
    latest: {(box, kind): Rec} the newest new message per kind; prev: previous(...)."""
    obs: dict[tuple[str, str], str | None] = {}
    fresh = {}
    for (box, kind), r in latest.items():
        p = prev.get((box, kind))
        if p is None or (r.doc["boot"], r.doc["seq"]) > (p[0], p[1]):
            fresh[(box, kind)] = r
    need_plan = {b for (b, k) in fresh if k in ("coverage", "speed", "health", "consumption")} | set(gap_boxes)
    th_all = thresholds(store, cur) if need_plan else {}
    # the boxes' plans matter only when a plan has thresholds of its own
    plans = _plans(store, cur, sorted(need_plan)) if need_plan and len(th_all) > 1 else {}

    def th(box):
        return th_all.get(plans.get(box, "*"), th_all["*"])
    for (box, kind), r in sorted(fresh.items()):
        data = r.doc.get("data") or {}
        if kind == "coverage":
            shares = station_weak_shares(data)
            if shares:
                worst = max(shares, key=lambda x: x[1])
                obs[(box, "weak_coverage")] = (f"device {worst[0]} weak {worst[1]:.0%} of the time"
                                               if worst[1] > th(box)["weak_share"] else None)
        elif kind == "speed":
            ratio = speed_ratio(data)
            if ratio is not None:
                slow = ratio < th(box)["speed_min_ratio"] and not data.get("client_limited")
                obs[(box, "slow_line")] = f"{ratio:.0%} of the plan" if slow else None
        elif kind == "health":
            backlog = _num(data.get("outbox_backlog"))
            if backlog is not None:
                obs[(box, "outbox_backlog")] = (f"{backlog:.0f} messages waiting in the box's outbox"
                                                if backlog > th(box)["backlog_max"] else None)
        elif kind == "consumption":
            p = prev.get((box, kind))
            pdata = None
            if p is not None and p[0] == r.doc["boot"] and p[2]:
                try:
                    pdata = json.loads(p[2])
                except ValueError:
                    pdata = None
            tic = _tic_between(pdata, data, th(box)["tic_bad_share"])
            if tic is not False:
                obs[(box, "tic_errors")] = tic
        elif kind == "event:water_leak":
            what = ", ".join(f"{k} {v}" for k, v in data.items() if k != "type")[:120]
            obs[(box, "water_leak")] = "leak reported" + (f": {what}" if what else "")
        elif kind == "event:outbox_dropped":
            n = sum(int(x[2]) - int(x[1]) + 1 for x in data.get("ranges") or []
                    if isinstance(x, list) and len(x) == 3 and all(_num(v) is not None for v in x))
            obs[(box, "declared_drops")] = f"the box dropped {n} messages from its outbox"
    for box in live_boxes:
        obs.setdefault((box, "silent"), None)
        obs.setdefault((box, "never_connected"), None)
    if status_boxes:
        for box, state in store._in(cur, "SELECT box, state FROM boxes WHERE (box) IN {IN}", "t",
                                    [(b,) for b in sorted(set(status_boxes))]):
            if state == "offline":
                obs[(box, "offline")] = "the box said it is offline (its status or its last will)"
            elif state == "online":
                obs[(box, "offline")] = None
    if reported_boxes:
        found: dict[str, dict[str, list[str]]] = {b: {"update_rejected": [], "signature_rejected": []}
                                                  for b in set(reported_boxes)}
        for box, section, status, doc in store._in(
                cur, "SELECT box, section, status, doc FROM reported WHERE (box) IN {IN}", "t",
                [(b,) for b in sorted(set(reported_boxes))]):
            if status != "rejected":
                continue
            try:
                rj = json.loads(doc).get("rejected") or {}
            except (ValueError, AttributeError):
                rj = {}
            rj = rj if isinstance(rj, dict) else {}
            kind = "signature_rejected" if rj.get("field") == "sig" else "update_rejected"
            found[box][kind].append(f"{section} v{rj.get('version', '?')}: {rj.get('field', '$')}: "
                                    f"{rj.get('reason', '')}"[:160])
        for box, kinds in found.items():
            for kind, details in kinds.items():
                obs[(box, kind)] = "; ".join(details)[:500] if details else None
    if gap_boxes:
        missing = {b: int(n) for b, n in store._in(
            cur, "SELECT box, SUM(last_seq - first_seq + 1) FROM gaps WHERE cause = 'missing' "
                 "AND (box) IN {IN}", "t", [(b,) for b in sorted(set(gap_boxes))], " GROUP BY box")}
        for box in gap_boxes:
            n = missing.get(box, 0)
            obs[(box, "sequence_gap")] = (f"{n} messages missing" if n >= th(box)["gap_missing_min"] else None)
    apply(store, cur, obs, now)


# ---- raising and clearing ----------------------------------------------------------------

def apply(store, cur, obs: dict[tuple[str, str], str | None], now: float) -> dict:
    """obs {(box, kind): detail to raise, or None to clear}. Only what changes is
    written; a raise or clear also goes into the webhook's outbox. Returns counts."""
    if not obs:
        return {"raised": 0, "cleared": 0}
    # every active alarm of the boxes (few rows: most boxes have none), one IN by box
    active = {(b, k): (int(i), d) for i, b, k, d in store._in(
        cur, "SELECT id, box, kind, detail FROM alarm_log WHERE cleared_at IS NULL AND (box) IN {IN}",
        "t", sorted({(b,) for b, _k in obs}))}
    raise_rows, clear_ids, refresh = [], [], []
    for key, detail in sorted(obs.items()):
        have = active.get(key)
        if detail is not None and have is None:
            raise_rows.append((key[0], key[1], KINDS[key[1]][0], detail[:500], now, now))
        elif detail is not None and (have[1] != detail[:500] or key[1] in EXPIRING):
            refresh.append((detail[:500], now, have[0]))
        elif detail is None and have is not None:
            clear_ids.append((have[0],))
    out = []
    if raise_rows:
        out += [("firing",) + tuple(r) for r in store._upsert(
            cur, "INSERT INTO alarm_log (box, kind, severity, detail, raised_at, updated_at)", "ttttff",
            raise_rows, "ON CONFLICT (box, kind) WHERE cleared_at IS NULL DO NOTHING "
                        "RETURNING id, box, kind, severity, detail, raised_at, cleared_at")]
    if refresh:
        cur.executemany(store._sql("UPDATE alarm_log SET detail=?, updated_at=? WHERE id=?"), refresh)
    if clear_ids:
        out += _clear(store, cur, [i for (i,) in clear_ids], now)
    _enqueue(store, cur, out, now)
    return {"raised": sum(1 for o in out if o[0] == "firing"), "cleared": sum(1 for o in out if o[0] == "resolved")}


def _clear(store, cur, ids: list[int], now: float) -> list[tuple]:
    out = []
    for i in range(0, len(ids), 500):
        part = ids[i:i + 500]
        cur.execute(store._sql("UPDATE alarm_log SET cleared_at = ?, updated_at = ? WHERE cleared_at IS NULL AND id IN ("
                               + ",".join("?" * len(part)) + ") RETURNING id, box, kind, severity, detail, "
                               "raised_at, cleared_at"), [now, now] + part)
        out += [("resolved",) + tuple(r) for r in cur.fetchall()]
    return out


def _enqueue(store, cur, rows: list[tuple], now: float) -> None:
    """rows: (status, id, box, kind, severity, detail, raised_at, cleared_at)."""
    if rows:
        store._upsert(cur, "INSERT INTO alarm_outbox (alarm_id, status, box, kind, severity, detail, starts_at, "
                           "ends_at, created_at, next_at)", "bttttt" + "ffff",
                      [(int(i), st, b, k, sv, d, float(ra), None if ca is None else float(ca), now, now)
                       for st, i, b, k, sv, d, ra, ca in rows], "")


def note(store, cur, box: str, kind: str, detail: str, now: float) -> None:
    """An alarm of a thing that happened (retained_cleared, boot_counter_reset):
    raised if not active (cleared by an acknowledgement)."""
    apply(store, cur, {(box, kind): detail}, now)


# ---- reading, acknowledging --------------------------------------------------------------

def _row(r) -> dict:
    d = dict(zip(COLS, r))
    d["id"] = int(d["id"])
    d["code"] = d["kind"]
    d["active"] = d["cleared_at"] is None
    return d


def get(store, alarm_id: int) -> dict | None:
    rows = store._q("SELECT " + ", ".join(COLS) + " FROM alarm_log WHERE id=?", (int(alarm_id),))
    return _row(rows[0]) if rows else None


def for_box(store, box: str, history: int = 20) -> tuple[list[dict], list[dict]]:
    """(the box's active alarms, its last `history` alarms, cleared ones included)."""
    act = [_row(r) for r in store._q("SELECT " + ", ".join(COLS) + " FROM alarm_log WHERE box=? "
                                     "AND cleared_at IS NULL ORDER BY raised_at DESC, id DESC", (box,))]
    hist = [_row(r) for r in store._q("SELECT " + ", ".join(COLS) + " FROM alarm_log WHERE box=? "
                                      "ORDER BY raised_at DESC, id DESC LIMIT ?", (box, history))]
    return act, hist


def acknowledge(store, alarm_id: int, author: str, now: float | None = None) -> dict:
    """Record who acknowledged an alarm (the caller audits it). An alarm of a thing
    that happened (CLEARED_BY_ACK) is cleared by it."""
    now = time.time() if now is None else now

    def tx(cur):
        cur.execute(store._sql("SELECT " + ", ".join(COLS) + " FROM alarm_log WHERE id=?"), (int(alarm_id),))
        row = cur.fetchone()
        if row is None:
            raise AlarmError(404, f"no alarm {alarm_id}")
        a = _row(row)
        if a["acknowledged_at"] is not None:
            raise AlarmError(409, f"alarm {alarm_id} was acknowledged by {a['acknowledged_by']}")
        cur.execute(store._sql("UPDATE alarm_log SET acknowledged_by=?, acknowledged_at=? WHERE id=?"),
                    (author, now, a["id"]))
        if a["active"] and a["kind"] in CLEARED_BY_ACK:
            _enqueue(store, cur, _clear(store, cur, [a["id"]], now), now)
    store._tx(tx)
    return get(store, alarm_id) or {}


def _bool(q: dict, k: str) -> bool | None:
    v = q.get(k)
    if v in (None, ""):
        return None
    if v not in ("true", "false"):
        raise AlarmError(400, f"{k}: true or false")
    return v == "true"


def list_alarms(store, q: dict, count_cap: int = 10000) -> dict:
    """A page of alarms, newest raise first, from the alarm_log table.

    q: state (active, the default | cleared | all), kind (or code), severity, box,
    acknowledged (true|false); limit; cursor (the `next` of the previous page:
    keyset paging, every page as fast as the first) or offset. `total` counts up to
    `count_cap` rows (`total_capped` says when there are more)."""
    try:
        limit = int(q.get("limit", 50))
        offset = int(q.get("offset", 0))
    except ValueError:
        raise AlarmError(400, "limit and offset are integers") from None
    if not (1 <= limit <= MAX_LIMIT) or offset < 0:
        raise AlarmError(400, f"limit in 1..{MAX_LIMIT}, offset >= 0")
    if any("\x00" in v for v in q.values() if isinstance(v, str)):
        raise AlarmError(400, "no NUL character in a query parameter")
    state = q.get("state") or "active"
    where, args = [], []
    if state == "active":
        where.append("cleared_at IS NULL")
    elif state == "cleared":
        where.append("cleared_at IS NOT NULL")
    elif state != "all":
        raise AlarmError(400, "state: active, cleared or all")
    kind = q.get("kind") or q.get("code")
    if kind:
        where.append("kind = ?")
        args.append(kind)
    if q.get("severity"):
        if q["severity"] not in SEVERITIES:
            raise AlarmError(400, f"severity: {', '.join(SEVERITIES)}")
        where.append("severity = ?")
        args.append(q["severity"])
    if q.get("box"):
        where.append("box = ?")
        args.append(q["box"])
    ack = _bool(q, "acknowledged")
    if ack is not None:
        where.append("acknowledged_at IS NOT NULL" if ack else "acknowledged_at IS NULL")
    w = (" WHERE " + " AND ".join(where)) if where else ""
    total = int(store._q(f"SELECT COUNT(*) FROM (SELECT 1 FROM alarm_log{w} LIMIT ?) t",
                         tuple(args) + (count_cap + 1,))[0][0])
    page_where, page_args = list(where), list(args)
    if q.get("cursor"):
        try:
            t, i = q["cursor"].split(":")
            t_, i_ = float(t), int(i)
            if not (math.isfinite(t_) and 0 <= i_ < 2 ** 62):
                raise ValueError
        except ValueError:
            raise AlarmError(400, "cursor: the `next` of the previous page") from None
        page_where.append("(raised_at < ? OR (raised_at = ? AND id < ?))")
        page_args += [t_, t_, i_]
        offset = 0
    pw = (" WHERE " + " AND ".join(page_where)) if page_where else ""
    rows = store._q("SELECT " + ", ".join(COLS) + f" FROM alarm_log{pw} ORDER BY raised_at DESC, id DESC "
                    "LIMIT ? OFFSET ?", tuple(page_args) + (limit + 1, offset))
    items = [_row(r) for r in rows[:limit]]
    nxt = f"{items[-1]['raised_at']!r}:{items[-1]['id']}" if len(rows) > limit else None
    return {"total": min(total, count_cap), "total_capped": total > count_cap, "limit": limit,
            "offset": offset, "next": nxt, "items": items}


def counts(store) -> dict[str, int]:
    """Active alarms by kind (one GROUP BY over the partial index)."""
    return {k: int(n) for k, n in store._q(
        "SELECT kind, COUNT(*) FROM alarm_log WHERE cleared_at IS NULL GROUP BY kind ORDER BY kind")}
