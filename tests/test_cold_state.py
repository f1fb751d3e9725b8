"""Hot objects declare their state (issue 13): every attribute that a cold half
(agent/*_cold.py) sets on its hot object is named in the hot class, and cold
halves use public names only. And a box handling a desired document loads each
cold module once (agent.compat.cold: nested calls share the loaded copy)."""
from __future__ import annotations

import ast
import json
import sys

import pytest

from tests.helpers import ROOT

# cold module -> (hot module, class, the parameter that is the hot object)
PAIRS = {
    "runtime_cold": ("agent.runtime", "Box", "box"),
    "twin_cold": ("agent.twin", "Twin", "t"),
    "outbox_cold": ("agent.outbox", "Outbox", "ob"),
    "mqtt_cold": ("agent.mqtt", "Client", "c"),
    # the over-the-air release's cold modules work on the Box too
    "ota_cold": ("agent.runtime", "Box", "box"),
    "ota_install": ("agent.runtime", "Box", "box"),
    "ota_later": ("agent.runtime", "Box", "box"),
}


def _uses(cold: str, param: str) -> tuple[set[str], set[str]]:
    """(attributes stored, all attributes used) on `param` in agent/<cold>.py."""
    tree = ast.parse((ROOT / "agent" / f"{cold}.py").read_text())
    stored, used = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == param:
            used.add(node.attr)
            if isinstance(node.ctx, ast.Store):
                stored.add(node.attr)
    return stored, used


def _declared(mod: str, cls: str) -> set[str]:
    """Class attributes and methods, and what __init__ sets on self."""
    tree = ast.parse((ROOT / (mod.replace(".", "/") + ".py")).read_text())
    c = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
    out = set()
    for n in c.body:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.add(n.name)
            if n.name == "__init__":
                for s in ast.walk(n):
                    if (isinstance(s, ast.Attribute) and isinstance(s.ctx, ast.Store)
                            and isinstance(s.value, ast.Name) and s.value.id == "self"):
                        out.add(s.attr)
        elif isinstance(n, ast.Assign):
            for t in n.targets:
                out.add(t.id) if isinstance(t, ast.Name) else None
    return out


@pytest.mark.parametrize("cold", sorted(PAIRS))
def test_cold_halves_set_only_declared_public_state(cold):
    mod, cls, param = PAIRS[cold]
    stored, used = _uses(cold, param)
    assert used, f"no attribute of {param} used in {cold}: is the parameter name right?"
    undeclared = stored - _declared(mod, cls)
    assert not undeclared, f"agent/{cold}.py sets {sorted(undeclared)} on a {cls}, which does not declare them"
    private = sorted(a for a in used if a.startswith("_"))
    assert not private, f"agent/{cold}.py uses private names of {cls}: {private}"


# What agent/runtime_cold.py assigned to a Box before issue 13 (some of them are
# now only class-level defaults of Box, no longer set there).
BOX_STATE = ("cfg hal id t_base t_status t_desired t_reported outbox boot seq sections fx_task "
             "running fx_state twin client connected wake stop cycles cycle_ts reconnects "
             "producers consumption boot_ts failed phase").split()
# ... and what the over-the-air releases (issue 17) added: runtime_cold and
# session_cold set them (agent/ota_*.py).
OTA_STATE = "trial reboot ota_task ota_version ota_doc".split()


def test_the_box_declares_its_state_at_class_level():
    from agent.runtime import Box
    stored = _uses("runtime_cold", "box")[0] | _uses("session_cold", "box")[0] | _uses("rules/effects", "box")[0]
    declared = set(BOX_STATE) | set(OTA_STATE)
    assert len(BOX_STATE) == 27 and stored <= declared, sorted(stored - declared)
    assert all(hasattr(Box, a) for a in BOX_STATE + OTA_STATE), \
        sorted(a for a in BOX_STATE + OTA_STATE if not hasattr(Box, a))


class _Count:
    def __init__(self):
        self.loads: dict[str, int] = {}

    def find_spec(self, name, path=None, target=None):
        if name.startswith("agent."):
            self.loads[name] = self.loads.get(name, 0) + 1
        return None


def test_a_desired_document_loads_each_cold_module_once(tmp_path):
    from agent import boot, compat
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"box_id": "box-cold", "hal": "sim", "state_dir": str(tmp_path / "fs")}))
    box = boot.build(str(cfg))
    ex = ROOT / "docs" / "contract" / "examples"
    count = _Count()
    sys.meta_path.insert(0, count)
    try:
        for s in ("channels", "options", "parental"):
            count.loads.clear()
            box.on_message(box.t_desired + s, (ex / f"desired-{s}.json").read_bytes())
            assert box.twin.reported[s]["status"] == "applied", box.twin.reported[s]
            cold = {k: v for k, v in count.loads.items() if k.endswith("_cold")}
            assert cold == {"agent.runtime_cold": 1, "agent.twin_cold": 1}, (s, cold)
            assert not [m for m in sys.modules if m.endswith("_cold")]
            assert compat._depth == {}
    finally:
        sys.meta_path.remove(count)
