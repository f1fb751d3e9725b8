"""Fuzzing the backend's ingest (issue 9): MQTT payloads on any topic. classify and
the store never raise; what breaks the contract is quarantined byte for byte with
reasons; the rest is stored once, and a redelivered batch changes nothing.
Budget and counts: tests/fuzzing.py."""
from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from agent import topics
from tests.fuzzing import count, dumps, fuzz, ints, mutate, tmp, values

HEALTH = {"v": 1, "box": "fz-1", "boot": 1, "seq": 1, "ts": 1767225600, "kind": "health",
          "data": {"fw": "0.1.0", "uptime_s": 60, "heap_free": None, "heap_alloc": None,
                   "outbox_backlog": 0, "outbox_bytes": 0, "outbox_dropped": 0, "reconnects": 0,
                   "wifi_clients": 0, "flash_ok": True}}
EVENT = {"v": 1, "box": "fz-1", "boot": 1, "seq": 2, "ts": None, "kind": "event",
         "data": {"type": "outbox_dropped", "count": 3, "ranges": [[1, 5, 7]], "dropped_total": 3}}
STATUS = {"state": "online", "box": "fz-1", "boot": 1, "fw": "0.1.0", "ts": 1767225600}
REPORTED = {"section": "options", "version": 3, "status": "applied", "box": "fz-1"}

box_ids = st.one_of(st.sampled_from(["fz-1", "fz-2", "fz_3"]), st.text(max_size=12),
                    st.sampled_from(["+", "#", "", "a/b", "\u00e9t\u00e9", "x" * 70]))
topic_st = st.one_of(
    st.builds(lambda b, k, r: "homebox/v1/%s/%s%s" % (b, k, r), box_ids,
              st.sampled_from(["telemetry", "event", "status", "reported", "desired", "other"]),
              st.sampled_from(["", "/health", "/consumption", "/coverage", "/speed", "/options",
                               "/channels", "/parental", "/x/y", "/"])),
    st.text(max_size=40))


@st.composite
def envelope(draw):
    base = draw(st.sampled_from([HEALTH, EVENT, STATUS, REPORTED]))
    doc = draw(mutate(base)) if draw(st.booleans()) else json.loads(json.dumps(base))
    if isinstance(doc, dict) and draw(st.booleans()):
        for k in ("box", "boot", "seq"):
            if k in doc:
                doc[k] = draw(st.one_of(st.integers(1, 40), box_ids if k == "box" else ints))
    return doc


payload_st = st.one_of(st.binary(max_size=80), st.builds(dumps, values), st.builds(dumps, envelope()),
                       st.builds(lambda d: dumps(d)[: len(dumps(d)) // 2], envelope()))


def _topic_for(doc, t):
    # Half the time, the topic that the document claims to be for.
    if isinstance(doc, dict) and isinstance(doc.get("box"), str):
        kind = doc.get("kind")
        if kind == "event":
            return topics.event(doc["box"])
        if isinstance(kind, str):
            return topics.telemetry(doc["box"], kind)
        if "state" in doc:
            return topics.status(doc["box"])
        if "section" in doc:
            return topics.reported(doc["box"], str(doc["section"]))
    return t


_STORE: dict = {}


def _store():
    from backend.store import Store
    if "s" not in _STORE:
        _STORE["dir"] = tmp("ingest")
        _STORE["s"] = Store(f"sqlite:///{_STORE['dir'] / 'fuzz.db'}", quarantine_per_box=10**9)
    return _STORE["s"]


@fuzz()
@given(st.lists(st.tuples(topic_st, payload_st, st.booleans(), st.booleans()), min_size=1, max_size=12))
def fuzz_ingest_payloads(batch):
    from backend.ingest import classify
    store = _store()
    recs = []
    for t, p, retained, aligned in batch:
        if aligned:
            try:
                t = _topic_for(json.loads(p), t)
            except ValueError:
                pass
        r = classify(t, p, retained)          # never raises
        assert r.what in ("msg", "status", "reported", "desired", "invalid"), r.what
        if r.what == "invalid":
            assert r.errors and all(isinstance(e, str) and e for e in r.errors), r
        recs.append(r)
    count("ingest payloads", len(batch))
    q0 = store._q("SELECT COUNT(*) FROM quarantine")[0][0]
    counts = store.write_batch(recs)         # never raises
    n_msg = sum(1 for r in recs if r.what == "msg")
    n_bad = sum(1 for r in recs if r.what == "invalid")
    assert counts.get("received") == len(recs)
    assert counts.get("invalid", 0) == n_bad
    assert counts.get("stored", 0) + counts.get("duplicates", 0) == n_msg
    assert store._q("SELECT COUNT(*) FROM quarantine")[0][0] == q0 + n_bad
    kept = {bytes(q["payload"]) for q in store.quarantine(n_bad)} if n_bad else set()
    assert kept == {bytes(r.payload) for r in recs if r.what == "invalid"}
    again = store.write_batch(recs)          # a redelivered batch changes nothing
    assert again.get("stored", 0) == 0 and again.get("duplicates", 0) == n_msg
    # every stream: stored seqs and recorded gaps cover 1..max exactly
    for box, boot in {(r.doc["box"], r.doc["boot"]) for r in recs if r.what == "msg"}:
        seqs = {s for _b, _o, s in store._q("SELECT box, boot, seq FROM messages WHERE box=? AND boot=?",
                                             (box, boot))}
        gaps = [(g["first"], g["last"]) for g in store.gaps(box) if g["boot"] == boot]
        # Gaps and stored seqs are disjoint and together make 1..max: counted
        # (seqs may be near 2**62), then listed when small.
        assert sum(b - a + 1 for a, b in gaps) + len(seqs) == max(seqs), (box, boot, gaps)
        assert not any(a <= s <= b for s in seqs for a, b in gaps), (box, boot, gaps)
        if max(seqs) > 10**5:
            continue
        missing = set()
        for a, b in gaps:
            missing.update(range(a, b + 1))
        assert seqs | missing == set(range(1, max(seqs) + 1)) and not seqs & missing, (box, boot)


def test_fuzz_ingest_payloads():
    fuzz_ingest_payloads()
    assert _store()._q("PRAGMA integrity_check") == [("ok",)]


def test_ingest_survives_out_of_range_numbers():
    from backend.ingest import classify
    from backend.store import Store
    store = Store(":memory:")
    env = dict(EVENT, seq=2**63)
    r = classify(topics.event("fz-1"), dumps(env))
    counts = store.write_batch([r])
    assert counts["invalid"] == 1


TARGETS = [("ingest payloads", test_fuzz_ingest_payloads)]
