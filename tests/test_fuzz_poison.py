"""Fuzzing ingest's poison-proofing (issue 16): hostile payloads on every topic a box
may write, between good messages, through Ingest's own path from the MQTT callback to
the commit (no broker: the callback gets message objects). Some hostile documents
skip the contract (as if it missed a bound) to reach the store, which must bisect the
batch to them. Checks: nothing raises, every good message is stored, every hostile
one is quarantined or stored, the quarantine holds each refused payload byte for byte.
Budget and counts: tests/fuzzing.py."""
from __future__ import annotations

import json
import uuid

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzzing import SKIPPED, count, fuzz, mutate, tmp

BOX_TOPICS = ["telemetry/health", "telemetry/consumption", "telemetry/coverage", "telemetry/speed",
              "telemetry/other", "event", "status", "reported/options", "reported/channels",
              "reported/parental"]

poison_scalars = st.one_of(
    st.sampled_from([2**63, -2**63 - 1, 2**64, 2**70, 10**30, 1e300, -1e300, "\x00", "a\x00b", "\ud800",
                     "x" * 5000, None, True, [], {}]),
    st.integers(), st.text(max_size=10))


def _deep(n: int, open_: str = "[") -> bytes:
    return (open_ * n).encode()


class Msg:
    def __init__(self, topic, payload, retain, mid):
        self.topic, self.payload, self.retain, self.mid, self.qos = topic, payload, retain, mid, 1


def _good(box: str, seq: int) -> tuple[str, bytes]:
    d = {"v": 1, "box": box, "boot": 1, "seq": seq, "ts": 1767225600, "kind": "health",
         "data": {"fw": "0.1.0", "uptime_s": seq, "outbox_backlog": 0, "outbox_bytes": 0,
                  "outbox_dropped": 0, "reconnects": 0}}
    return f"homebox/v1/{box}/telemetry/health", json.dumps(d).encode()


TEMPLATES = {
    "telemetry": {"v": 1, "box": "H", "boot": 1, "seq": 5, "ts": 1, "kind": "health", "data": {"fw": "x"}},
    "event": {"v": 1, "box": "H", "boot": 1, "seq": 6, "ts": 1, "kind": "event",
              "data": {"type": "outbox_dropped", "count": 1, "dropped_total": 1, "ranges": [[1, 2, 3]]}},
    "status": {"state": "online", "box": "H", "boot": 1, "fw": "0.1.0"},
    "reported": {"box": "H", "section": "options", "version": 1, "status": "applied"},
}


