"""Every desired document the backend ever sent, with its author and campaign, and
a box's rollback to an earlier one.

    from backend import history
    history.record(store, "HB-1", "options", 4, payload, author="alice", campaign="lineup-2026")
    history.list_docs(store, "HB-1", "options")      # newest first
    rollback.rollback(broker, store, "HB-1", "options", to_version=2, master=m)   # backend/rollback.py

The `desired` table keeps only the latest document per (box, section); this one
(`desired_history`, a table of its own, created on first use) keeps them all, byte
for byte. A rollback (backend/rollback.py) re-sends an earlier document's content under a new version
(the box refuses a lower version: replay protection), recorded like any push.
"""
from __future__ import annotations

import json
import os
import time

from backend.errors import OpsError
from backend.store import ensure_tables

_DDL = {
    "sqlite": ["""CREATE TABLE IF NOT EXISTS desired_history (
        id INTEGER PRIMARY KEY AUTOINCREMENT, box TEXT NOT NULL, section TEXT NOT NULL,
        version BIGINT NOT NULL, payload BLOB NOT NULL, author TEXT NOT NULL, campaign TEXT,
        created_at DOUBLE PRECISION NOT NULL)"""],
    "postgresql": ["""CREATE TABLE IF NOT EXISTS desired_history (
        id BIGSERIAL PRIMARY KEY, box TEXT NOT NULL, section TEXT NOT NULL,
        version BIGINT NOT NULL, payload BYTEA NOT NULL, author TEXT NOT NULL, campaign TEXT,
        created_at DOUBLE PRECISION NOT NULL)"""],
}
_INDEX = "CREATE INDEX IF NOT EXISTS desired_history_box ON desired_history (box, section, version)"


class NoSuchDocument(OpsError):
    """The history has no document of that version for that box and section."""


def default_author() -> str:
    return os.environ.get("HOMEBOX_AUTHOR") or os.environ.get("USER") or "unknown"


def ensure_schema(store) -> None:
    ensure_tables(store, "_history_ready", lambda: _DDL[store.dialect] + [_INDEX])


def _insert(store, cur, box, section, version, payload, author, campaign) -> None:
    cur.execute(store._sql(
        "INSERT INTO desired_history (box, section, version, payload, author, campaign, created_at) "
        "VALUES (?,?,?,?,?,?,?)"),
        (box, section, int(version), bytes(payload), author or default_author(), campaign, time.time()))


def record(store, box: str, section: str, version: int, payload: bytes, author: str | None = None,
           campaign: str | None = None) -> None:
    """Keep one sent document (call it with the store's put_desired, before publishing)."""
    ensure_schema(store)
    store._tx(lambda cur: _insert(store, cur, box, section, version, payload, author, campaign))


def record_many(store, rows: list[tuple[str, str, int, bytes, str | None, str | None]]) -> None:
    """Several (box, section, version, payload, author, campaign) in one transaction."""
    ensure_schema(store)
    store._tx(lambda cur: [_insert(store, cur, *r) for r in rows])


def list_docs(store, box: str, section: str | None = None, limit: int = 100) -> list[dict]:
    """The documents sent to `box` (one section or all), newest first."""
    ensure_schema(store)
    q = "SELECT id, section, version, payload, author, campaign, created_at FROM desired_history WHERE box=?"
    args: tuple = (box,)
    if section:
        q += " AND section=?"
        args += (section,)
    rows = store._q(q + " ORDER BY id DESC LIMIT ?", args + (limit,))
    return [{"id": i, "box": box, "section": s, "version": int(v), "payload": bytes(p), "author": a,
             "campaign": c, "created_at": t} for i, s, v, p, a, c, t in rows]


def document(store, box: str, section: str, version: int) -> dict:
    """The content of the document sent as `version` (without version, box, sig)."""
    for d in list_docs(store, box, section, limit=1_000_000):
        if d["version"] == version:
            doc = json.loads(d["payload"])
            return {k: v for k, v in doc.items() if k not in ("version", "box", "sig")}
    raise NoSuchDocument(f"no {section} document v{version} was ever sent to {box}")
