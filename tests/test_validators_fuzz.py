"""Property-based fuzz of the three section validators and the signing code.

- A validator never crashes: any JSON value gives either acceptance or Invalid
  naming a field; the box's first violation is the operator tool's first one.
- No partial apply: through the twin, a document is applied whole (memory and
  disk equal the document) or not at all (memory and disk unchanged).
- What the box accepts also passes the published JSON Schema.
- The canonical form is json.dumps(sort_keys, compact, ensure_ascii=False) and
  the hand-written HMAC equals CPython's hmac.
"""
from __future__ import annotations

import copy
import hashlib
import hmac as std_hmac
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import config
from agent.rules import SECTIONS, sections, sign
from agent.runtime import Box
from agent.twin import Invalid
from backend import contract
from tests import docfuzz

EX = Path(__file__).resolve().parent.parent / "docs" / "contract" / "examples"
BASE = {s: json.loads((EX / f"desired-{s}.json").read_text()) for s in SECTIONS}

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.text(max_size=30),
                    st.sampled_from(["", "00:00", "24:00", "23:59", "12:60", "aa:bb:cc:dd:ee:ff", "AA:BB:CC:DD:EE:F",
                                     "mon", "sun", "tnt", "cinema", "strict", "off", "10M", "0M", "+33299000000",
                                     "CET-1CEST,M3.5.0,M10.5.0/3", "IST-5:30", "EST5EDT", "udp://@239.0.0.1:1",
                                     "\u0663\u0663:00", "CET-\u0661"]),
                    st.floats(allow_nan=False, allow_infinity=False))
values = st.recursive(scalars, lambda ch: st.one_of(st.lists(ch, max_size=5),
                                                    st.dictionaries(st.text(max_size=8), ch, max_size=5)),
                      max_leaves=12)


@st.composite
def mutated(draw, section):
    doc = draw(docfuzz.mutate(BASE[section], values))
    if draw(st.booleans()):
        doc["version"] = draw(st.one_of(st.integers(-3, 10**6), values))
    return doc


def docs(section):
    return st.one_of(mutated(section), values, st.dictionaries(st.text(max_size=10), values, max_size=4))


CTX = {"channels": BASE["channels"]}


def judge(section, doc):
    """(box verdict: None or (field, rule), every violation) for one document."""
    box = None
    try:
        from agent.twin import check_envelope
        check_envelope(doc)
        sections.check(section, doc, ctx=CTX)
    except Invalid as e:
        box = (e.field, e.rule)
    errs = sections.errors(section, doc, CTX) if isinstance(doc, dict) else [("$", "must be a JSON object")]
    return box, errs


def _fuzz_validator(section, doc):
    box, errs = judge(section, doc)   # any other exception fails the test
    assert (box is None) == (not errs)
    if box:
        assert box == errs[0]
        assert isinstance(box[0], str) and box[0] and isinstance(box[1], str) and box[1]
    elif isinstance(doc, dict) and all(type(v) is not float for v in _leaves(doc)):
        contract.validate(f"homebox/v1/hb-1/desired/{section}", doc)


def _leaves(v):
    if isinstance(v, dict):
        for x in v.values():
            yield from _leaves(x)
    elif isinstance(v, list):
        for x in v:
            yield from _leaves(x)
    else:
        yield v


FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(docs("parental"))
def test_fuzz_parental(doc):
    _fuzz_validator("parental", doc)


@FUZZ
@given(docs("channels"))
def test_fuzz_channels(doc):
    _fuzz_validator("channels", doc)


@FUZZ
@given(docs("options"))
def test_fuzz_options(doc):
    _fuzz_validator("options", doc)


_TWIN_DIR = {}


class _Hal:
    # What a Box asks of its HAL for documents: the twin runs the box's own wiring.
    name = "fuzz"

    def now(self):
        return None

    def enforce(self, section, doc):
        pass


def _box(state_dir):
    return Box(config.load(overrides={"box_id": "fz-1", "state_dir": str(state_dir)}), _Hal())


def _twin(tmp_path_factory):
    if "t" not in _TWIN_DIR:
        _TWIN_DIR["t"] = tmp_path_factory.mktemp("fuzztwin")
    return _TWIN_DIR["t"]


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.sampled_from(SECTIONS), st.one_of(*[mutated(s) for s in SECTIONS])),
                min_size=1, max_size=6))
def test_no_partial_apply(tmp_path_factory, seq):
    base = _twin(tmp_path_factory)
    sd = base / f"t{len(list(base.iterdir()))}"
    d = sd / "docs"
    t = _box(sd).twin
    for section, doc in seq:
        before = copy.deepcopy(t.applied.get(section))
        disk_before = (d / f"{section}.json").read_text() if (d / f"{section}.json").exists() else None
        payload = json.dumps(doc)
        r = t.handle(section, payload)
        disk = (d / f"{section}.json").read_text() if (d / f"{section}.json").exists() else None
        if r == "applied":
            assert t.applied[section] == json.loads(payload)
            assert json.loads(disk) == json.loads(payload)
            assert t.reported[section]["status"] == "applied"
        else:
            assert r in ("rejected", "replay")
            assert t.applied.get(section) == before
            assert disk == disk_before
            if r == "rejected":
                assert t.reported[section]["rejected"]["field"]
    # a restart sees exactly what was applied
    t2 = _box(sd).twin
    assert t2.applied == t.applied


json_docs = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.text()),
                         lambda ch: st.one_of(st.lists(ch, max_size=4), st.dictionaries(st.text(), ch, max_size=4)),
                         max_leaves=20)


@settings(max_examples=1000, deadline=None)
@given(json_docs)
def test_canonical_is_sorted_compact_json(doc):
    out: list[bytes] = []
    try:
        want = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return
    try:
        sign.canonical(doc, out.append)
    except UnicodeEncodeError:
        raise AssertionError("encodable by json but not by the canonical form") from None
    assert b"".join(out) == want


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=200), st.binary(max_size=300))
def test_hmac_matches_cpython(key, msg):
    assert sign.hmac(key, msg) == std_hmac.new(key, msg, hashlib.sha256).digest()
