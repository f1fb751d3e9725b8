"""Run the real agent on this host: under CPython, or under the real MicroPython
unix port with a bounded heap, from .mpy files compiled by mpy-cross exactly as
they go onto a box's filesystem (firmware.toolchain)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from firmware.toolchain import (
    SRC_ROOT,
    BoxRunError,
    cache_dir,
    child_env,
    compile_agent,
    micropython_exe,
)

__all__ = ["BoxRunError", "box_command", "compile_agent", "micropython_exe", "neutral_cwd",
           "write_config"]


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
    env = child_env(SRC_ROOT, {k: v for k, v in env.items() if k != "PYTHONPATH"})
    env["PYTHONUNBUFFERED"] = "1"
    return [sys.executable] + args, env


def neutral_cwd() -> str:
    d = cache_dir() / "run"
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
