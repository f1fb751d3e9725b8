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
            # the payloads are JSON Schema 2020-12, and the document says so
            assert msg["payload"]["schemaFormat"] == "application/schema+json;version=draft-2020-12"
            refs.add(msg["payload"]["schema"]["$ref"].rsplit("/", 1)[-1])
    for name in contract.schema_names():
        Draft202012Validator.check_schema(json.loads((contract.SCHEMA_DIR / name).read_text()))
    assert refs <= set(contract.schema_names())
    assert set(contract.schema_names()) - refs <= {"envelope.json", "desired.json"}


def test_topics_map_to_schemas():
    assert contract.schema_for("homebox/v1/b1/telemetry/health") == "telemetry-health.json"
    assert contract.schema_for("homebox/v1/b1/status") == "status.json"
    assert contract.schema_for("homebox/v1/b1/reported/options") == "reported.json"
    assert contract.schema_for("other/b1/status") is None


def test_the_server_and_operations_say_how_they_are_carried():
    doc = yaml.safe_load((contract.SCHEMA_DIR.parent / "asyncapi.yaml").read_text())
    (server,) = doc["servers"].values()
    assert server["protocol"] == "secure-mqtt" and server["host"].endswith(":8883")
    for s in server["security"]:
        name = s["$ref"].rsplit("/", 1)[-1]
        assert doc["components"]["securitySchemes"][name]["type"] == "userPassword"
    assert server["bindings"]["mqtt"]["lastWill"]["retain"] is True
    for name, op in doc["operations"].items():
        b = op["bindings"]["mqtt"]
        ch = op["channel"]["$ref"].rsplit("/", 1)[-1]
        assert b["qos"] == 1, name
        # retained exactly where the contract keeps a state document
        assert b["retain"] == (ch.split("_")[0] in ("status", "reported", "desired")), name
