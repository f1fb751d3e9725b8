"""Hypothesis strategies shared by the fuzz tests: JSON documents with random edits."""
from __future__ import annotations

import copy

from hypothesis import strategies as st


def paths(v, prefix=()):
    """Every path (a tuple of keys and indexes) in a JSON value, the root first."""
    yield prefix
    if isinstance(v, dict):
        for k in list(v):
            yield from paths(v[k], prefix + (k,))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            yield from paths(x, prefix + (i,))


@st.composite
def mutate(draw, doc, values):
    """A copy of doc with 1-3 random edits: a value replaced or removed, an item
    added (drawn from `values`) or an item duplicated."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 3))):
        ps = [p for p in paths(doc) if p]
        if not ps:
            break
        p = draw(st.sampled_from(ps))
        parent = doc
        for k in p[:-1]:
            parent = parent[k]
        action = draw(st.integers(0, 3))
        if action == 0 and isinstance(parent, dict):
            del parent[p[-1]]
        elif action == 1 and isinstance(parent, list):
            parent.append(draw(values))
        elif action == 2 and isinstance(parent, list) and parent:
            parent.append(copy.deepcopy(parent[0]))
        else:
            parent[p[-1]] = draw(values)
    return doc
