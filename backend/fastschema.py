"""A compiled validity check for the contract's JSON Schemas (2020-12), for the hot path.

jsonschema's validator walks the schema for every message (about 85 % of ingest's
classification time on fleet-shaped traffic). `compile_schema` turns one schema into
a tree of closures that answers only "valid or not", for the keywords the contract
uses; ingest runs it first and asks jsonschema for the error messages only when it
says no. A schema with a keyword this module does not know compiles to None (the
caller then uses jsonschema alone): it never guesses. tests/test_fastschema.py
checks it against jsonschema on the contract's examples and on mutated documents.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]

_IGNORED = {"$schema", "$id", "$defs", "$comment", "title", "description", "examples", "default",
            "deprecated", "readOnly", "writeOnly", "contentMediaType", "contentEncoding"}


class Unsupported(Exception):
    pass


def _is_int(x) -> bool:
    return (isinstance(x, int) and not isinstance(x, bool)) or (isinstance(x, float) and x.is_integer())


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


_TYPES: dict[str, Check] = {
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "string": lambda x: isinstance(x, str),
    "integer": _is_int,
    "number": _is_num,
    "boolean": lambda x: isinstance(x, bool),
    "null": lambda x: x is None,
}


def _eq(a, b) -> bool:
    """JSON equality as jsonschema has it: booleans are not numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_eq(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_eq(a[k], b[k]) for k in a)
    if isinstance(a, (list, dict)) or isinstance(b, (list, dict)):
        return False
    return a == b


def compile_schema(schema, resolve: Callable[[str, dict], dict]) -> Check | None:
    """A predicate for `schema`, or None when it uses a keyword not handled here.
    resolve(ref, root) -> the schema a $ref names (root: the schema document the ref is in)."""
    memo: dict[int, list] = {}
    try:
        return _compile(schema, schema, resolve, memo)
    except Unsupported:
        return None


def _compile(s, root, resolve, memo) -> Check:
    if s is True:
        return lambda x: True
    if s is False:
        return lambda x: False
    if not isinstance(s, dict):
        raise Unsupported(repr(s)[:40])
    key = id(s)
    if key in memo:                          # a recursive $ref: late binding
        cell = memo[key]
        return lambda x: cell[0](x)
    cell: list = [None]
    memo[key] = cell
    checks: list[Check] = []
    unknown = set(s) - _IGNORED - _KEYWORDS
    if unknown:
        raise Unsupported(", ".join(sorted(unknown)))
    if "$ref" in s:
        ref = s["$ref"]
        target = resolve(ref, root)
        troot = root if ref.startswith("#") else resolve(ref.split("#")[0], root) if "#" in ref else target
        checks.append(_compile(target, troot, resolve, memo))
    if "type" in s:
        checks.append(_type_check(s["type"] if isinstance(s["type"], list) else [s["type"]]))
    if "enum" in s:
        checks.append(_enum_check(list(s["enum"])))
    if "const" in s:
        checks.append(_enum_check([s["const"]]))
    if "minimum" in s or "maximum" in s:
        checks.append(_range_check(s.get("minimum"), s.get("maximum")))
    if "minLength" in s:
        m = s["minLength"]
        checks.append(lambda x, m=m: not isinstance(x, str) or len(x) >= m)
    if "maxLength" in s:
        m = s["maxLength"]
        checks.append(lambda x, m=m: not isinstance(x, str) or len(x) <= m)
    if "pattern" in s:
        rx = re.compile(s["pattern"])
        checks.append(lambda x, rx=rx: not isinstance(x, str) or rx.search(x) is not None)
    if "required" in s:
        req = list(s["required"])

        def required(x, req=tuple(req)):
            if not isinstance(x, dict):
                return True
            for k in req:
                if k not in x:
                    return False
            return True
        checks.append(required)
    props = {k: _compile(v, root, resolve, memo) for k, v in (s.get("properties") or {}).items()}
    if props:
        items = list(props.items())

        def properties(x, items=items):
            if not isinstance(x, dict):
                return True
            for k, f in items:
                if k in x and not f(x[k]):
                    return False
            return True
        checks.append(properties)
    if "additionalProperties" in s:
        names = frozenset(props)
        if s["additionalProperties"] is False:
            checks.append(lambda x, names=names: not isinstance(x, dict) or x.keys() <= names)
        else:
            extra = _compile(s["additionalProperties"], root, resolve, memo)
            checks.append(lambda x, names=names, extra=extra: not isinstance(x, dict)
                          or all(extra(v) for k, v in x.items() if k not in names))
    prefix = [_compile(v, root, resolve, memo) for v in s.get("prefixItems") or []]
    if prefix:
        checks.append(lambda x, prefix=prefix: not isinstance(x, list)
                      or all(f(v) for f, v in zip(prefix, x)))
    if "items" in s:
        it, n = _compile(s["items"], root, resolve, memo), len(prefix)
        checks.append(lambda x, it=it, n=n: not isinstance(x, list) or all(it(v) for v in x[n:]))
    if "minItems" in s:
        m = s["minItems"]
        checks.append(lambda x, m=m: not isinstance(x, list) or len(x) >= m)
    if "maxItems" in s:
        m = s["maxItems"]
        checks.append(lambda x, m=m: not isinstance(x, list) or len(x) <= m)
    if s.get("uniqueItems") is True:
        checks.append(lambda x: not isinstance(x, list)
                      or all(not _eq(x[i], x[j]) for i in range(len(x)) for j in range(i + 1, len(x))))
    if "allOf" in s:
        subs = [_compile(v, root, resolve, memo) for v in s["allOf"]]
        checks.append(_all(subs))
    if "anyOf" in s:
        subs = [_compile(v, root, resolve, memo) for v in s["anyOf"]]
        checks.append(lambda x, subs=subs: any(f(x) for f in subs))
    if "oneOf" in s:
        subs = [_compile(v, root, resolve, memo) for v in s["oneOf"]]
        checks.append(lambda x, subs=subs: sum(1 for f in subs if f(x)) == 1)
    if "not" in s:
        neg = _compile(s["not"], root, resolve, memo)
        checks.append(lambda x, neg=neg: not neg(x))
    if "if" in s:
        cond = _compile(s["if"], root, resolve, memo)
        then = _compile(s.get("then", True), root, resolve, memo)
        other = _compile(s.get("else", True), root, resolve, memo)
        checks.append(lambda x, c=cond, t=then, e=other: t(x) if c(x) else e(x))

    check = _all(checks)
    cell[0] = check
    return check


