"""Issue 16, poison-proof ingest: the nine poison payloads (each passed the contract
and then crashed the store, or killed paho's network thread), live and retained, on
SQLite and PostgreSQL, leave ingest running and every good message around them stored.
Also: the contract bounds every integer and string; a batch the store refuses is
bisected to the culprit; the quarantine is bounded per box and by age."""
from __future__ import annotations

import json
import re
import threading
import time
import urllib.request

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend import contract
from backend.ingest import Ingest, classify
from backend.store import POISON, Rec, Store
from tests.helpers import mqtt_client


def env(box, seq, kind="health", data=None, boot=1):
    if data is None:
        data = {"fw": "0.1.0", "uptime_s": seq, "outbox_backlog": 0, "outbox_bytes": 0,
                "outbox_dropped": 0, "reconnects": 0}
    return {"v": 1, "box": box, "boot": boot, "seq": seq, "ts": 1767225600, "kind": kind, "data": data}


def _drop(box, seq, rng):
    return env(box, seq, "event", {"type": "outbox_dropped", "count": 1, "dropped_total": 1, "ranges": [rng]})


def poisons(box: str) -> list[tuple[str, str, bytes]]:
    """(name, topic, payload): the nine poison payloads of issue 16. Before the fix
    each passed the contract and then made the store raise (OverflowError on SQLite,
    NumericValueOutOfRange or DataError on PostgreSQL, UnicodeEncodeError on both),
    or raised RecursionError in paho's network thread."""
    t = f"homebox/v1/{box}"
    rep = {"box": box, "section": "options", "status": "applied"}
    st = {"state": "online", "box": box, "boot": 1}
    return [
        ("reported version 2**64", f"{t}/reported/options", json.dumps(dict(rep, version=2**64)).encode()),
        ("reported version 1e300", f"{t}/reported/options",
         json.dumps(dict(rep, version=0))[:-1].replace('"version": 0', '"version": 1e300').encode() + b"}"),
        ("outbox_dropped seq 2**70", f"{t}/event", json.dumps(_drop(box, 900001, [1, 1, 2**70])).encode()),
        ("outbox_dropped boot 2**64", f"{t}/event", json.dumps(_drop(box, 900002, [2**64, 1, 2])).encode()),
        ("outbox_dropped seq 1e300", f"{t}/event",
         json.dumps(_drop(box, 900003, [1, 1, 7])).replace("[1, 1, 7]", "[1, 1, 1e300]").encode()),
        ("status.fw with a NUL", f"{t}/status", json.dumps(dict(st, fw="0.1\u00000")).encode()),
        ("status.fw with a lone surrogate", f"{t}/status", json.dumps(dict(st, fw="0.1\ud800")).encode()),
        ("desired version 2**64", f"{t}/desired/options",
         json.dumps({"version": 2**64, "speed_tier": "2M"}).encode()),
        ("60,000 [", f"{t}/telemetry/health", b"[" * 60000),
    ]


# ---- the contract ---------------------------------------------------------------------

def _nodes(node, path="$"):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _nodes(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _nodes(v, f"{path}[{i}]")


def test_contract_bounds_every_integer_and_string():
    bad = []
    for name in contract.schema_names():
        schema = json.loads((contract.SCHEMA_DIR / name).read_text())
        for path, n in _nodes(schema):
            types = n.get("type") if isinstance(n.get("type"), list) else [n.get("type")]
            if "integer" in types and not (-2**63 <= n.get("minimum", -2**64) and n.get("maximum", 2**64) < 2**63):
                bad.append(f"{name}{path}: integer not bounded to signed 64 bits")
            if "string" in types and "enum" not in n and "const" not in n:
                pat = n.get("pattern")
                if "maxLength" not in n:
                    bad.append(f"{name}{path}: string without maxLength")
                if pat is None or any(re.search(pat, s) for s in ("\x00", "a\x00", "ab://a\x00", "\ud800")):
                    bad.append(f"{name}{path}: string may hold NUL or a lone surrogate")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name,topic,payload", poisons("P"), ids=[p[0] for p in poisons("P")])
def test_each_poison_is_quarantined_by_the_contract(name, topic, payload):
    r = classify(topic, payload)
    assert r.what == "invalid" and r.errors, (name, r)


def test_unstorable_guards_the_open_parts():
    assert contract.unstorable({"a": [{"b": 2**63}]}) == ["$.a[0].b: integer beyond signed 64 bits"]
    assert contract.unstorable({"k\x00": 1}) and contract.unstorable({"k": "\ud800"})
    deep: list = []
    for _ in range(40):
        deep = [deep]
    assert contract.unstorable({"data": deep})
    assert contract.unstorable({"v": 2**63 - 1, "s": "été", "f": 1e308}) == []
    with pytest.raises(contract.ContractError):
        contract.validate("homebox/v1/P/telemetry/x", json.dumps(env("P", 1, "x", {"nan": 1})).replace("1}}", "NaN}}"))


_json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers(min_value=-2**70, max_value=2**70)
    | st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from("\x00\ud800\udfff\\u")),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(doc=_json_values, raw_surrogates=st.booleans(), ensure_ascii=st.booleans())
