"""Runs every on-box unit test (tests/onbox/test_*.py) under CPython and under the
real MicroPython interpreter. One subprocess per (file, interpreter), cached."""
import ast
import subprocess
from pathlib import Path

import pytest

from tests.helpers import INTERPRETERS, ROOT, interpreter_cmd, interpreter_env

ONBOX = ROOT / "tests" / "onbox"
_results: dict = {}


def _cases():
    for f in sorted(ONBOX.glob("test_*.py")):
        tree = ast.parse(f.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                for interp in INTERPRETERS:
                    yield pytest.param(f.stem, node.name, interp, id=f"{interp}-{f.stem}-{node.name}")


def _run(module: str, interp: str, tmp_root: Path) -> dict:
    key = (module, interp)
    if key not in _results:
        tmp = tmp_root / f"{interp}-{module}"
        tmp.mkdir(parents=True, exist_ok=True)
        env = interpreter_env(interp)
        env["HB_TMP"] = str(tmp)
        p = subprocess.run(interpreter_cmd(interp) + [str(ONBOX / "run.py"), module],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        status = {}
        for line in p.stdout.splitlines():
            if line.startswith("PASS "):
                status[line[5:].strip()] = ("PASS", "")
            elif line.startswith("FAIL "):
                name, _, err = line[5:].partition(":")
                status[name.strip()] = ("FAIL", err.strip())
        _results[key] = {"status": status, "out": p.stdout[-4000:], "err": p.stderr[-4000:], "rc": p.returncode}
    return _results[key]


@pytest.mark.parametrize("module,name,interp", list(_cases()))
def test_onbox(module, name, interp, tmp_path_factory):
    r = _run(module, interp, tmp_path_factory.getbasetemp())
    st = r["status"].get(name)
    assert st is not None, f"{name} did not run under {interp}:\n{r['out']}\n{r['err']}"
    assert st[0] == "PASS", f"{name} under {interp}: {st[1]}\n{r['out']}\n{r['err']}"
