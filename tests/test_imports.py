"""The import rules (tests/tools/imports.py): no circle between modules but a
hot/cold pair, and nothing from a host package in agent/."""
from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT


def _run(*args):
    return subprocess.run([sys.executable, "-m", "tests.tools.imports", *args], cwd=str(ROOT),
                          capture_output=True, text=True, timeout=120)


def _writer(root):
    def write(rel, text):
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return write


def test_the_code_base_follows_the_import_rules():
    r = _run()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "homebox     -> backend" in r.stdout and "0 problem(s)" in r.stdout


def test_the_checker_finds_a_circle_and_an_agent_escape(tmp_path):
    write = _writer(tmp_path)
    write("agent/__init__.py", "")
    write("agent/runtime.py", "from agent import runtime_cold\n")
    write("agent/runtime_cold.py", "from agent.runtime import Box\n")     # a hot/cold pair: allowed
    write("agent/net.py", "def f():\n    from homebox import cli\n")    # lazy, still an escape
    write("homebox/__init__.py", "")
    write("homebox/cli.py", "from . import demo\n")
    write("homebox/demo.py", "import homebox.cli\n")
    r = _run("--root", str(tmp_path))
    assert r.returncode == 1
    assert "CIRCLE: homebox.cli <-> homebox.demo" in r.stdout
    assert "AGENT IMPORTS A HOST MODULE: agent.net -> homebox.cli" in r.stdout
    assert "runtime_cold" not in r.stdout.split("CIRCLE")[-1] and "2 problem(s)" in r.stdout


def test_the_checker_finds_rules_kept_resident(tmp_path):
    write = _writer(tmp_path)
    write("agent/__init__.py", "")
    write("agent/rules/__init__.py", "SECTIONS = ()\n")
    write("agent/rules/sections.py", "from agent.rules import SECTIONS\n")
    write("agent/twin.py", "from agent.rules import sections\n")            # module level: resident
    write("agent/runtime.py", "def check():\n    from agent.rules import sections, release\n")  # lazy: fine
    r = _run("--root", str(tmp_path))
    assert r.returncode == 1
    assert "RULES KEPT RESIDENT: agent.twin -> agent.rules.sections" in r.stdout
    assert "agent.runtime" not in r.stdout.split("RULES KEPT RESIDENT")[-1] and "1 problem(s)" in r.stdout


def test_the_checker_finds_a_cold_call_to_nothing(tmp_path):
    # the bug it was written for: a function moved to another cold module while a
    # caller kept the old name (found only when a TLS self-test ran)
    write = _writer(tmp_path)
    write("agent/__init__.py", "")
    write("agent/compat.py", "def cold(name, fn, *args):\n    pass\n")
    write("agent/session_cold.py", "def tls_context(box):\n    pass\n")
    write("agent/selftest.py", "from agent.compat import cold\n\n\ndef run(box):\n"
                               "    cold('agent.session_cold', 'tls_context', box)\n"
                               "    cold('agent.runtime_cold', 'ssl_context', box)\n"
                               "    cold('agent.session_cold', 'ssl_context', box)\n")
    r = _run("--root", str(tmp_path))
    assert r.returncode == 1
    assert "COLD CALL TO NOTHING: agent.selftest -> agent.runtime_cold.ssl_context" in r.stdout
    assert "COLD CALL TO NOTHING: agent.selftest -> agent.session_cold.ssl_context" in r.stdout
    assert "tls_context" not in r.stdout and "2 problem(s)" in r.stdout
