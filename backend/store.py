"""The backend's store: one schema on SQLite (the embedded default) and PostgreSQL.

A thin layer over DB-API connections, no ORM. URLs:

    sqlite:///relative/path.db   sqlite:////absolute/path.db   (or a bare path)
    postgresql://user@host:5432/dbname[?schema=NAME]

`?schema=NAME` (PostgreSQL only) keeps the tables in their own schema, created on
first use; any other query parameters go to libpq unchanged.

Tables (same columns on both engines):

- messages   every telemetry and event envelope once. Duplicates are decided from the
             stream's row in `streams` (the stream holds 1..max_seq minus its gaps), not
             by a key: on PostgreSQL the table is partitioned by day of received_at
             (messages_pYYYYMMDD, messages_default; see maintain() for retention).
- streams    one row per (box, boot): highest seq seen and how many distinct seqs.
- gaps       missing seq ranges per (box, boot), with cause 'missing' (not known why)
             or 'dropped' (the box said so in an outbox_dropped event).
- drops      the ranges boxes declared dropped.
- latest     the newest message per (box, kind) and per (box, 'event:' + type).
- boxes      last seen, and state/boot/fw from the retained status topic (its LWT).
- reported   the newest reported document per (box, section).
- desired    the desired documents the backend wants each box to have (payload kept
             byte for byte, so `reconcile` republishes exactly what was pushed).
- quarantine payloads that broke the contract or that the store could not hold, with
             the reasons; bounded per box and by age (QUARANTINE_PER_BOX, QUARANTINE_MAX_AGE).
- counters   running totals: received, stored, duplicates, invalid, ...
- alarms     what ingest saw a box do wrong, per (box, code): e.g. retained_cleared
             (a retained message where the contract has none, which ingest cleared).
- alarm_log, alarm_thresholds, alarm_outbox: the alarms with a lifecycle, which
             write_batch raises and clears in its transaction (backend/alarms.py).
- epochs     per box, its incarnation (epoch) and the highest boot counter seen in
             it. A box whose boot counter went back (a filesystem re-flash of a box
             without NVS, a replaced chip) starts a new epoch when a message comes
             with a (boot, seq) already stored with another kind/ts/data: alarm
             `boot_counter_reset`. (An online status with a lower boot alone is
             taken for a late one, as before.) Messages identical to stored ones
             are duplicates: a reset is seen at its first differing message.

The boot column of messages, streams, gaps, drops, latest and boxes.state_boot holds
the *stored boot*: epoch * EPOCH_STRIDE + the box's boot counter (epoch 0: the
counter itself), so the dedup key (box, boot, seq) includes the epoch and a newer
incarnation orders after an older one. A redelivered duplicate (same content) is
still counted once.

`write_batch` applies one batch of ingested records in one transaction; the caller
acknowledges the MQTT messages only after it returns.
It is set-based: a statement per table per batch (COPY into messages on PostgreSQL,
unnest() arrays for the upserts; multi-row VALUES on SQLite).
"""
from __future__ import annotations

import bisect
import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from backend import alarms

COUNTERS = ("received", "stored", "duplicates", "invalid", "status", "reported", "desired", "poison")
# Quarantine is bounded: the newest QUARANTINE_PER_BOX rows per box, none older than
# QUARANTINE_MAX_AGE seconds (a box that sends only garbage cannot fill the database).
QUARANTINE_PER_BOX = 100
QUARANTINE_MAX_AGE = 30 * 86400
# Errors of quarantined records that the store itself could not hold start with this.
POISON = "ingest: "
GAP_CAUSES = ("missing", "dropped")
# The stored boot of a box's incarnation `epoch`: epoch * EPOCH_STRIDE + boot counter.
EPOCH_STRIDE = 1_000_000_000
DAY = 86400
# Messages are kept RETENTION_DAYS (a year and a month: a year of plots, and time to
# look at last year's month), in daily partitions on PostgreSQL created this many days ahead.
RETENTION_DAYS = 400
PARTITIONS_AHEAD = 3
MESSAGES_PG = """CREATE TABLE IF NOT EXISTS messages (
    box TEXT NOT NULL, boot BIGINT NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL,
    ts BIGINT, received_at DOUBLE PRECISION NOT NULL, stored_at DOUBLE PRECISION NOT NULL,
    data TEXT NOT NULL) PARTITION BY RANGE (received_at)"""
# Rows per multi-row statement (well under both engines' parameter limits).
CHUNK = 1000
# How long before its stream's first write a message may have been received
# (pending through a database outage): bounds the duplicate lookup in time.
RECEIVED_MARGIN = 7 * 86400


@dataclass
class Rec:
    """One ingested MQTT message, classified.

    what: 'msg' (telemetry or event envelope), 'status', 'reported', 'desired' or 'invalid'.
    """

    what: str
    topic: str
    payload: bytes
    box: str | None = None
    doc: dict | None = None
    section: str | None = None
    errors: list[str] = field(default_factory=list)
    retained: bool = False
    received_at: float = field(default_factory=time.time)


class StoreError(RuntimeError):
    pass


