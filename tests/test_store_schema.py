"""The store's schema for a year (issue 16): messages partitioned by day on
PostgreSQL, retention by dropping partitions (by deleting rows on SQLite), the
migration of the unpartitioned table, and duplicates decided by each stream's
high-water mark and gaps (no global key: a redelivery on another day is still
stored once)."""
import dataclasses
import time
import uuid

from backend.store import DAY, Store, _day
from tests.test_ingest import tel


def _at(rec, t):
    return dataclasses.replace(rec, received_at=t)


def test_redelivery_on_another_day_is_stored_once(db_url):
    s = Store(db_url)
    t0 = time.time()
    s.maintain(now=t0 + DAY, retention_days=None)
    day1 = [_at(tel("A", 1, i), t0) for i in (1, 2, 3, 5)]
    assert s.write_batch(day1)["stored"] == 4
    # the next day: the same messages again (a broker redelivery), and the gap filled
    later = [_at(tel("A", 1, i), t0 + DAY) for i in (1, 2, 3, 4, 5, 6)]
    c = s.write_batch(later)
    assert (c["stored"], c["duplicates"]) == (2, 4)
    assert [q for _b, _o, q in s.seqs("A")] == [1, 2, 3, 4, 5, 6]
    assert s.gaps("A") == []
    s.close()


def test_retention_drops_old_messages_and_keeps_dedup(db_url):
    s = Store(db_url)
    t0 = _day(time.time()) + 3600
    s.write_batch([_at(tel("R", 1, i), t0) for i in (1, 2)])
    s.maintain(now=t0 + 10 * DAY, retention_days=None)
    s.write_batch([_at(tel("R", 1, 3), t0 + 10 * DAY)])
    done = s.maintain(now=t0 + 12 * DAY, retention_days=5)
    assert [q for _b, _o, q in s.seqs("R")] == [3]
    if s.dialect == "postgresql":
        assert done["dropped"] and all(p["to"] is None or p["to"] > t0 + 7 * DAY for p in s.partitions())
    else:
        assert done["deleted"] == 2
    # a late redelivery of a message the retention dropped is still a duplicate
    c = s.write_batch([_at(tel("R", 1, 1), t0 + 12 * DAY)])
    assert (c["stored"], c["duplicates"]) == (0, 1)
    s.close()


LEGACY = """CREATE TABLE messages (
    box TEXT NOT NULL, boot BIGINT NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL,
    ts BIGINT, received_at DOUBLE PRECISION NOT NULL, stored_at DOUBLE PRECISION NOT NULL,
    data TEXT NOT NULL, PRIMARY KEY (box, boot, seq))"""


def test_migration_of_the_unpartitioned_table(pg_server):
    import psycopg
    schema = "hbmig_" + uuid.uuid4().hex[:10]
    try:
        with psycopg.connect(pg_server, autocommit=True) as c:
            c.execute(f'CREATE SCHEMA "{schema}"')
            c.execute(f'SET search_path TO "{schema}"')
            c.execute(LEGACY)
            c.execute("CREATE INDEX messages_box_kind ON messages (box, kind)")
            c.execute("INSERT INTO messages VALUES ('M', 1, 1, 'health', 1, %s, %s, '{}')",
                      (time.time() - 5 * DAY, time.time() - 5 * DAY))
        s = Store(f"{pg_server}?schema={schema}")
        names = [p["name"] for p in s.partitions()]
        assert "messages_legacy" in names and "messages_default" in names
        assert any(n.startswith("messages_p") for n in names)
        assert s.seqs("M") == [("M", 1, 1)]
        s.write_batch([tel("M", 1, 2)])
        assert [q for _b, _o, q in s.seqs("M")] == [1, 2]
        s.close()
        s = Store(f"{pg_server}?schema={schema}")           # opening again changes nothing
        assert [p["name"] for p in s.partitions()] == names
        s.close()
    finally:
        with psycopg.connect(pg_server, autocommit=True) as c:
            c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_a_year_of_daily_partitions(pg_server):
    """365 days of maintenance on synthetic data (a message a day): partitions
    created ahead, those older than the retention dropped with their messages;
    what is kept is exactly the retention window, and nothing went to the default
    partition."""
    s = Store(f"{pg_server}?schema=hbyear_{uuid.uuid4().hex[:10]}")
    t0 = _day(time.time()) + 3600
    created, dropped = [], []
    for d in range(0, 365, 1):
        r = s.maintain(now=t0 + d * DAY, retention_days=30, ahead_days=2)
        created += r["created"]
        dropped += r["dropped"]
        assert s.write_batch([_at(tel("Y", 1, d + 1), t0 + d * DAY)])["stored"] == 1
    days = [p for p in s.partitions() if p["to"] is not None]
    assert len(created) >= 360 and len(dropped) >= 330
    assert not set(dropped) & {p["name"] for p in days}
    assert 30 <= len(days) <= 33
    # the messages kept: the last 30 days' (a partition goes once wholly past the cut)
    kept = [q for _b, _o, q in s.seqs("Y")]
    assert kept == list(range(kept[0], 366)) and 30 <= len(kept) <= 31, kept
    assert s._q("SELECT COUNT(*) FROM messages_default")[0][0] == 0
    # dedup still holds across the dropped days: an old seq redelivered is a duplicate
    c = s.write_batch([_at(tel("Y", 1, 5), t0 + 364 * DAY)])
    assert (c["stored"], c["duplicates"]) == (0, 1)
    s.close()