def test_the_fast_storable_look_never_passes_what_unstorable_refuses(doc, raw_surrogates, ensure_ascii):
    """validate() skips the walk of unstorable() when the payload's bytes show it has
    nothing to find (contract._surely_storable): that look must be conservative."""
    text = json.dumps(doc, ensure_ascii=ensure_ascii)
    payload = text.encode("utf-8", "surrogatepass" if raw_surrogates else "backslashreplace")
    try:
        parsed = json.loads(payload)
    except ValueError:
        return
    if contract._surely_storable(payload):
        assert contract.unstorable(parsed) == [], payload


def test_the_fast_storable_look_on_known_poison():
    for p in (b'{"a":"\\u0000"}', b'{"a":1234567890123456789012}', '"\ud800"'.encode("utf-8", "surrogatepass"),
              b"[" * 40 + b"]" * 40, '{"a":1}'.encode("utf-16")):
        assert not contract._surely_storable(p), p
    assert contract._surely_storable(b'{"a":[1,{"b":"\\\\"}],"c":-9.5e300}')


# ---- the store's side: bisect, quarantine bounds --------------------------------------

def _raw_rec(topic, payload):
    """What classify made of a poison before the contract was bounded: it passed."""
    doc = json.loads(payload)
    box, kind = topic.split("/")[2], topic.split("/")[3]
    what = {"telemetry": "msg", "event": "msg", "status": "status", "reported": "reported",
            "desired": "desired"}[kind]
    return Rec(what, topic, payload, box=box, doc=doc, section=topic.split("/")[4] if kind in
               ("reported", "desired") else None)


def test_a_refused_batch_is_bisected_to_the_culprits(db_url):
    store = Store(db_url)
    ing = Ingest("mqtt://127.0.0.1:1", store, log=lambda *a: None)
    # all but the unparseable one, each from its own box (no poison supersedes another)
    bad = [_raw_rec(*poisons(f"B{i}")[i][1:]) for i in range(len(poisons("B")) - 1)]
    good = [classify("homebox/v1/G/telemetry/health", json.dumps(env("G", s)).encode()) for s in range(1, 41)]
    batch = good[:10] + bad[:4] + good[10:30] + bad[4:] + good[30:]
    counts = ing._write(batch)
    assert counts["stored"] == 40 and counts["received"] == len(batch)
    assert [s for _b, _o, s in store.seqs("G")] == list(range(1, 41))
    q = store.quarantine(100)
    assert all(e["errors"][0].startswith(POISON + "store: ") for e in q)
    assert {e["payload"] for e in q} <= {r.payload for r in bad}
    # SQLite holds a NUL, and 1e300 as a REAL; PostgreSQL refuses all eight
    assert len(q) == counts["poison"] == counts["invalid"] == store.counters()["poison"] == \
        (len(bad) if store.dialect == "postgresql" else len(bad) - 2)
    assert store.ping()
    store.close()


