"""The AsyncAPI document and the schemas agree, and every schema is a valid schema."""
import json

import yaml
from jsonschema import Draft202012Validator

from backend import contract


def test_every_schema_is_valid_and_referenced():
    doc = yaml.safe_load((contract.SCHEMA_DIR.parent / "asyncapi.yaml").read_text())
    assert doc["asyncapi"].startswith("3.")
    refs = set()
    for ch in doc["channels"].values():
        for msg in ch["messages"].values():
            refs.add(msg["payload"]["$ref"].rsplit("/", 1)[-1])
    for name in contract.schema_names():
        Draft202012Validator.check_schema(json.loads((contract.SCHEMA_DIR / name).read_text()))
    assert refs <= set(contract.schema_names())
    assert set(contract.schema_names()) - refs <= {"envelope.json", "desired.json"}


def test_topics_map_to_schemas():
    assert contract.schema_for("homebox/v1/b1/telemetry/health") == "telemetry-health.json"
    assert contract.schema_for("homebox/v1/b1/status") == "status.json"
    assert contract.schema_for("homebox/v1/b1/reported/options") == "reported.json"
    assert contract.schema_for("other/b1/status") is None
