"""Fleet reads for the operator's API and console, in SQL and paginated: box
search, one box's detail (with the alarms `ops status` computes, for that box
alone), the alarms list. Errors are HttpError (the API turns them into JSON)."""
from __future__ import annotations

import json
import time

from backend import alarms, campaign, inventory, status
from backend.store import EPOCH_STRIDE, Store

MAX_LIMIT = 500


class HttpError(Exception):
    def __init__(self, code: int, error: str, message: str, extra: dict | None = None):
        super().__init__(message)
        self.code, self.error, self.message, self.extra = code, error, message, extra or {}


# ---- fleet queries (SQL, paginated) ---------------------------------------------------

def page(q: dict) -> tuple[int, int]:
    try:
        limit = int(q.get("limit", 50))
        offset = int(q.get("offset", 0))
    except ValueError:
        raise HttpError(400, "bad_request", "limit and offset are integers") from None
    if not (1 <= limit <= MAX_LIMIT) or offset < 0:
        raise HttpError(400, "bad_request", f"limit in 1..{MAX_LIMIT}, offset >= 0")
    return limit, offset


COUNT_CAP = 10000


def search_boxes(store: Store, q: dict, grace: float = inventory.GRACE_S, now: float | None = None) -> dict:
    """Boxes matching q, a page: every box ingest saw and every box of the inventory.

    q: text in the id, address or building (q), building, tag, plan (the
    options' speed_tier), alarm (a kind of the active alarms, or 'any';
    never_connected: in the inventory, tested more than `grace` s ago, never
    seen), online (true|false); limit; after (keyset paging: the last box of the
    previous page, which `next` gives) or offset.

    The most selective filter drives the query (the alarms, a tag, a building, a
    plan, the text through trigram indexes on PostgreSQL); the others are
    semi-joins on indexes. Only a query over the whole fleet walks the union of
    `boxes` and the inventory, in box order on both primary keys. `total` counts up
    to COUNT_CAP (`total_capped` says when there are more)."""
    campaign.ensure_schema(store)
    inventory.ensure_schema(store)
    now = time.time() if now is None else now
    limit, offset = page(q)
    drive: list[tuple[str, list]] = []        # (a subquery of boxes, its args): the candidates
    where: list[tuple[str, list]] = []        # more conditions on d.box
    never = ("SELECT i.box FROM inventory i WHERE i.connected_at IS NULL AND i.tested_at < ? AND NOT EXISTS "
             "(SELECT 1 FROM boxes b WHERE b.box = i.box)")
    if q.get("alarm"):
        if q["alarm"] == "any":
            drive.append(("SELECT box FROM alarm_log WHERE cleared_at IS NULL UNION " + never, [now - grace]))
        elif q["alarm"] == "never_connected":
            drive.append((never, [now - grace]))
        else:
            drive.append(("SELECT box FROM alarm_log WHERE cleared_at IS NULL AND kind = ?", [q["alarm"]]))
    if q.get("tag"):
        drive.append(("SELECT box FROM box_tags WHERE tag = ?", [q["tag"]]))
    if q.get("building"):
        drive.append(("SELECT box FROM inventory WHERE building = ?", [q["building"]]))
    if q.get("plan"):
        # the plan is the speed_tier of the options document the operator set
        text = "convert_from(payload, 'UTF8')" if store.dialect == "postgresql" else "CAST(payload AS TEXT)"
        drive.append((f"SELECT box FROM desired WHERE section = 'options' AND {text} LIKE ?",
                      ['%"speed_tier":' + json.dumps(q["plan"]).replace("%", "") + "%"]))
    if q.get("q"):
        like = "%" + q["q"].replace("%", "").replace("_", "") + "%"
        if store.dialect == "postgresql":
            # one arm per column: each reads its own trigram index
            drive.append(("SELECT box FROM boxes WHERE box LIKE ? UNION SELECT box FROM inventory WHERE box LIKE ? "
                          "UNION SELECT box FROM inventory WHERE address LIKE ? "
                          "UNION SELECT box FROM inventory WHERE building LIKE ?", [like] * 4))
        else:
            # no trigram index: one scan of each table
            drive.append(("SELECT box FROM boxes WHERE box LIKE ? UNION SELECT box FROM inventory "
                          "WHERE box LIKE ? OR address LIKE ? OR building LIKE ?", [like] * 4))
    if q.get("online") in ("true", "false"):
        where.append(("d.box IN (SELECT box FROM boxes WHERE state = 'online')" if q["online"] == "true"
                      else "d.box NOT IN (SELECT box FROM boxes WHERE state = 'online')", []))
    elif q.get("online"):
        raise HttpError(400, "bad_request", "online: true or false")
    if drive:
        sub, args = drive[0]
        frm = f" FROM ({sub}) d"
        where = [(f"d.box IN ({s2})", a2) for s2, a2 in drive[1:]] + where
    else:
        # the whole fleet: every box ingest saw, then those only the inventory knows
        # (no UNION dedup: an anti-join on the primary key)
        frm = (" FROM (SELECT box FROM boxes UNION ALL SELECT box FROM inventory i0 "
               "WHERE i0.connected_at IS NULL AND NOT EXISTS (SELECT 1 FROM boxes b0 WHERE b0.box = i0.box)) d")
        args = []
    conds = [c for c, _ in where]
    args = list(args) + [x for _, a2 in where for x in a2]
    w = (" WHERE " + " AND ".join(conds)) if conds else ""
    after = q.get("after")
    if after:
        offset = 0
    if drive:
        # the candidates are a set computed whole (a UNION, a join): its count comes
        # with the page, from a window over it, in the same pass
        rows = store._q(f"SELECT box, n FROM (SELECT d.box, COUNT(*) OVER () AS n{frm}{w}) x"
                        + (" WHERE x.box > ?" if after else "") + " ORDER BY x.box LIMIT ? OFFSET ?",
                        tuple(args) + ((after,) if after else ()) + (limit + 1, offset))
        ids = [b for b, _n in rows]
        total = int(rows[0][1]) if rows else None
    else:
        ids = [b for (b,) in store._q(f"SELECT d.box{frm}{w}" + ((" AND " if w else " WHERE ") + "d.box > ?"
                                                                if after else "")
                                      + " ORDER BY d.box LIMIT ? OFFSET ?",
                                      tuple(args) + ((after,) if after else ()) + (limit + 1, offset))]
        total = None
    if total is None:
        # the whole fleet (or a page past the end): count, up to COUNT_CAP
        total = int(store._q(f"SELECT COUNT(*) FROM (SELECT 1{frm}{w} LIMIT ?) t",
                             tuple(args) + (COUNT_CAP + 1,))[0][0])
    more = len(ids) > limit
    ids = ids[:limit]
    items = []
    if ids:
        marks = ",".join("?" * len(ids))
        seen = {r[0]: r[1:] for r in store._q(
            f"SELECT box, state, last_seen, fw, state_boot FROM boxes WHERE box IN ({marks})", tuple(ids))}
        inv = {r[0]: r[1:] for r in store._q(
            f"SELECT box, address, building, tested_at FROM inventory WHERE box IN ({marks})", tuple(ids))}
        nal = {r[0]: int(r[1]) for r in store._q(
            f"SELECT box, COUNT(*) FROM alarm_log WHERE cleared_at IS NULL AND box IN ({marks}) GROUP BY box",
            tuple(ids))}
        for box in ids:
            st, ls, fw, sb = seen.get(box, (None, None, None, None))
            ad, bu, tested = inv.get(box, (None, None, None))
            n = nal.get(box, 0)
            if not n and box not in seen and tested is not None and tested < now - grace:
                n = 1       # never_connected, before the alarm sweep has raised it
            items.append({"box": box, "state": st or ("never_connected" if box not in seen else "unknown"),
                          "last_seen": ls, "fw": fw, "boot": None if sb is None else int(sb) % EPOCH_STRIDE,
                          "address": ad, "building": bu, "alarms": n})
    return {"total": min(total, COUNT_CAP), "total_capped": total > COUNT_CAP, "limit": limit,
            "offset": offset, "next": ids[-1] if more else None, "items": items}