def test_quarantine_is_bounded_per_box_and_by_age(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/q.db", quarantine_per_box=5, quarantine_max_age=3600)
    old = Rec("invalid", "homebox/v1/O/event", b"x", box="O", errors=["e"], received_at=time.time() - 7200)
    store.write_batch([old])
    for i in range(3):
        store.write_batch([Rec("invalid", "homebox/v1/Q/event", b"%d" % j, box="Q", errors=["e"])
                           for j in range(i * 4, i * 4 + 4)])
    store.write_batch([Rec("invalid", "other/topic", b"n", box=None, errors=["e"])])
    rows = store.quarantine(100)
    assert sorted(r["payload"] for r in rows if r["box"] == "Q") == [b"10", b"11", b"7", b"8", b"9"]
    assert not [r for r in rows if r["box"] == "O"]                   # aged out
    assert [r["payload"] for r in rows if r["box"] is None] == [b"n"]
    assert store.counters()["invalid"] == 14                          # counted all the same
    store.close()


# ---- live and retained, through a real Mosquitto ------------------------------------------

def _metrics(port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {ln.split()[0]: float(ln.split()[1]) for ln in body.splitlines() if ln and not ln.startswith("#")}


def test_nine_poisons_live_and_retained_leave_ingest_running(broker, db_url):
    store = Store(db_url)
    # retained first: a fresh ingest with a fresh database meets them at subscribe
    c = mqtt_client(broker.port, client_id="pub-poison")
    c.loop_start()
    infos = [c.publish("homebox/v1/G/status", json.dumps({"state": "online", "box": "G", "boot": 1,
                                                          "fw": "0.1.0"}), qos=1, retain=True)]
    for i in range(len(poisons("R"))):      # nine boxes: one retained poison each
        _n, t, p = poisons(f"R{i}")[i]
        infos.append(c.publish(t, p, qos=1, retain=True))
    for i in infos:
        i.wait_for_publish(10)
    t0 = time.time()
    ing = Ingest(f"mqtt://127.0.0.1:{broker.port}", store, client_id="ing-poison", batch_size=20,
                 batch_wait=0.05, log=lambda *a: None, metrics_port=0)
    th = threading.Thread(target=ing.run, daemon=True)
    th.start()
    assert ing.subscribed.wait(10)
    n, infos = 0, []
    live = poisons("L")
    for _name, t, p in live:                  # each poison between good messages, live
        for _ in range(5):
            n += 1
            infos.append(c.publish("homebox/v1/G/telemetry/health", json.dumps(env("G", n)), qos=1))
        infos.append(c.publish(t, p, qos=1))
    for _ in range(5):
        n += 1
        infos.append(c.publish("homebox/v1/G/telemetry/health", json.dumps(env("G", n)), qos=1))
    for i in infos:
        i.wait_for_publish(10)
    reader = Store(db_url)                    # ingest's connection is its own
    deadline = time.time() + 20
    while time.time() < deadline and len(reader.seqs("G")) < n:
        time.sleep(0.1)
    store = reader
    print(f"stored {n} good messages around 18 poisons in {time.time() - t0:.2f} s")
    try:
        assert [s for _b, _o, s in store.seqs("G")] == list(range(1, n + 1))
        assert th.is_alive() and ing.client._thread is not None and ing.client._thread.is_alive()
        m = _metrics(ing.metrics.port)
        q = store.quarantine(100)
        assert len(q) == 2 * len(live) == m["homebox_ingest_quarantined_total"], [x["topic"] for x in q]
        assert m["homebox_ingest_up"] == 1 and m["homebox_ingest_mqtt_connected"] == 1
        assert m["homebox_ingest_db_up"] == 1 and m["homebox_ingest_pending"] == 0
        assert m["homebox_store_missing"] == 0 and m["homebox_ingest_last_commit_timestamp_seconds"] > 0
        assert urllib.request.urlopen(f"http://127.0.0.1:{ing.metrics.port}/healthz", timeout=5).status == 200
        assert store.boxes()[0]["fw"] == "0.1.0"
    finally:
        c.loop_stop()
        c.disconnect()
        ing.stop()
        th.join(10)
        ing.store.close()
        reader.close()


def test_unexpected_retained_messages_are_cleared_and_alarmed(broker, tmp_path):
    from backend import status
    from tests.helpers import retained
    url = f"sqlite:///{tmp_path}/r.db"
    c = mqtt_client(broker.port, client_id="pub-retained")
    c.loop_start()
    infos = [c.publish("homebox/v1/X/status", json.dumps({"state": "online", "box": "X", "boot": 1}),
                       qos=1, retain=True),
             c.publish("homebox/v1/X/telemetry/health", json.dumps(env("X", 1)), qos=1, retain=True),
             c.publish("homebox/v1/X/telemetry/junk", b"x" * 60000, qos=1, retain=True),
             c.publish("homebox/v1/X/event", json.dumps(_drop("X", 2, [1, 1, 1])), qos=1, retain=True)]
    for i in infos:
        i.wait_for_publish(10)
    c.loop_stop()
    c.disconnect()
    store = Store(url)
    ing = Ingest(f"mqtt://127.0.0.1:{broker.port}", store, client_id="ing-retained", batch_size=20,
                 batch_wait=0.05, log=lambda *a: None)
    th = threading.Thread(target=ing.run, daemon=True)
    th.start()
    reader = Store(url)
    try:
        assert ing.subscribed.wait(10)
        deadline = time.time() + 10
        while time.time() < deadline and ing.totals["retained_cleared"] < 3:
            time.sleep(0.05)
        time.sleep(0.3)                       # the clears come back: acked, not stored
        assert ing.totals["retained_cleared"] == 3
        assert [t for t, _p in retained(broker.port, "homebox/v1/X/#")] == ["homebox/v1/X/status"]
        assert [s for _b, _o, s in reader.seqs("X")] == [1, 2]        # the data is kept
        assert [q["topic"] for q in reader.quarantine()] == ["homebox/v1/X/telemetry/junk"]
        (a,) = reader.alarms()["X"]
        assert a["code"] == "retained_cleared" and a["n"] == 3
        (row,) = status.fleet(reader)
        assert "retained_cleared" in {x["code"] for x in row["alarms"]}
    finally:
        ing.stop()
        th.join(10)
        store.close()
        reader.close()


def test_through_the_generated_broker_a_box_writes_only_contract_topics(tmp_path):
    """With the generated configuration: a box's retained telemetry is cleared by
    ingest's own account (the ACL lets it), a sub-topic outside the contract never
    reaches the broker."""
    from tests.helpers import FleetBroker
    box = "box-r"
    fleet = FleetBroker(tmp_path / "broker", {box: "pw-box-r-5c4b3a29"}).start()
    store = Store(f"sqlite:///{tmp_path}/f.db")
    reader = Store(f"sqlite:///{tmp_path}/f.db")
    try:
        c = mqtt_client(fleet.plain, box, fleet.passwords[box], client_id=box)
        c.loop_start()
        infos = [c.publish(f"homebox/v1/{box}/telemetry/health", json.dumps(env(box, 1)), qos=1, retain=True),
                 c.publish(f"homebox/v1/{box}/telemetry/junk", b"x" * 60000, qos=1, retain=True),
                 c.publish(f"homebox/v1/{box}/reported/junk", b"{}", qos=1, retain=True),
                 c.publish(f"homebox/v1/{box}/status", json.dumps({"state": "online", "box": box, "boot": 1}),
                           qos=1, retain=True)]
        for i in infos:
            i.wait_for_publish(10)
        c.loop_stop()
        c.disconnect()
        user = "homebox-ingest-1"
        ing = Ingest(fleet.url(user), store, tls_ca=str(fleet.ca), batch_size=20, batch_wait=0.05, log=lambda *a: None)
        th = threading.Thread(target=ing.run, daemon=True)
        th.start()
        assert ing.subscribed.wait(10)
        deadline = time.time() + 10
        while time.time() < deadline and ing.totals["retained_cleared"] < 1:
            time.sleep(0.05)
        time.sleep(0.3)
        ing.stop()
        th.join(10)
        spy = "homebox-ingest-2"            # what a new subscriber gets: nothing retained
        got: list = []
        s = mqtt_client(**fleet.login(spy), client_id=spy)
        s.on_message = lambda c, u, m: got.append((m.topic, m.retain))
        s.on_connect = lambda c, u, f, rc, p: c.subscribe(f"homebox/v1/{box}/#", qos=1)
        s.loop_start()
        time.sleep(1.0)
        s.loop_stop()
        s.disconnect()
        assert got == [(f"homebox/v1/{box}/status", True)]       # the contract's retained topic stays
        # health and status (QoS 1 may deliver one twice on a loaded machine: the
        # store below holds it once either way)
        assert ing.totals["retained_cleared"] == 1 and ing.totals["received"] >= 2, ing.totals
        assert [s for _b, _o, s in reader.seqs(box)] == [1] and reader.quarantine() == []
        assert reader.alarms()[box][0]["code"] == "retained_cleared"
    finally:
        store.close()
        reader.close()
        fleet.stop()