def _schema(blob: str, serial: str) -> list[str]:
    return [
        """CREATE TABLE IF NOT EXISTS messages (
            box TEXT NOT NULL, boot BIGINT NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL,
            ts BIGINT, received_at DOUBLE PRECISION NOT NULL, stored_at DOUBLE PRECISION NOT NULL,
            data TEXT NOT NULL, PRIMARY KEY (box, boot, seq))""",
        "CREATE INDEX IF NOT EXISTS messages_box_kind ON messages (box, kind)",
        """CREATE TABLE IF NOT EXISTS streams (
            box TEXT NOT NULL, boot BIGINT NOT NULL, max_seq BIGINT NOT NULL, n BIGINT NOT NULL,
            first_at DOUBLE PRECISION NOT NULL, last_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (box, boot))""",
        """CREATE TABLE IF NOT EXISTS gaps (
            box TEXT NOT NULL, boot BIGINT NOT NULL, first_seq BIGINT NOT NULL,
            last_seq BIGINT NOT NULL, cause TEXT NOT NULL, detected_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (box, boot, first_seq))""",
        """CREATE TABLE IF NOT EXISTS drops (
            box TEXT NOT NULL, boot BIGINT NOT NULL, first_seq BIGINT NOT NULL,
            last_seq BIGINT NOT NULL, reported_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (box, boot, first_seq))""",
        """CREATE TABLE IF NOT EXISTS latest (
            box TEXT NOT NULL, kind TEXT NOT NULL, boot BIGINT NOT NULL, seq BIGINT NOT NULL,
            ts BIGINT, received_at DOUBLE PRECISION NOT NULL, data TEXT NOT NULL,
            PRIMARY KEY (box, kind))""",
        """CREATE TABLE IF NOT EXISTS boxes (
            box TEXT PRIMARY KEY, first_seen DOUBLE PRECISION, last_seen DOUBLE PRECISION,
            state TEXT, state_boot BIGINT, fw TEXT, state_at DOUBLE PRECISION)""",
        """CREATE TABLE IF NOT EXISTS reported (
            box TEXT NOT NULL, section TEXT NOT NULL, version BIGINT NOT NULL, status TEXT,
            doc TEXT NOT NULL, received_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (box, section))""",
        f"""CREATE TABLE IF NOT EXISTS desired (
            box TEXT NOT NULL, section TEXT NOT NULL, version BIGINT NOT NULL,
            payload {blob} NOT NULL, source TEXT NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (box, section))""",
        f"""CREATE TABLE IF NOT EXISTS quarantine (
            id {serial}, topic TEXT NOT NULL, box TEXT, payload {blob} NOT NULL,
            errors TEXT NOT NULL, received_at DOUBLE PRECISION NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS quarantine_box ON quarantine (box, id)",
        "CREATE INDEX IF NOT EXISTS quarantine_age ON quarantine (received_at)",
        "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
        """CREATE TABLE IF NOT EXISTS alarms (
            box TEXT NOT NULL, code TEXT NOT NULL, detail TEXT NOT NULL, n BIGINT NOT NULL,
            first_at DOUBLE PRECISION NOT NULL, last_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (box, code))""",
        """CREATE TABLE IF NOT EXISTS epochs (
            box TEXT PRIMARY KEY, epoch BIGINT NOT NULL, top_boot BIGINT NOT NULL,
            changed_at DOUBLE PRECISION)""",
    ] + alarms.ddl(serial)


def _day(t: float) -> int:
    """The start of t's UTC day (epoch s)."""
    return int(t // DAY * DAY)


def _dumps(data) -> str:
    return json.dumps(data, separators=(",", ":"))


def _in_gaps(rows: list[tuple], s: int) -> bool:
    """Is seq s in one of a stream's gap rows (first, last, cause), sorted?"""
    i = bisect.bisect_right(rows, (s, float("inf"))) - 1
    return i >= 0 and rows[i][0] <= s <= rows[i][1]


def _split_ranges(intervals: list[tuple[int, int]], drops: list[tuple[int, int]]):
    """Label each missing interval's parts: 'dropped' where a drop range covers it."""
    out = []
    drops = sorted(drops)
    for a, b in sorted(intervals):
        cur = a
        for da, db in drops:
            if db < cur or da > b:
                continue
            if da > cur:
                out.append((cur, da - 1, "missing"))
            lo, hi = max(da, cur), min(db, b)
            out.append((lo, hi, "dropped"))
            cur = hi + 1
            if cur > b:
                break
        if cur <= b:
            out.append((cur, b, "missing"))
    # merge neighbours with the same cause
    merged: list[tuple[int, int, str]] = []
    for a, b, c in out:
        if merged and merged[-1][2] == c and merged[-1][1] + 1 == a:
            merged[-1] = (merged[-1][0], b, c)
        else:
            merged.append((a, b, c))
    return merged


def _remove_seq(intervals: list[tuple[int, int]], s: int) -> list[tuple[int, int]]:
    out = []
    for a, b in intervals:
        if a <= s <= b:
            if a <= s - 1:
                out.append((a, s - 1))
            if s + 1 <= b:
                out.append((s + 1, b))
        else:
            out.append((a, b))
    return out


class Store:
    def __init__(self, url: str, quarantine_per_box: int = QUARANTINE_PER_BOX,
                 quarantine_max_age: float = QUARANTINE_MAX_AGE):
        self.url = url
        self.quarantine_per_box = quarantine_per_box
        self.quarantine_max_age = quarantine_max_age
        self._connect()
        self._init_schema()

    def _connect(self) -> None:
        url = self.url
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            self.dialect = "postgresql"
            self._open_pg(url)
        else:
            self.dialect = "sqlite"
            path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else url
            if url.startswith("sqlite://") and not url.startswith("sqlite:///"):
                raise StoreError(f"bad sqlite URL {url!r}: use sqlite:///PATH")
            if path != ":memory:":
                d = os.path.dirname(os.path.abspath(path))
                os.makedirs(d, exist_ok=True)
            self.conn = sqlite3.connect(path, isolation_level=None, timeout=60,
                                        check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA busy_timeout=60000")

    def ping(self) -> bool:
        """Is the database there? (After a failed write: tells a lost connection or a
        server away from a record the store cannot hold.)"""
        try:
            if self.dialect == "postgresql":
                try:
                    self.conn.rollback()
                except Exception:
                    pass
                with self.conn.cursor() as c:
                    c.execute("SELECT 1")
                self.conn.commit()
            else:
                self.conn.execute("SELECT 1").fetchall()
            return True
        except Exception:
            return False

    def reconnect(self) -> None:
        """Open a new connection (raises StoreError or the driver's error while the
        database is away)."""
        self.close()
        self._connect()

    # ---- connection -----------------------------------------------------------
    def _open_pg(self, url: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise StoreError("PostgreSQL needs the psycopg package: pip install 'psycopg[binary]'") from None
        parts = urlsplit(url)
        q = parse_qsl(parts.query)
        schema = dict(q).get("schema")
        rest = [(k, v) for k, v in q if k != "schema"]
        dsn = urlunsplit(parts._replace(query=urlencode(rest)))
        try:
            self.conn = psycopg.connect(dsn, autocommit=False)
        except psycopg.Error as e:
            raise StoreError(f"cannot connect to PostgreSQL: {e}") from None
        if schema:
            if not schema.replace("_", "").isalnum():
                raise StoreError(f"bad schema name {schema!r}")
            with self.conn.cursor() as c:
                c.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
                c.execute(f'SET search_path TO "{schema}"')
            self.conn.commit()

    def _sql(self, q: str) -> str:
        return q.replace("?", "%s") if self.dialect == "postgresql" else q

    def _init_schema(self) -> None:
        if self.dialect == "postgresql":
            stmts = _schema("BYTEA", "BIGSERIAL PRIMARY KEY")
            # messages: partitioned by day of received_at (see maintain()); created
            # below, after the migration of an unpartitioned table
            stmts = [q for q in stmts if "messages" not in q]
        else:
            stmts = _schema("BLOB", "INTEGER PRIMARY KEY AUTOINCREMENT")

        def init(cur):
            if self.dialect == "postgresql":
                # one process at a time creates or migrates the schema
                cur.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema()))")
            for q in stmts:
                cur.execute(q)
            if self.dialect == "postgresql":
                self._pg_messages(cur)
            for n in COUNTERS:
                cur.execute(self._sql("INSERT INTO counters (name, value) VALUES (?, 0) "
                                      "ON CONFLICT (name) DO NOTHING"), (n,))
        self._tx(init)
        if self.dialect == "postgresql":
            self.maintain(retention_days=None)
            self.trigram([("boxes", "box")])

    def trigram(self, cols: list[tuple[str, str]]) -> bool:
        """PostgreSQL: trigram (pg_trgm) GIN indexes on (table, column) pairs, so that
        a substring search (LIKE '%x%') reads an index, not the table. pg_trgm is a
        trusted extension (a database owner may create it); where it cannot be
        created the search still works, by a scan. Returns whether the indexes exist."""
        if self.dialect != "postgresql":
            return False

        def tx(cur):
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('homebox pg_trgm'))")
            cur.execute("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
                        "WHERE e.extname = 'pg_trgm'")
            row = cur.fetchone()
            if row is None:
                cur.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
                row = ("public",)
            for t, c in cols:
                cur.execute(f'CREATE INDEX IF NOT EXISTS {t}_{c}_trgm ON {t} USING gin ({c} "{row[0]}".gin_trgm_ops)')
        try:
            self._tx(tx, retries=2)
            return True
        except Exception:
            return False

    def _pg_messages(self, cur) -> None:
        """The partitioned messages table; an unpartitioned one (the schema before
        0012) becomes its first partition, holding everything received before tomorrow."""
        cur.execute("SELECT c.relkind FROM pg_class c WHERE c.relname = 'messages' "
                    "AND c.relnamespace = current_schema()::regnamespace")
        row = cur.fetchone()
        legacy = row is not None and row[0] == "r"
        if legacy:
            cur.execute("ALTER TABLE messages RENAME TO messages_legacy")
            cur.execute("ALTER INDEX IF EXISTS messages_box_kind RENAME TO messages_legacy_box_kind")
        if row is None or legacy:
            cur.execute(MESSAGES_PG)
        if legacy:
            cut = _day(time.time()) + DAY
            cur.execute(f"ALTER TABLE messages ATTACH PARTITION messages_legacy "
                        f"FOR VALUES FROM (MINVALUE) TO ({cut})")
        cur.execute("CREATE INDEX IF NOT EXISTS messages_key ON messages (box, boot, seq)")
        cur.execute("CREATE INDEX IF NOT EXISTS messages_box_kind ON messages (box, kind)")
        cur.execute("CREATE TABLE IF NOT EXISTS messages_default PARTITION OF messages DEFAULT")

    def partitions(self) -> list[dict]:
        """The messages partitions (PostgreSQL): name, lower and upper bound (epoch s;
        None for MINVALUE or the default partition)."""
        if self.dialect != "postgresql":
            return []
        out = []
        for name, bound in self._q(
                "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
                "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
                "WHERE p.relname = 'messages' AND p.relnamespace = current_schema()::regnamespace "
                "ORDER BY c.relname"):
            lo = hi = None
            m = re.match(r"FOR VALUES FROM \('?([^)']+)'?\) TO \('?([^)']+)'?\)", bound or "")
            if m:
                lo = None if m.group(1) == "MINVALUE" else float(m.group(1))
                hi = float(m.group(2))
            out.append({"name": name, "from": lo, "to": hi})
        return out

    def maintain(self, retention_days: float | None = RETENTION_DAYS, now: float | None = None,
                 ahead_days: int = PARTITIONS_AHEAD) -> dict:
        """Retention and partitions. PostgreSQL: create the daily partitions of
        messages up to `ahead_days` after `now`, drop the partitions wholly older than
        `retention_days` (a DROP, not a DELETE: no bloat, no vacuum). SQLite: delete
        the messages received before the cut. None keeps everything.
        Ingest runs this at start and every hour. Returns what it did."""
        now = time.time() if now is None else now
        cut = None if not retention_days else now - retention_days * DAY
        done: dict = {"created": [], "dropped": [], "deleted": 0}
        if self.dialect != "postgresql":
            if cut is not None:
                def delete(cur):
                    cur.execute("DELETE FROM messages WHERE received_at < ?", (cut,))
                    return cur.rowcount
                done["deleted"] = self._tx(delete)
            return done
        parts = self.partitions()
        have = {p["from"] for p in parts}
        top = max([p["to"] for p in parts if p["to"] is not None], default=None)
        # today's and the next days' partitions, above the newest bound (bounds are
        # whole UTC days, so partitions never overlap)
        want = [d for d in range(_day(now), _day(now) + (ahead_days + 1) * DAY, DAY)
                if d not in have and (top is None or d >= top)]

        def create(cur):
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema()))")
            for d in want:
                name = "messages_p" + time.strftime("%Y%m%d", time.gmtime(d))
                cur.execute(f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF messages "
                            f"FOR VALUES FROM ({d}) TO ({d + DAY})")
                done["created"].append(name)
            if cut is not None:
                for p in parts:
                    if p["to"] is not None and p["to"] <= cut:
                        cur.execute(f'DROP TABLE IF EXISTS "{p["name"]}"')
                        done["dropped"].append(p["name"])
        if want or cut is not None:
            self._tx(create)
        return done

    def _tx(self, fn, retries: int = 8):
        """Run fn(cursor) in one transaction; retry on deadlock/serialization/busy."""
        for attempt in range(retries):
            cur = self.conn.cursor()
            try:
                if self.dialect == "sqlite":
                    cur.execute("BEGIN IMMEDIATE")
                out = fn(cur)
                self.conn.commit() if self.dialect == "postgresql" else cur.execute("COMMIT")
                return out
            except Exception as e:
                try:
                    if self.dialect == "sqlite":
                        if self.conn.in_transaction:
                            cur.execute("ROLLBACK")
                    else:
                        self.conn.rollback()
                except Exception:
                    pass
                if attempt + 1 < retries and self._retryable(e):
                    time.sleep(0.05 * (attempt + 1))
                    continue
                raise
            finally:
                cur.close()

    def _retryable(self, e: Exception) -> bool:
        if self.dialect == "sqlite":
            return isinstance(e, sqlite3.OperationalError) and "locked" in str(e)
        import psycopg.errors as pe
        return isinstance(e, (pe.DeadlockDetected, pe.SerializationFailure))

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:
            pass

    # ---- writing -----------------------------------------------------------------
    def write_batch(self, recs: list[Rec]) -> dict:
        """Store one batch in one transaction. Returns counts by outcome."""
        if not recs:
            return {}
        return self._tx(lambda cur: self._write(cur, recs))

    # ---- the set-based write path: a few statements per batch, not per message ----
    def _set(self, types: str, rows: list[tuple]) -> tuple[str, list]:
        """Rows as a relation: on PostgreSQL unnest() of one array per column (one
        short query text, whatever the row count: psycopg parses and caches it once),
        on SQLite a multi-row VALUES list. types: the columns' SQL types, e.g. "tbf"
        (t text, b bigint, f double precision)."""
        if self.dialect == "postgresql":
            names = {"t": "text", "b": "bigint", "f": "double precision"}
            cols = [list(c) for c in zip(*rows)]
            return ("SELECT * FROM unnest(" + ",".join(f"%b::{names[t]}[]" for t in types) + ")", cols)
        one = "(" + ",".join("?" * len(types)) + ")"
        return "VALUES " + ",".join([one] * len(rows)), [x for r in rows for x in r]

    def _chunks(self, rows: list[tuple]):
        step = len(rows) if self.dialect == "postgresql" else CHUNK
        for i in range(0, len(rows), max(1, step)):
            yield rows[i:i + step]

    def _in(self, cur, q: str, types: str, keys: list[tuple], tail: str = "", args: tuple = ()) -> list[tuple]:
        """Run `q` with `(cols) IN {IN}` over keys (chunked on SQLite); all rows."""
        out: list[tuple] = []
        for part in self._chunks(keys):
            rel, a = self._set(types, part)
            cur.execute(self._sql(q).replace("{IN}", f"({rel})") + self._sql(tail), a + list(args))
            if cur.description is not None:
                out += [tuple(r) for r in cur.fetchall()]
        return out

    def _upsert(self, cur, head: str, types: str, rows: list[tuple], tail: str) -> list[tuple]:
        out: list[tuple] = []
        for part in self._chunks(rows):
            rel, a = self._set(types, part)
            cur.execute(self._sql(head) + " " + rel + " " + self._sql(tail), a)
            if cur.description is not None:
                out += [tuple(r) for r in cur.fetchall()]
        return out

    def _lock_streams(self, cur, keys: list[tuple[str, int]], now: float) -> dict:
        """Create and lock the streams rows of keys; read their gaps (after the lock:
        a concurrent writer's commit is then visible). {key: [max_seq, n, first_at, gaps]}."""
        keys = sorted(set(keys))
        if not keys:
            return {}
        lock = " ORDER BY box, boot FOR UPDATE" if self.dialect == "postgresql" else ""

        def select(ks):
            return {(b, int(s)): [int(m), int(n), float(f), []] for b, s, m, n, f in self._in(
                cur, "SELECT box, boot, max_seq, n, first_at FROM streams WHERE (box, boot) IN {IN}", "tb",
                ks, lock)}
        # most streams exist (one per box and boot): lock them, then create the others
        st = select(keys)
        new = [k for k in keys if k not in st]
        if new:
            self._upsert(cur, "INSERT INTO streams (box, boot, max_seq, n, first_at, last_at)", "tbbbff",
                         [(b, s, 0, 0, now, now) for b, s in new], "ON CONFLICT (box, boot) DO NOTHING")
            st.update(select(new))
        for b, s, a, z, c in self._in(
                cur, "SELECT box, boot, first_seq, last_seq, cause FROM gaps WHERE (box, boot) IN {IN}", "tb",
                keys):
            st[(b, int(s))][3].append((int(a), int(z), c))
        for v in st.values():
            v[3].sort()
        return st

    def _epochs(self, cur, mine: list[Rec], now: float) -> dict:
        """Map each record's boot counter to its stored boot (the box's epoch), in
        the batch's order; start a new epoch where a box's counter went back.
        Returns the locked streams (see _lock_streams) of the records' stored boots."""
        for r in mine:
            # the doc as classified: a retried or bisected batch is mapped again from it
            raw = r.__dict__.setdefault("raw_doc", r.doc)
            r.doc = raw
        boxes = sorted({r.box for r in mine})
        if not boxes:
            return {}
        lock = " ORDER BY box FOR UPDATE" if self.dialect == "postgresql" else ""
        state: dict[str, list] = {b: [0, 0, True] for b in boxes}
        for b, e, t in self._in(cur, "SELECT box, epoch, top_boot FROM epochs WHERE (box) IN {IN}", "t",
                                [(b,) for b in boxes], lock):
            state[b] = [int(e), int(t), False]
        msgs = [r for r in mine if r.what == "msg"]
        streams = self._lock_streams(
            cur, [(r.box, state[r.box][0] * EPOCH_STRIDE + r.doc["boot"]) for r in msgs], now)
        # Only a seq the stream already holds (at most max_seq, in no gap) can collide
        # with a stored message: read those, to compare their content.
        cand = []
        for r in msgs:
            k = (r.box, state[r.box][0] * EPOCH_STRIDE + r.doc["boot"])
            s = streams.get(k)
            if s and r.doc["seq"] <= s[0] and not _in_gaps(s[3], r.doc["seq"]):
                cand.append(k + (r.doc["seq"],))
        stored: dict[tuple[str, int, int], tuple] = {}
        if cand:
            since = min(streams[c[:2]][2] for c in cand) - RECEIVED_MARGIN
            for box, sb, seq, kind, ts, data in self._in(
                    cur, "SELECT box, boot, seq, kind, ts, data FROM messages WHERE (box, boot, seq) IN {IN}",
                    "tbb", sorted(set(cand)), " AND received_at >= ?", (since,)):
                stored[(box, int(sb), int(seq))] = (kind, ts, data)
        start = {b: st[0] for b, st in state.items()}
        for r in mine:
            st = state[r.box]
            d = r.doc
            b = d["boot"]
            why = None
            # An online status below the highest boot is taken for a late one
            # (stale, as before): only content proves that the counter went back.
            if r.what == "msg" and st[0] == start[r.box]:
                o = stored.get((r.box, st[0] * EPOCH_STRIDE + b, d["seq"]))
                if o is not None and (o[0] != d["kind"] or o[1] != d.get("ts")
                                      or o[2] != _dumps(d["data"])):
                    why = f"boot {b} seq {d['seq']} already stored with other content"
            if why is not None:
                st[0] += 1
                st[1] = b
                st[2] = True
                sb = st[0] * EPOCH_STRIDE + b
                self._alarm(cur, r.box, "boot_counter_reset",
                            f"{why}: new epoch {st[0]} (stored boot {sb})", now)
                # the new incarnation is the box's state now (its online status,
                # older-looking, was set aside as stale)
                cur.execute(self._sql("UPDATE boxes SET state='online', state_boot=?, state_at=? "
                                      "WHERE box=?"), (sb, r.received_at, r.box))
            elif b > st[1]:
                st[1] = b
                st[2] = True
            if st[0]:
                # _boot_off: the outbox_dropped ranges name boots of the same epoch
                r.doc = dict(d, boot=st[0] * EPOCH_STRIDE + b, _boot_off=st[0] * EPOCH_STRIDE)
        dirty = [(b, state[b][0], state[b][1], now) for b in boxes if state[b][2]]
        if dirty:
            self._upsert(cur, "INSERT INTO epochs (box, epoch, top_boot, changed_at)", "tbbf", dirty,
                         "ON CONFLICT (box) DO UPDATE SET epoch=excluded.epoch, "
                         "top_boot=excluded.top_boot, changed_at=excluded.changed_at")
        # a new epoch's streams (the box's epochs row is locked: no other writer has them)
        more = [(r.doc["box"], r.doc["boot"]) for r in msgs]
        more = [k for k in more if k not in streams]
        if more:
            streams.update(self._lock_streams(cur, more, now))
        return streams

    def _alarm(self, cur, box: str, code: str, detail: str, now: float) -> None:
        cur.execute(self._sql(
            "INSERT INTO alarms (box, code, detail, n, first_at, last_at) VALUES (?,?,?,1,?,?) "
            "ON CONFLICT (box, code) DO UPDATE SET detail=excluded.detail, n=alarms.n + 1, "
            "last_at=excluded.last_at"), (box, code, detail[:500], now, now))
        alarms.note(self, cur, box, code, detail, now)

    def epochs(self) -> dict[str, dict]:
        return {b: {"epoch": int(e), "top_boot": int(t), "changed_at": c}
                for b, e, t, c in self._q("SELECT box, epoch, top_boot, changed_at FROM epochs")}

    def _write(self, cur, recs: list[Rec]) -> dict:
        now = time.time()
        mine = [r for r in recs if r.what in ("msg", "status") and r.box]
        locked = self._epochs(cur, mine, now)
        counts = dict.fromkeys(COUNTERS, 0)
        counts["received"] = len(recs)
        streams: dict[tuple[str, int], dict[int, Rec]] = {}
        stream_drops: dict[tuple[str, int], list[tuple[int, int]]] = {}
        seen: dict[str, tuple[float | None, float]] = {}
        statuses, reported, desired, invalid = [], {}, {}, []
        for r in recs:
            if r.what == "invalid":
                invalid.append(r)
                continue
            if r.box:
                # A retained message replayed at subscribe time is not a sign of life.
                live = None if r.retained else r.received_at
                pl, pf = seen.get(r.box, (None, r.received_at))
                if live is not None and (pl is None or live > pl):
                    pl = live
                seen[r.box] = (pl, min(pf, r.received_at))
            if r.what == "msg":
                d = r.doc
                streams.setdefault((d["box"], d["boot"]), {}).setdefault(d["seq"], r)
                data = d.get("data") or {}
                if d.get("kind") == "event" and data.get("type") == "outbox_dropped":
                    for rng in data.get("ranges") or []:
                        try:
                            b, f, la = (int(x) for x in rng)
                        except (TypeError, ValueError):
                            continue
                        b += d.get("_boot_off", 0)
                        if 1 <= f <= la:
                            stream_drops.setdefault((d["box"], b), []).append((f, la))
            elif r.what == "status":
                statuses.append(r)
            elif r.what == "reported":
                reported[(r.box, r.section)] = r            # the last one in the batch wins
            elif r.what == "desired":
                cur_ = desired.get((r.box, r.section))
                if cur_ is None or r.doc["version"] >= cur_.doc["version"]:
                    desired[(r.box, r.section)] = r
        # dup records within the batch count as duplicates too
        in_batch = sum(len(v) for v in streams.values())
        counts["duplicates"] += sum(1 for r in recs if r.what == "msg") - in_batch
        # streams named only by a drop declaration (another boot's ranges)
        extra = [k for k in stream_drops if k not in locked]
        if extra:
            locked.update(self._lock_streams(cur, extra, now))
        gap_boxes: set[str] = set()
        new = self._write_streams(cur, streams, stream_drops, locked, now, gap_boxes)
        counts["stored"] += len(new)
        counts["duplicates"] += in_batch - len(new)

        latest: dict[tuple[str, str], Rec] = {}
        for r in new:
            d = r.doc
            kinds = [d["kind"]]
            if d["kind"] == "event" and isinstance(d["data"].get("type"), str):
                kinds.append("event:" + d["data"]["type"])
            for k in kinds:
                o = latest.get((d["box"], k))
                if o is None or (o.doc["boot"], o.doc["seq"]) < (d["boot"], d["seq"]):
                    latest[(d["box"], k)] = r
        prev = alarms.previous(self, cur, latest)
        if latest:
            self._upsert(cur, "INSERT INTO latest (box, kind, boot, seq, ts, received_at, data)", "ttbbbft",
                         [(box, kind, r.doc["boot"], r.doc["seq"], r.doc.get("ts"), r.received_at,
                           json.dumps(r.doc["data"]))
                          for (box, kind), r in sorted(latest.items())],
                         "ON CONFLICT (box, kind) DO UPDATE SET boot=excluded.boot, seq=excluded.seq, "
                         "ts=excluded.ts, received_at=excluded.received_at, data=excluded.data "
                         "WHERE excluded.boot > latest.boot OR "
                         "(excluded.boot = latest.boot AND excluded.seq > latest.seq)")
        if seen:
            self._upsert(cur, "INSERT INTO boxes (box, first_seen, last_seen)", "tff",
                         [(box, first, live) for box, (live, first) in sorted(seen.items())],
                         "ON CONFLICT (box) DO UPDATE SET last_seen = CASE "
                         "WHEN boxes.last_seen IS NULL THEN excluded.last_seen "
                         "WHEN excluded.last_seen > boxes.last_seen THEN excluded.last_seen "
                         "ELSE boxes.last_seen END")
        for r in sorted(statuses, key=lambda r: (r.box, r.received_at)):
            d = r.doc
            cur.execute(self._sql(
                "UPDATE boxes SET state=?, state_boot=?, fw=COALESCE(?, fw), state_at=? "
                "WHERE box=? AND (state_boot IS NULL OR state_boot <= ?)"),
                (d["state"], d["boot"], d.get("fw"), r.received_at, r.box, d["boot"]))
            counts["status"] += 1
        if reported:
            self._upsert(cur, "INSERT INTO reported (box, section, version, status, doc, received_at)", "ttbttf",
                         [(box, section, r.doc["version"], r.doc.get("status"), json.dumps(r.doc),
                           r.received_at) for (box, section), r in sorted(reported.items())],
                         "ON CONFLICT (box, section) DO UPDATE SET "
                         "version=excluded.version, status=excluded.status, doc=excluded.doc, "
                         "received_at=excluded.received_at")
            counts["reported"] += len(reported)
        for (box, section) in sorted(desired):
            r = desired[(box, section)]
            self._put_desired(cur, box, section, r.doc["version"], r.payload, "broker", strict=True)
            counts["desired"] += 1
        for r in invalid:
            cur.execute(self._sql(
                "INSERT INTO quarantine (topic, box, payload, errors, received_at) VALUES (?,?,?,?,?)"),
                (r.topic, r.box, bytes(r.payload), json.dumps(r.errors), r.received_at))
            counts["invalid"] += 1
            if r.errors and r.errors[0].startswith(POISON):
                counts["poison"] += 1
        if invalid:
            self._prune_quarantine(cur, {r.box for r in invalid}, now)
        inc = [(n, counts[n]) for n in COUNTERS if counts[n]]
        if inc:
            cur.execute(self._sql("UPDATE counters SET value = value + CASE name "
                                  + " ".join("WHEN ? THEN ?" for _ in inc) + " ELSE 0 END "
                                  "WHERE name IN (" + ",".join("?" * len(inc)) + ")"),
                        [x for p in inc for x in p] + [n for n, _ in inc])
        alarms.on_batch(self, cur, latest, prev, [r.box for r in statuses], [b for b, _s in reported],
                        sorted(b for b, (live, _f) in seen.items() if live is not None), sorted(gap_boxes), now)
        return counts

    def _prune_quarantine(self, cur, boxes, now) -> None:
        for box in sorted(boxes, key=lambda b: (b is None, b or "")):
            w = "box IS NULL" if box is None else "box = ?"
            args = () if box is None else (box,)
            cur.execute(self._sql(
                f"DELETE FROM quarantine WHERE {w} AND id NOT IN "
                f"(SELECT id FROM quarantine WHERE {w} ORDER BY id DESC LIMIT ?)"),
                args + args + (self.quarantine_per_box,))
        cur.execute(self._sql("DELETE FROM quarantine WHERE received_at < ?"),
                    (now - self.quarantine_max_age,))

    def _write_streams(self, cur, streams: dict, stream_drops: dict, locked: dict, now: float,
                       gap_boxes: set | None = None) -> list[Rec]:
        """Decide which messages are new from each locked stream's high-water mark and
        gaps (what the stream holds is 1..max_seq minus its gaps), then write the
        messages, drops, gaps and streams of the whole batch, a statement per table."""
        drop_rows = sorted({(b, s, f, la, now) for (b, s), rs in stream_drops.items() for f, la in rs})
        added: dict[tuple[str, int], list[tuple[int, int]]] = {}
        if drop_rows:
            for b, s, f, la in self._upsert(
                    cur, "INSERT INTO drops (box, boot, first_seq, last_seq, reported_at)", "tbbbf", drop_rows,
                    "ON CONFLICT (box, boot, first_seq) DO NOTHING RETURNING box, boot, first_seq, last_seq"):
                added.setdefault((b, int(s)), []).append((int(f), int(la)))
        out: list[Rec] = []
        rows: list[tuple] = []
        stream_rows: list[tuple] = []
        touched: dict[tuple[str, int], tuple[list, list]] = {}
        for key in sorted(set(streams) | set(added)):
            max_seq, n, _first, old_rows = locked[key]
            box, boot = key
            msgs = streams.get(key, {})
            new_seqs = [s for s in sorted(msgs) if s > max_seq or _in_gaps(old_rows, s)]
            for s in new_seqs:
                r = msgs[s]
                d = r.doc
                rows.append((box, boot, s, d["kind"], d.get("ts"), r.received_at, now, _dumps(d["data"])))
                out.append(r)
            # Does anything change the stream's gaps? A jump past max_seq, a late
            # arrival (below max_seq), or a new drop declaration.
            touch = key in added
            m = max_seq
            for s in new_seqs:
                if s != m + 1:
                    touch = True
                    break
                m = s
            if touch:
                missing = [(a, b) for a, b, _c in old_rows]
                m = max_seq
                for s in new_seqs:
                    if s > m:
                        if s > m + 1:
                            missing.append((m + 1, s - 1))
                        m = s
                    else:
                        missing = _remove_seq(missing, s)
                touched[key] = (missing, old_rows)
            if new_seqs:
                stream_rows.append((box, boot, max(max_seq, new_seqs[-1]), n + len(new_seqs), now, now))
        if touched:
            drops: dict[tuple[str, int], list[tuple[int, int]]] = {}
            for b, s, f, la in self._in(
                    cur, "SELECT box, boot, first_seq, last_seq FROM drops WHERE (box, boot) IN {IN}", "tb",
                    sorted(touched)):
                drops.setdefault((b, int(s)), []).append((int(f), int(la)))
            changed, gap_rows = [], []
            for key, (missing, old_rows) in sorted(touched.items()):
                new_rows = _split_ranges(missing, drops.get(key, []))
                if new_rows != old_rows:
                    changed.append(key)
                    gap_rows += [key + (a, b, c, now) for a, b, c in new_rows]
            if gap_boxes is not None:
                gap_boxes.update(b for b, _s in changed)
            if changed:
                self._in(cur, "DELETE FROM gaps WHERE (box, boot) IN {IN}", "tb", changed)
            if gap_rows:
                self._upsert(cur, "INSERT INTO gaps (box, boot, first_seq, last_seq, cause, detected_at)",
                             "tbbbtf", gap_rows, "")
        if rows:
            self._insert_messages(cur, rows)
        if stream_rows:
            self._upsert(cur, "INSERT INTO streams (box, boot, max_seq, n, first_at, last_at)", "tbbbff",
                         stream_rows,
                         "ON CONFLICT (box, boot) DO UPDATE SET max_seq=excluded.max_seq, n=excluded.n, "
                         "last_at=excluded.last_at")
        return out

    def _insert_messages(self, cur, rows: list[tuple]) -> None:
        if self.dialect == "postgresql":
            with cur.copy("COPY messages (box, boot, seq, kind, ts, received_at, stored_at, data) "
                          "FROM STDIN") as cp:
                for r in rows:
                    cp.write_row(r)
        else:
            cur.executemany("INSERT INTO messages (box, boot, seq, kind, ts, received_at, stored_at, data) "
                            "VALUES (?,?,?,?,?,?,?,?)", rows)

    def _put_desired(self, cur, box, section, version, payload, source, strict):
        op = ">" if strict else ">="
        cur.execute(self._sql(
            "INSERT INTO desired (box, section, version, payload, source, updated_at) "
            "VALUES (?,?,?,?,?,?) ON CONFLICT (box, section) DO UPDATE SET version=excluded.version, "
            "payload=excluded.payload, source=excluded.source, updated_at=excluded.updated_at "
            f"WHERE excluded.version {op} desired.version"),
            (box, section, int(version), bytes(payload), source, time.time()))

    def put_desired(self, box: str, section: str, payload: bytes | str | dict,
                    source: str = "push") -> int:
        """Record the desired document the operator wants `box` to have (call this
        from the push tool before publishing). Returns its version. A lower version
        than the one stored is ignored."""
        if isinstance(payload, dict):
            payload = json.dumps(payload, separators=(",", ":"))
        if isinstance(payload, str):
            payload = payload.encode()
        version = json.loads(payload)["version"]
        self._tx(lambda cur: self._put_desired(cur, box, section, version, payload, source, False))
        return version

    def note_alarm(self, box: str, code: str, detail: str) -> None:
        """Record (or count again) an alarm ingest raised for a box."""
        now = time.time()
        self._tx(lambda cur: self._alarm(cur, box, code, detail, now))

    def alarms(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for box, code, detail, n, first, last in self._q(
                "SELECT box, code, detail, n, first_at, last_at FROM alarms ORDER BY box, code"):
            out.setdefault(box, []).append({"code": code, "detail": detail, "n": int(n),
                                            "first_at": first, "last_at": last})
        return out

    # ---- reading --------------------------------------------------------------
    def _q(self, q: str, args=()) -> list[tuple]:
        cur = self.conn.cursor()
        try:
            cur.execute(self._sql(q), args)
            rows = [tuple(r) for r in cur.fetchall()]
        finally:
            cur.close()
        if self.dialect == "postgresql":
            self.conn.commit()        # end the read transaction
        return rows

    def counters(self) -> dict[str, int]:
        return {n: int(v) for n, v in self._q("SELECT name, value FROM counters")}

    def boxes(self) -> list[dict]:
        cols = ("box", "first_seen", "last_seen", "state", "state_boot", "fw", "state_at")
        return [dict(zip(cols, r)) for r in
                self._q("SELECT " + ", ".join(cols) + " FROM boxes ORDER BY box")]

    def latest(self) -> dict[tuple[str, str], dict]:
        out = {}
        for box, kind, boot, seq, ts, rat, data in self._q(
                "SELECT box, kind, boot, seq, ts, received_at, data FROM latest"):
            out[(box, kind)] = {"boot": boot, "seq": seq, "ts": ts, "received_at": rat,
                                "data": json.loads(data)}
        return out

    def reported(self) -> dict[str, dict[str, dict]]:
        out: dict[str, dict[str, dict]] = {}
        for box, section, doc, rat in self._q("SELECT box, section, doc, received_at FROM reported"):
            d = json.loads(doc)
            d["_received_at"] = rat
            out.setdefault(box, {})[section] = d
        return out

    def desired(self) -> list[dict]:
        return [{"box": b, "section": s, "version": v, "payload": bytes(p), "source": src}
                for b, s, v, p, src in self._q(
                    "SELECT box, section, version, payload, source FROM desired ORDER BY box, section")]

    def desired_versions(self) -> dict[str, dict[str, int]]:
        """{box: {section: version}} of the stored desired documents (no payloads)."""
        out: dict[str, dict[str, int]] = {}
        for box, section, v in self._q("SELECT box, section, version FROM desired"):
            out.setdefault(box, {})[section] = int(v)
        return out

    def desired_version(self, box: str, section: str) -> int:
        """The version of the desired document stored for (box, section), or 0."""
        rows = self._q("SELECT version FROM desired WHERE box=? AND section=?", (box, section))
        return int(rows[0][0]) if rows else 0

    def gap_summary(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for box, cause, n in self._q(
                "SELECT box, cause, SUM(last_seq - first_seq + 1) FROM gaps GROUP BY box, cause"):
            out.setdefault(box, {})[cause] = int(n)
        return out

    def gaps(self, box: str | None = None) -> list[dict]:
        q = "SELECT box, boot, first_seq, last_seq, cause FROM gaps"
        args: tuple = ()
        if box:
            q += " WHERE box=?"
            args = (box,)
        cols = ("box", "boot", "first", "last", "cause")
        return [dict(zip(cols, r)) for r in self._q(q + " ORDER BY box, boot, first_seq", args)]

    def seqs(self, box: str | None = None) -> list[tuple[str, int, int]]:
        q = "SELECT box, boot, seq FROM messages"
        args: tuple = ()
        if box:
            q += " WHERE box=?"
            args = (box,)
        return self._q(q + " ORDER BY box, boot, seq", args)

    def series(self, box: str, kind: str, limit: int = 5000) -> list[dict]:
        """The newest `limit` messages of one kind for a box, oldest first."""
        rows = self._q("SELECT boot, seq, ts, received_at, data FROM messages "
                       "WHERE box=? AND kind=? ORDER BY boot DESC, seq DESC LIMIT ?",
                       (box, kind, limit))
        return [{"boot": b, "seq": s, "ts": ts, "received_at": r, "data": json.loads(d)}
                for b, s, ts, r, d in reversed(rows)]

    def events(self, box: str, etype: str | None = None, limit: int = 200) -> list[dict]:
        out = [e for e in self.series(box, "event", limit * 4 if etype else limit)
               if etype is None or e["data"].get("type") == etype]
        return out[-limit:]

    def quarantine(self, limit: int = 100) -> list[dict]:
        rows = self._q("SELECT id, topic, box, payload, errors, received_at FROM quarantine "
                       "ORDER BY id DESC LIMIT ?", (limit,))
        return [{"id": i, "topic": t, "box": b, "payload": bytes(p), "errors": json.loads(e),
                 "received_at": r} for i, t, b, p, e, r in rows]

    def lag(self) -> list[float]:
        """stored_at - received_at per message (seconds), for diagnostics."""
        return [float(a) for (a,) in self._q("SELECT stored_at - received_at FROM messages")]


def ensure_tables(store, flag: str, ddl, then=None) -> None:
    """Run the statements `ddl()` returns in one transaction, then `then(store)`, once
    per Store: the attribute `flag` marks it done (the schema of a backend module)."""
    if getattr(store, flag, False):
        return
    stmts = ddl()
    store._tx(lambda cur: [cur.execute(s) for s in stmts])
    if then is not None:
        then(store)
    setattr(store, flag, True)


def open_store(url: str | None) -> Store:
    return Store(url or default_url())


def default_url() -> str:
    return os.environ.get("HOMEBOX_DB", "sqlite:///state/backend.db")