class _OneBox:
    """The store's read methods narrowed to one box, for status.fleet()."""

    def __init__(self, store: Store, box: str):
        self.s, self.box = store, box

    def boxes(self):
        cols = ("box", "first_seen", "last_seen", "state", "state_boot", "fw", "state_at")
        return [dict(zip(cols, r)) for r in self.s._q(
            "SELECT " + ", ".join(cols) + " FROM boxes WHERE box=?", (self.box,))]

    def latest(self):
        return {(self.box, k): {"boot": b, "seq": s, "ts": ts, "received_at": r, "data": json.loads(d)}
                for k, b, s, ts, r, d in self.s._q(
                    "SELECT kind, boot, seq, ts, received_at, data FROM latest WHERE box=?", (self.box,))}

    def reported(self):
        out = {}
        for section, doc, rat in self.s._q("SELECT section, doc, received_at FROM reported WHERE box=?",
                                           (self.box,)):
            d = json.loads(doc)
            d["_received_at"] = rat
            out[section] = d
        return {self.box: out} if out else {}

    def desired_versions(self):
        v = {s: int(x) for s, x in self.s._q("SELECT section, version FROM desired WHERE box=?", (self.box,))}
        return {self.box: v} if v else {}

    def gap_summary(self):
        g = {c: int(n) for c, n in self.s._q(
            "SELECT cause, SUM(last_seq - first_seq + 1) FROM gaps WHERE box=? GROUP BY cause", (self.box,))}
        return {self.box: g} if g else {}

    def alarms(self):
        a = [{"code": c, "detail": d, "n": int(n), "first_at": f, "last_at": la} for c, d, n, f, la in
             self.s._q("SELECT code, detail, n, first_at, last_at FROM alarms WHERE box=? ORDER BY code",
                       (self.box,))]
        return {self.box: a} if a else {}


