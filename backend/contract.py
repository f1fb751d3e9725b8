"""The MQTT contract as code: which JSON Schema governs which topic, and validation.

The schemas live in docs/contract/schemas/ (the single source); the AsyncAPI
document docs/contract/asyncapi.yaml names the same files. An installed wheel
carries that directory as the package data backend/contract_data/
(pyproject.toml); a checkout reads docs/contract/ itself.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from agent import topics

# docs/contract/: the one source of the schemas and examples; installed from a
# wheel it is backend/contract_data/, in a checkout docs/contract/ of the tree
_PACKAGED = Path(__file__).resolve().parent / "contract_data"
CONTRACT_DIR = _PACKAGED if (_PACKAGED / "schemas").is_dir() else \
    Path(__file__).resolve().parent.parent / "docs" / "contract"
SCHEMA_DIR = CONTRACT_DIR / "schemas"
EXAMPLES_DIR = CONTRACT_DIR / "examples"


class ContractError(ValueError):
    """A message does not follow the contract. `errors` lists 'path: message' strings."""

    def __init__(self, topic: str, errors: list[str]):
        super().__init__(f"{topic}: " + "; ".join(errors))
        self.topic = topic
        self.errors = errors


@lru_cache(maxsize=1)
def _registry() -> tuple[Registry, dict[str, dict]]:
    schemas = {}
    reg = Registry()
    for f in sorted(SCHEMA_DIR.glob("*.json")):
        s = json.loads(f.read_text())
        schemas[f.name] = s
        res = Resource.from_contents(s)
        reg = reg.with_resource(f.name, res).with_resource(s["$id"], res)
    return reg, schemas


def schema_names() -> list[str]:
    return sorted(_registry()[1])


def schema_for(topic: str) -> str | None:
    """The schema file name for a topic, or None when the topic is not ours."""
    t = topics.parse(topic)
    if not t:
        return None
    return _schema_name(t[1], t[2])


@lru_cache(maxsize=256)
def _schema_name(kind: str, rest: str | None) -> str | None:
    names = _registry()[1]
    if kind == "status" and rest is None:
        return "status.json"
    if kind == "event" and rest is None:
        return "event.json"
    if kind == "telemetry" and rest:
        n = f"telemetry-{rest}.json"
        return n if n in names else "envelope.json"
    if kind == "desired" and rest:
        n = f"desired-{rest}.json"
        return n if n in names else "desired.json"
    if kind == "reported" and rest:
        n = f"reported-{rest}.json"
        return n if n in names else "reported.json"
    return None


@lru_cache(maxsize=64)
def validator(name: str) -> Draft202012Validator:
    reg, schemas = _registry()
    return Draft202012Validator(schemas[name], registry=reg)


@lru_cache(maxsize=64)
def compiled(name: str):
    """The compiled validity check of a schema (backend.fastschema), or None."""
    from backend.fastschema import compile_schema
    _reg, schemas = _registry()
    by_id = {s["$id"]: s for s in schemas.values() if "$id" in s}

    def resolve(ref: str, root: dict) -> dict:
        doc, _, frag = ref.partition("#")
        target = root if not doc else schemas.get(doc) or by_id[doc]
        for part in filter(None, frag.split("/")):
            target = target[part]
        return target
    return compile_schema(schemas[name], resolve)


def validate(topic: str, payload: bytes | str | dict, parsed: tuple | None = None) -> dict:
    """Parse and validate one message; returns the parsed payload or raises ContractError.
    parsed: topics.parse(topic), when the caller has it already."""
    t = parsed or topics.parse(topic)
    name = _schema_name(t[1], t[2]) if t else None
    if name is None:
        raise ContractError(topic, ["not a homebox v1 topic"])
    if isinstance(payload, dict):
        doc = payload
    else:
        try:
            doc = _loads(payload)
        except RecursionError:
            raise ContractError(topic, ["$: nested too deeply"]) from None
        except ValueError as e:
            raise ContractError(topic, [f"$: not JSON ({e})"]) from None
    bad = None if _surely_storable(payload) else unstorable(doc)
    if bad:
        raise ContractError(topic, bad)
    fast = compiled(name)
    errs = [] if fast is not None and fast(doc) else \
        sorted(validator(name).iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errs:
        raise ContractError(topic, [f"{e.json_path}: {e.message}" for e in errs[:10]])
    if name != "status.json" and isinstance(doc, dict) and "box" in doc and doc["box"] != t[0]:
        raise ContractError(topic, ["$.box: does not match the topic's box id"])
    return doc


INT_MIN, INT_MAX = -2**63, 2**63 - 1     # what BIGINT holds, on SQLite and PostgreSQL
MAX_DEPTH = 32


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


# json.loads with a keyword argument builds a decoder per call: one, built once
_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _loads(payload: bytes | str):
    """json.loads(payload, parse_constant=_no_constant), the same steps, one decoder."""
    if isinstance(payload, str):
        if payload.startswith("\ufeff"):
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", payload, 0)
    else:
        payload = bytes(payload).decode(json.detect_encoding(payload), "surrogatepass")
    return _DECODER.decode(payload)


_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")


def _bad_str(s: str) -> bool:
    return _BAD_CHARS.search(s) is not None


# where the parsed document could hold what unstorable() looks for (see _surely_storable)
_MAYBE_UNSTORABLE = re.compile(rb"\\u|[\x00\xed]|[0-9]{19}")


def _surely_storable(payload) -> bool:
    """A conservative look at the bytes, for the hot path: True only when the parsed
    document cannot hold what unstorable() looks for. Strings can hold a NUL or a
    lone surrogate only through a \\u escape or the raw bytes of a surrogate (json
    decodes bytes with surrogatepass; every UTF-8 surrogate starts with 0xED); a
    NUL byte could also mean UTF-16/32 input. An integer beyond 64 bits needs 19
    digits; a nesting deeper than MAX_DEPTH needs more than MAX_DEPTH brackets."""
    return (type(payload) is bytes and payload.count(b"[") + payload.count(b"{") <= MAX_DEPTH
            and _MAYBE_UNSTORABLE.search(payload) is None)


def unstorable(doc) -> list[str]:
    """What no store can hold, whatever the schema says (the schemas bound every
    field they name; this guards the open parts too): integers beyond signed 64 bits,
    strings or keys with NUL or lone surrogates, nesting deeper than MAX_DEPTH."""
    errs: list[str] = []
    stack = [(doc, "$", 0)]
    while stack and len(errs) < 10:
        v, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            errs.append(f"{path}: nested deeper than {MAX_DEPTH}")
        elif isinstance(v, bool) or v is None or isinstance(v, float):
            continue
        elif isinstance(v, int):
            if not INT_MIN <= v <= INT_MAX:
                errs.append(f"{path}: integer beyond signed 64 bits")
        elif isinstance(v, str):
            if _bad_str(v):
                errs.append(f"{path}: string holds NUL or a lone surrogate")
        elif isinstance(v, dict):
            for k, x in v.items():
                if _bad_str(k):
                    errs.append(f"{path}: key holds NUL or a lone surrogate")
                else:
                    stack.append((x, f"{path}.{k}", depth + 1))
        elif isinstance(v, list):
            stack.extend((x, f"{path}[{i}]", depth + 1) for i, x in enumerate(v))
    return errs


def kind_box_mismatch(topic: str, doc: dict) -> bool:
    t = topics.parse(topic)
    return bool(t and isinstance(doc, dict) and "box" in doc and doc["box"] != t[0])