@st.composite
def hostile(draw, box: str):
    sub = draw(st.sampled_from(BOX_TOPICS))
    topic = f"homebox/v1/{box}/{sub}"
    kind = sub.split("/")[0]
    base = json.loads(json.dumps(TEMPLATES[kind]).replace('"H"', json.dumps(box)))
    if kind == "telemetry":
        base["kind"] = sub.split("/")[1]
    if kind == "reported":
        base["section"] = sub.split("/")[1]
    how = draw(st.sampled_from(["poke", "mutate", "deep", "bytes"]))
    if how == "deep":
        return topic, _deep(draw(st.integers(30, 60000)), draw(st.sampled_from(["[", '{"a":'])))
    if how == "bytes":
        return topic, draw(st.binary(max_size=64))
    doc = base
    if how == "mutate":
        doc = draw(mutate(base))
    if isinstance(doc, dict):
        # poke a poison value at a field (or into the data / ranges)
        where = draw(st.sampled_from(["top", "data", "range"]))
        v = draw(poison_scalars)
        if where == "range" and kind == "event" and isinstance(doc.get("data"), dict):
            doc["data"]["ranges"] = [[draw(st.sampled_from([1, v])), 1, draw(st.sampled_from([3, v]))]]
        elif where == "data" and isinstance(doc.get("data"), dict):
            doc["data"][draw(st.sampled_from(["fw", "type", "x", "\x00"]))] = v
        else:
            doc[draw(st.sampled_from(sorted(doc) or ["x"]))] = v
    try:
        return topic, json.dumps(doc, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")
    except (ValueError, TypeError):
        return topic, b"{}"


@st.composite
def scenario(draw):
    items = []
    for _i in range(draw(st.integers(1, 8))):
        items.append(draw(hostile(draw(st.sampled_from(["H", "H2", "G"])))) + (draw(st.booleans()),
                                                                                draw(st.booleans())))
    return items


NAME = "poison payloads between good ones"
_STATE: dict = {"db": "sqlite"}
_INGESTS: dict = {}


def _ingest():
    """The Ingest of the current database (_STATE['db']: 'sqlite' or a PostgreSQL URL)."""
    from backend.ingest import Ingest
    from backend.store import Store
    db = _STATE["db"]
    if db not in _INGESTS:
        url = f"sqlite:///{tmp('poison') / 'fuzz.db'}" if db == "sqlite" else \
            f"{db}?schema=fuzz_poison_{uuid.uuid4().hex[:8]}"
        store = Store(url, quarantine_per_box=10**9)
        _INGESTS[db] = Ingest("mqtt://127.0.0.1:1", store, batch_size=7, log=lambda *a: None)
        _STATE.setdefault("seq", 0)
    return _INGESTS[db]


@fuzz()
@given(scenario())
def fuzz_poison_between_good(items):
    from backend.ingest import classify
    ing = _ingest()
    store = ing.store
    q0 = store._q("SELECT COUNT(*) FROM quarantine")[0][0]
    good = []
    mid = 0
    for topic, payload, retain, blind in items:
        _STATE["seq"] += 1
        gt, gp = _good("G", _STATE["seq"])
        good.append(_STATE["seq"])
        mid += 1
        ing._on_message(None, None, Msg(gt, gp, False, mid))
        mid += 1
        if blind:
            # as if the contract had let it through: the store must cope (bisect)
            r = classify(topic, payload, retain)
            try:
                doc = json.loads(payload)
            except (ValueError, RecursionError):
                doc = None
            if r.what == "invalid" and isinstance(doc, dict):
                t = topic.split("/")
                what = {"telemetry": "msg", "event": "msg", "status": "status",
                        "reported": "reported"}[t[3]]
                ok = {"msg": all(k in doc for k in ("box", "boot", "seq", "kind", "data"))
                      and isinstance(doc.get("data"), dict),
                      "status": all(k in doc for k in ("state", "boot")),
                      "reported": "version" in doc}[what]
                if ok:
                    from backend.store import Rec
                    r = Rec(what, topic, payload, box=t[2], doc=doc, section=t[4] if len(t) > 4 else None,
                            retained=retain)
            ing.pending.append((ing.gen, mid, 1, r))
        else:
            ing._on_message(None, None, Msg(topic, payload, retain, mid))
    while ing.pending:
        assert ing.flush()
    count(NAME + ("" if _STATE["db"] == "sqlite" else ", PostgreSQL"), len(items))
    got = {s for _b, _o, s in store.seqs("G") if s <= 10**6}
    assert set(good) <= got, sorted(set(good) - got)
    q = store._q("SELECT COUNT(*) FROM quarantine")[0][0]
    assert q >= q0
    assert store.ping() and ing.db_up


def test_fuzz_poison_between_good():
    _STATE["db"] = "sqlite"
    fuzz_poison_between_good()
    ing = _ingest()
    assert ing.store._q("PRAGMA integrity_check") == [("ok",)]
    assert ing.totals["unstorable"] == 0


def test_fuzz_poison_between_good_postgresql(pg_server=None):
    """The same on PostgreSQL (stricter than SQLite: no NUL in text, BIGINT overflow).
    Under pytest the session's server; under `make chaos` one of its own."""
    if pg_server is None:
        from tests.pgserver import ThrowawayPostgres, pg_bindir
        if "pg" not in _STATE:
            import atexit
            _STATE["pg"] = ThrowawayPostgres(pg_bindir()).start()
            atexit.register(_STATE["pg"].stop)
        pg_server = _STATE["pg"].url
    _STATE["db"] = pg_server
    try:
        fuzz_poison_between_good()
        ing = _ingest()
        assert ing.totals["unstorable"] == 0 and ing.store.ping()
    finally:
        _STATE["db"] = "sqlite"


def _pg_available() -> bool:
    from tests.pgserver import pg_bindir
    return pg_bindir() is not None


TARGETS = [(NAME, test_fuzz_poison_between_good)]
if _pg_available():
    TARGETS.append((NAME + ", PostgreSQL", test_fuzz_poison_between_good_postgresql))
else:
    SKIPPED[NAME + ", PostgreSQL"] = "no PostgreSQL binaries (make setup as root)"