def box_detail(store: Store, box: str, interval: float = 300, grace: float = inventory.GRACE_S) -> dict:
    one = _OneBox(store, box)
    rows = status.fleet(one, interval=interval)  # type: ignore[arg-type]
    inv = inventory.get(store, box)
    if not rows:
        if inv is None:
            raise HttpError(404, "not_found", f"no box {box!r}")
        # provisioned at the bench, never seen by ingest
        computed = []
        if inv["tested_at"] is not None and time.time() - inv["tested_at"] > grace:
            days = (time.time() - inv["tested_at"]) / 86400
            computed.append({"code": "never_connected",
                           "detail": f"tested at the bench {days:.0f} days ago, never connected"})
        rows = [{"box": box, "state": "never_connected", "boot": None, "epoch": None, "fw": None,
                 "last_seen": None, "silent_s": None, "versions": {}, "desired": {}, "pending": [],
                 "speed_ratio": None, "weak_share": None, "alarms": computed}]
    row = rows[0]
    # the alarms ingest raised (with their id, severity, acknowledgement) first, then
    # those computed on read that it has not (a store older than the lifecycle)
    active, history = alarms.for_box(store, box)
    raised = [{"id": a["id"], "code": a["kind"], "detail": a["detail"], "severity": a["severity"],
               "raised_at": a["raised_at"], "acknowledged_by": a["acknowledged_by"],
               "acknowledged_at": a["acknowledged_at"]} for a in active]
    codes = {a["code"] for a in raised}
    row["alarms"] = raised + [a for a in row["alarms"] if a["code"] not in codes]
    row["alarm_history"] = history
    row["inventory"] = inv
    latest = {k: v for (_, k), v in one.latest().items()}
    desired = []
    for section, version, payload, source in store._q(
            "SELECT section, version, payload, source FROM desired WHERE box=? ORDER BY section", (box,)):
        try:
            doc = json.loads(bytes(payload))
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            doc.pop("sig", None)      # the signature is no secret, but of no use to a reader
        desired.append({"section": section, "version": int(version), "source": source, "document": doc})
    reported = [{"section": s, "version": d.get("version"), "status": d.get("status"), "document":
                 {k: v for k, v in d.items() if not k.startswith("_")}, "received_at": d.get("_received_at")}
                for s, d in sorted(one.reported().get(box, {}).items())]
    campaign.ensure_schema(store)
    tags = [t for (t,) in store._q("SELECT tag FROM box_tags WHERE box=? ORDER BY tag", (box,))]
    row.update({"latest": latest, "desired_documents": desired, "reported_documents": reported,
                "tags": tags})
    return row
