"""The inventory: every box the bench provisioned, connected or not, with the
address and building the operator adds.

    from backend import inventory
    inventory.import_ledger(store, "bench-ledger.db")          # the bench's SQLite ledger (a copy will do)
    inventory.set_place(store, "HB-000001", address="12 rue X, Nantes", building="tower-B")
    inventory.get(store, "HB-000001")

From the ledger it takes only what is no secret: serial (the box id), MAC, chip,
flash size, the last verdict and test time, how many self-test checks passed and
failed, whether a label was printed. Never the broker hash, the Wi-Fi settings or
the label's content (its QR code holds the Wi-Fi key). Re-importing updates those
fields and keeps the operator's address and building.

A box in the inventory that never connected is listed by the API with the alarm
`never_connected` once GRACE_S have passed since its bench test.

Table (new, additive): inventory.
"""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from backend.errors import OpsError
from backend.store import ensure_tables

GRACE_S = 7 * 86400

COLS = ("box", "mac", "chip", "flash_size", "verdict", "tested_at", "checks_passed", "checks_failed",
        "labelled", "address", "building", "imported_at", "connected_at")


class InventoryError(OpsError):
    pass


def _ddl(store) -> list[str]:
    out = ["""CREATE TABLE IF NOT EXISTS inventory (
        box TEXT PRIMARY KEY, mac TEXT, chip TEXT, flash_size TEXT, verdict TEXT,
        tested_at DOUBLE PRECISION, checks_passed BIGINT, checks_failed BIGINT, labelled BIGINT,
        address TEXT, building TEXT, imported_at DOUBLE PRECISION NOT NULL,
        connected_at DOUBLE PRECISION)""",
           "CREATE INDEX IF NOT EXISTS inventory_building ON inventory (building)"]
    # connected_at (added later): when the box was first seen; NULL while it never
    # was, or not yet marked (mark_connected): the few never-connected boxes are then
    # read from a partial index, not by an anti-join of the whole inventory
    if store.dialect == "postgresql":
        out.append("ALTER TABLE inventory ADD COLUMN IF NOT EXISTS connected_at DOUBLE PRECISION")
    elif store._q("PRAGMA table_info(inventory)") and not any(
            r[1] == "connected_at" for r in store._q("PRAGMA table_info(inventory)")):
        out.append("ALTER TABLE inventory ADD COLUMN connected_at DOUBLE PRECISION")
    out.append("CREATE INDEX IF NOT EXISTS inventory_unconnected ON inventory (box) WHERE connected_at IS NULL")
    return out


def mark_connected(store, cur) -> None:
    """Set connected_at of the inventory's boxes that ingest has seen since (the
    alarm sweep runs it every minute; the queries stay exact without it: a NULL
    only means "check the boxes table")."""
    cur.execute("UPDATE inventory SET connected_at = COALESCE((SELECT b.first_seen FROM boxes b "
                "WHERE b.box = inventory.box), imported_at) WHERE connected_at IS NULL "
                "AND EXISTS (SELECT 1 FROM boxes b WHERE b.box = inventory.box)")


def ensure_schema(store) -> None:
    # trigram indexes (PostgreSQL): the console's search by serial, address or building
    ensure_tables(store, "_inventory_ready", lambda: _ddl(store),
                  lambda st: st.trigram([("inventory", "box"), ("inventory", "address"), ("inventory", "building")]))


def read_ledger(path: str | Path) -> list[dict]:
    """The non-secret inventory fields of every box in a bench ledger (read only)."""
    p = Path(path)
    if not p.is_file():
        raise InventoryError(f"no ledger at {p}")
    try:
        db = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
        db.row_factory = sqlite3.Row
        boxes = db.execute("SELECT serial, mac, chip, flash_size, verdict, updated_at FROM boxes").fetchall()
        out = []
        for b in boxes:
            a = db.execute("SELECT finished_at, label IS NOT NULL AS labelled, checks FROM attempts "
                           "WHERE serial = ? ORDER BY id DESC LIMIT 1", (b["serial"],)).fetchone()
            checks = []
            if a is not None and a["checks"]:
                try:
                    checks = json.loads(a["checks"]) or []
                except ValueError:
                    checks = []
            res = [c.get("status") for c in checks if isinstance(c, dict)]
            out.append({"box": b["serial"], "mac": b["mac"], "chip": b["chip"], "flash_size": b["flash_size"],
                        "verdict": b["verdict"],
                        "tested_at": (a["finished_at"] if a is not None and a["finished_at"] else b["updated_at"]),
                        "checks_passed": res.count("pass"), "checks_failed": res.count("fail"),
                        "labelled": int(bool(a is not None and a["labelled"]))})
        db.close()
    except sqlite3.Error as e:
        raise InventoryError(f"{p}: not a bench ledger ({e})") from None
    return out


def import_rows(store, rows: list[dict]) -> int:
    ensure_schema(store)
    now = time.time()
    q = store._sql(
        "INSERT INTO inventory (box, mac, chip, flash_size, verdict, tested_at, checks_passed, checks_failed, "
        "labelled, imported_at) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT (box) DO UPDATE SET "
        "mac=excluded.mac, chip=excluded.chip, flash_size=excluded.flash_size, verdict=excluded.verdict, "
        "tested_at=excluded.tested_at, checks_passed=excluded.checks_passed, "
        "checks_failed=excluded.checks_failed, labelled=excluded.labelled, imported_at=excluded.imported_at")
    args = [(r["box"], r.get("mac"), r.get("chip"), r.get("flash_size"), r.get("verdict"), r.get("tested_at"),
             int(r.get("checks_passed") or 0), int(r.get("checks_failed") or 0), int(r.get("labelled") or 0), now)
            for r in rows]

    def tx(cur):
        if args:
            cur.executemany(q, args)
            mark_connected(store, cur)
    store._tx(tx)
    return len(args)


def import_ledger(store, path: str | Path) -> int:
    return import_rows(store, read_ledger(path))


def set_place(store, box: str, *, address: str | None = None, building: str | None = None) -> dict:
    ensure_schema(store)
    if not store._q("SELECT 1 FROM inventory WHERE box=?", (box,)):
        raise InventoryError(f"{box!r} is not in the inventory (import the bench ledger first)")
    for what, v in (("address", address), ("building", building)):
        if v is not None:
            if len(v) > 200:
                raise InventoryError(f"{what}: 200 characters at most")
            store._tx(lambda cur, w=what, v=v: cur.execute(
                store._sql(f"UPDATE inventory SET {w}=? WHERE box=?"), (v or None, box)))
    return get(store, box) or {}


def get(store, box: str) -> dict | None:
    ensure_schema(store)
    rows = store._q("SELECT " + ", ".join(COLS) + " FROM inventory WHERE box=?", (box,))
    if not rows:
        return None
    d = dict(zip(COLS, rows[0]))
    d["labelled"] = bool(d["labelled"])
    d.pop("connected_at", None)
    return d
