"""Fleet reads for the operator's API and console, in SQL and paginated: box
search, one box's detail (with the alarms `ops status` computes, for that box
alone), the alarms list. Errors are HttpError (the API turns them into JSON)."""
from __future__ import annotations

import json
import time

from backend import campaign, inventory, status
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


def search_boxes(store: Store, q: dict, grace: float = inventory.GRACE_S, now: float | None = None) -> dict:
    """Boxes matching q, a page: every box ingest saw and every box of the inventory.

    q: text in the id, address or building (q), building, tag, plan (the
    options' speed_tier), alarm (a code, 'any'; never_connected: in the inventory,
    tested more than `grace` s ago, never seen), online (true|false)."""
    campaign.ensure_schema(store)
    inventory.ensure_schema(store)
    now = time.time() if now is None else now
    never = "(u.seen = 0 AND u.box IN (SELECT box FROM inventory WHERE tested_at < ?))"
    where, args = [], []
    if q.get("q"):
        like = "%" + q["q"].replace("%", "").replace("_", "") + "%"
        where.append("(u.box LIKE ? OR u.box IN (SELECT box FROM inventory WHERE address LIKE ? OR building LIKE ?))")
        args += [like, like, like]
    if q.get("building"):
        where.append("u.box IN (SELECT box FROM inventory WHERE building = ?)")
        args.append(q["building"])
    if q.get("online") in ("true", "false"):
        where.append("u.box IN (SELECT box FROM boxes WHERE state = 'online')" if q["online"] == "true"
                     else "u.box NOT IN (SELECT box FROM boxes WHERE state = 'online')")
    elif q.get("online"):
        raise HttpError(400, "bad_request", "online: true or false")
    if q.get("tag"):
        where.append("u.box IN (SELECT box FROM box_tags WHERE tag = ?)")
        args.append(q["tag"])
    if q.get("alarm"):
        if q["alarm"] == "any":
            where.append(f"(u.box IN (SELECT box FROM alarms) OR {never})")
            args.append(now - grace)
        elif q["alarm"] == "never_connected":
            where.append(never)
            args.append(now - grace)
        else:
            where.append("u.box IN (SELECT box FROM alarms WHERE code = ?)")
            args.append(q["alarm"])
    if q.get("plan"):
        # the plan is the speed_tier of the options document the operator set
        text = "convert_from(d.payload, 'UTF8')" if store.dialect == "postgresql" else "CAST(d.payload AS TEXT)"
        where.append(f"u.box IN (SELECT d.box FROM desired d WHERE d.section = 'options' AND {text} LIKE ?)")
        args.append('%"speed_tier":' + json.dumps(q["plan"]).replace("%", "") + "%")
    limit, offset = page(q)
    # the universe: every box ingest saw, then those only the inventory knows (no
    # UNION dedup: an anti-join on the primary key); each filter a subquery on an index
    frm = (" FROM (SELECT box, 1 AS seen FROM boxes UNION ALL SELECT box, 0 AS seen FROM inventory i0 "
           "WHERE NOT EXISTS (SELECT 1 FROM boxes b0 WHERE b0.box = i0.box)) u")
    w = (" WHERE " + " AND ".join(where)) if where else ""
    total = int(store._q("SELECT COUNT(*)" + frm + w, tuple(args))[0][0])
    ids = [b for (b,) in store._q("SELECT u.box" + frm + w + " ORDER BY u.box LIMIT ? OFFSET ?",
                                  tuple(args) + (limit, offset))]
    items = []
    if ids:
        marks = ",".join("?" * len(ids))
        seen = {r[0]: r[1:] for r in store._q(
            f"SELECT box, state, last_seen, fw, state_boot FROM boxes WHERE box IN ({marks})", tuple(ids))}
        inv = {r[0]: r[1:] for r in store._q(
            f"SELECT box, address, building, tested_at FROM inventory WHERE box IN ({marks})", tuple(ids))}
        nal = {r[0]: int(r[1]) for r in store._q(
            f"SELECT box, COUNT(*) FROM alarms WHERE box IN ({marks}) GROUP BY box", tuple(ids))}
        for box in ids:
            st, ls, fw, sb = seen.get(box, (None, None, None, None))
            ad, bu, tested = inv.get(box, (None, None, None))
            n = nal.get(box, 0) + (1 if box not in seen and tested is not None and tested < now - grace else 0)
            items.append({"box": box, "state": st or ("never_connected" if box not in seen else "unknown"),
                          "last_seen": ls, "fw": fw, "boot": None if sb is None else int(sb) % EPOCH_STRIDE,
                          "address": ad, "building": bu, "alarms": n})
    return {"total": total, "limit": limit, "offset": offset, "items": items}


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
        alarms = []
        if inv["tested_at"] is not None and time.time() - inv["tested_at"] > grace:
            days = (time.time() - inv["tested_at"]) / 86400
            alarms.append({"code": "never_connected",
                           "detail": f"tested at the bench {days:.0f} days ago, never connected"})
        rows = [{"box": box, "state": "never_connected", "boot": None, "epoch": None, "fw": None,
                 "last_seen": None, "silent_s": None, "versions": {}, "desired": {}, "pending": [],
                 "speed_ratio": None, "weak_share": None, "alarms": alarms}]
    row = rows[0]
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


def list_alarms(store: Store, q: dict) -> dict:
    limit, offset = page(q)
    where, args = "", ()
    if q.get("code"):
        where, args = " WHERE code=?", (q["code"],)
    total = int(store._q("SELECT COUNT(*) FROM alarms" + where, args)[0][0])
    rows = store._q("SELECT box, code, detail, n, first_at, last_at FROM alarms" + where
                    + " ORDER BY last_at DESC, box LIMIT ? OFFSET ?", args + (limit, offset))
    return {"total": total, "limit": limit, "offset": offset,
            "items": [{"box": b, "code": c, "detail": d, "n": int(n), "first_at": f, "last_at": la}
                      for b, c, d, n, f, la in rows]}