def _all(checks: list[Check]) -> Check:
    """The conjunction of checks, without a layer for one (a for loop: cheaper than
    all() over a generator on the hot path)."""
    if not checks:
        return lambda x: True
    if len(checks) == 1:
        return checks[0]
    checks_ = tuple(checks)

    def check(x):
        for f in checks_:
            if not f(x):
                return False
        return True
    return check


# What json.loads builds, exactly: these types pass a "type" check at once; any other
# (a subclass, a bool for "integer", a float for "integer") takes the general test.
_EXACT = {"object": (dict,), "array": (list,), "string": (str,), "integer": (int,),
          "number": (int, float), "boolean": (bool,), "null": (type(None),)}


def _type_check(ts: list[str]) -> Check:
    fs = [_TYPES[t] for t in ts]
    exact = frozenset(c for t in ts for c in _EXACT[t])

    def check(x):
        if type(x) in exact:
            return True
        for f in fs:
            if f(x):
                return True
        return False
    return check


def _range_check(lo, hi) -> Check:
    """minimum and/or maximum: they bound numbers only (booleans are not numbers)."""
    lo_ = float("-inf") if lo is None else lo
    hi_ = float("inf") if hi is None else hi

    def check(x):
        t = type(x)
        if t is int or t is float:
            return lo_ <= x <= hi_
        return not _is_num(x) or lo_ <= x <= hi_
    return check


def _enum_check(vals: list) -> Check:
    """enum/const. For a str (the usual case), a set lookup among the str values is
    the same as _eq against each value (a str equals only a str)."""
    strs = frozenset(v for v in vals if type(v) is str)

    def check(x):
        if type(x) is str:
            return x in strs
        for v in vals:
            if _eq(x, v):
                return True
        return False
    return check


_KEYWORDS = {"$ref", "type", "enum", "const", "minimum", "maximum", "minLength", "maxLength", "pattern",
             "required", "properties", "additionalProperties", "prefixItems", "items", "minItems",
             "maxItems", "uniqueItems", "allOf", "anyOf", "oneOf", "not", "if", "then", "else"}
