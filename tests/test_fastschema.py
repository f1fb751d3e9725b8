"""backend.fastschema against jsonschema: the compiled check of every contract schema
says "valid" exactly when jsonschema finds no error, on the contract's examples and
on mutations of valid documents of every kind (a fast check that accepted what
jsonschema refuses would let a bad message into the store)."""
from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from backend import contract
from tests.fuzzing import fuzz, mutate
from tests.test_fuzz_ingest import EVENT, HEALTH, REPORTED, STATUS
from tests.test_status_report import _cons, _speed


def _env(kind, seq, data):
    return {"v": 1, "box": "fz-1", "boot": 1, "seq": seq, "ts": 1767225600, "kind": kind, "data": data}


BANDS = {"excellent": 0.5, "good": 0.3, "fair": 0.1, "weak": 0.05, "unusable": 0.05}
COVERAGE = _env("coverage", 3, {"interval_s": 3600, "samples": 60, "rssi": "ok", "scan": "unsupported",
                                "channel": "unsupported",
                                "stations": [{"id": "0000000000000001", "assoc_s": 3600, "seen_s": 3600,
                                              "signal_strength": {"min": -82, "avg": -60, "max": -45},
                                              "bands": BANDS}]})
SPEED = _env("speed", 4, _speed(0.9))
CONSUMPTION = _env("consumption", 5, _cons(1767225600, 500, 12))
DOCS = {"telemetry-health.json": HEALTH, "event.json": EVENT, "status.json": STATUS,
        "reported.json": REPORTED, "telemetry-coverage.json": COVERAGE, "telemetry-speed.json": SPEED,
        "telemetry-consumption.json": CONSUMPTION, "envelope.json": HEALTH}
for f in sorted(contract.EXAMPLES_DIR.glob("*.json")):
    if f.name in contract.schema_names():
        DOCS[f.name] = json.loads(f.read_text())


def _agree(name: str, doc) -> None:
    fast = contract.compiled(name)
    assert fast is not None, f"{name}: not compiled (a keyword fastschema does not know)"
    slow = not list(contract.validator(name).iter_errors(doc))
    assert fast(doc) == slow, (name, doc, slow)


def test_every_schema_compiles_and_agrees_on_the_samples():
    for name in contract.schema_names():
        assert contract.compiled(name) is not None, name
    assert all(contract.compiled(n)(d) for n, d in DOCS.items())
    for name, doc in DOCS.items():
        _agree(name, doc)


@fuzz(share=3.0)
@given(st.sampled_from(sorted(DOCS)).flatmap(lambda n: st.tuples(st.just(n), mutate(DOCS[n]))))
def test_the_compiled_check_agrees_with_jsonschema(case):
    name, doc = case
    for other in (name, "envelope.json", "status.json"):
        _agree(other, doc)
