"""Shared by the fuzz tests (tests/test_fuzz_*.py, issue 9) and `make chaos`: the
budget of examples per target, the count of cases tried per target, scratch
directories, and random JSON values.

HB_FUZZ_EXAMPLES sets the examples per target (default 40 in `make test`;
`make chaos` runs 1000, setting it before it imports the fuzz modules). Each
tests/test_fuzz_*.py module lists its targets in TARGETS, (name, run) pairs that
`python -m tests.chaos` runs and reports with CASES; a target that cannot run
here is named in SKIPPED instead.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests import docfuzz

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

EXAMPLES = int(os.environ.get("HB_FUZZ_EXAMPLES", "40"))
CASES: dict[str, int] = {}
SKIPPED: dict[str, str] = {}


# Inside `make test` the examples are the same on every run (derandomized): a
# finding must not come and go between runs. `make chaos` explores at random.
DERANDOMIZE = "HB_FUZZ_EXAMPLES" not in os.environ


def fuzz(share: float = 1.0, minimum: int = 5):
    return settings(max_examples=max(minimum, int(EXAMPLES * share)), deadline=None, database=None,
                    derandomize=DERANDOMIZE, suppress_health_check=list(HealthCheck))


def count(name: str, n: int = 1) -> None:
    CASES[name] = CASES.get(name, 0) + n


_SCRATCH: list[Path] = []


def tmp(name: str) -> Path:
    """A fresh directory under one scratch directory, removed when the process ends."""
    if not _SCRATCH:
        import atexit
        _SCRATCH.append(Path(tempfile.mkdtemp(prefix="hb-fuzz-")))
        atexit.register(shutil.rmtree, _SCRATCH[0], True)
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=_SCRATCH[0]))


# ---- values -------------------------------------------------------------------------------

ints = st.integers(-2**62, 2**62)      # beyond int64: test_ingest_survives_out_of_range_numbers
scalars = st.one_of(st.none(), st.booleans(), ints, st.integers(-3, 10**6), st.text(max_size=20),
                    st.floats(allow_nan=False, allow_infinity=False))
values = st.recursive(scalars, lambda ch: st.one_of(st.lists(ch, max_size=4),
                                                    st.dictionaries(st.text(max_size=8), ch, max_size=4)),
                      max_leaves=10)


def mutate(doc):
    return docfuzz.mutate(doc, values)


def dumps(v) -> bytes:
    return json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")
