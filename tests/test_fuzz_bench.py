"""Fuzzing the bench tools' inputs (issue 9): `homebox fw build` with bad image
files, and esptool-facing bad serial ports (flashing.esp): a clear refusal,
never a traceback. Budget and counts: tests/fuzzing.py."""
from __future__ import annotations

import contextlib
import io
import json
import random
import shutil
import socket
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzzing import SKIPPED, count, fuzz, tmp

# ---- bench CLI: fw build with bad files -------------------------------------------------------

_IMAGES: dict = {}


def _images():
    if not _IMAGES:
        from firmware import build as fb
        from firmware import partitions as pt
        _off, size4 = pt.vfs_for("4MB")
        _off, size2 = pt.vfs_for("2MB")
        good = fb.make_fs_image([("boot.py", b"# fuzz\n"), ("config.json", b"{}")], size4)
        _IMAGES.update(good=good, small=fb.make_fs_image([("boot.py", b"#\n")], size2), size=size4)
    return _IMAGES


@st.composite
def bad_image(draw):
    """A recipe (small to print when a case fails), turned into bytes by _image()."""
    kind = draw(st.integers(0, 6))
    if kind == 0:
        return ("random", draw(st.binary(max_size=5000)))
    if kind == 1:
        return ("built for 2MB", None)
    if kind == 2:
        return ("one byte repeated", draw(st.sampled_from([0x00, 0xFF, 0x55])))
    if kind == 3:
        return ("blocks added or cut", draw(st.integers(-8, 8).filter(lambda x: x != 0)))
    if kind == 4:
        return ("superblock bytes changed", draw(st.lists(st.tuples(st.integers(0, 8191), st.integers(0, 255)),
                                                          min_size=1, max_size=16)))
    if kind == 5:
        return ("good", None)
    return ("one byte short", None)


def _image(recipe) -> bytes:
    im = _images()
    kind, arg = recipe
    g = bytearray(im["good"])
    if kind == "random":
        return arg
    if kind == "built for 2MB":
        return im["small"]
    if kind == "one byte repeated":
        return bytes([arg]) * im["size"]
    if kind == "blocks added or cut":
        k = arg * 4096
        return bytes(g[:k]) if k < 0 else bytes(g) + b"\xff" * k
    if kind == "superblock bytes changed":
        for i, v in arg:
            g[i] = v
        return bytes(g)
    if kind == "good":
        return bytes(g)
    return bytes(g[:-1])


def _cli(argv):
    from homebox import cli
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(argv)
        except SystemExit as e:                          # argparse refusing an argument
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


@fuzz(share=0.5)
@given(bad_image(), st.sampled_from(["4MB", "4MB", "4MB", "2MB", "8MB", "4mb", "3MB", "", "-1", "4096KB", "x"]),
       st.sampled_from(["file", "file", "file", "missing", "dir"]))
def fuzz_fw_build_files(recipe, flash_size, where):
    from firmware import build as fb
    base = tmp("fw")
    try:
        path = base / "image.bin"
        if where == "file":
            path.write_bytes(_image(recipe))
        elif where == "dir":
            path.mkdir()
        rc, out, err = _cli(["fw", "build", "--fs-image", str(path), "--flash-size", flash_size,
                             "--out", str(base / "out")])
        count("fw build files")
        assert "Traceback" not in out + err
        if rc == 0:
            vfs = (base / "out" / "vfs.bin").read_bytes()
            fb.check_fs_image(vfs, flash_size)             # only a mountable image goes out
            assert json.loads((base / "out" / "manifest.json").read_text())["parts"]
        else:
            assert rc == 2, (rc, err)
            lines = [ln for ln in err.splitlines() if ln.strip()]
            assert lines and lines[-1].startswith(("fw build: FAILED: ", "usage:")) or "error:" in err, err
    finally:
        shutil.rmtree(base, ignore_errors=True)


@fuzz(share=0.2)
@given(st.binary(max_size=3000))
def fuzz_fw_build_base_bin(data):
    base = tmp("fwbase")
    try:
        (base / "base.bin").write_bytes(data)
        rc, out, err = _cli(["fw", "build", "--base-bin", str(base / "base.bin"), "--fs-image",
                             str(base / "missing.bin"), "--out", str(base / "out")])
        count("fw build base images")
        assert rc == 2 and err.startswith("fw build: FAILED: ") and "Traceback" not in err, err
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_fuzz_fw_build_files():
    fuzz_fw_build_files()
    fuzz_fw_build_base_bin()


# ---- esptool-facing bad serial ports ----------------------------------------------------------

class _Garbage:
    """A TCP server that answers everything with random bytes (a box speaking noise)."""

    def __init__(self):
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.port = self.srv.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._feed, args=(c,), daemon=True).start()

    @staticmethod
    def _feed(c):
        rng = random.Random(7)
        try:
            while True:
                c.sendall(bytes(rng.randrange(256) for _ in range(64)))
                time.sleep(0.02)
        except OSError:
            pass


_GARBAGE: dict = {}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@st.composite
def bad_port(draw):
    if "g" not in _GARBAGE:
        _GARBAGE["g"] = _Garbage()
        _GARBAGE["file"] = tmp("port") / "not-a-tty"
        _GARBAGE["file"].write_bytes(b"\x00" * 16)
    kind = draw(st.integers(0, 7))
    if kind == 0:
        return draw(st.text(max_size=30))
    if kind == 1:
        return "/dev/ttyUSB%d" % draw(st.integers(0, 999))
    if kind == 2:
        return draw(st.sampled_from(["/dev/null", "/dev/zero", "/tmp", str(_GARBAGE["file"]), "COM3", "", "."]))
    if kind == 3:
        return "%s://127.0.0.1:%d" % (draw(st.sampled_from(["rfc2217", "socket"])), _closed_port())
    if kind == 4:
        return "socket://127.0.0.1:%d" % _GARBAGE["g"].port
    if kind == 5:
        return draw(st.sampled_from(["rfc2217://", "rfc2217://[::1", "socket://:", "rfc2217://127.0.0.1:99999",
                                     "spy://", "hwgrep://nothing-matches-this", "alt://x", "rfc2217://h\x00st:1"]))
    if kind == 6:
        return draw(st.sampled_from(["rfc2217", "socket", "spy", "hwgrep"])) + "://" + draw(st.text(max_size=20))
    return "/dev/" + draw(st.text(alphabet="abcxyzUSBtty0123456789", min_size=1, max_size=12))


@fuzz(share=0.25)
@given(bad_port())
def fuzz_bench_ports(port):
    from flashing.errors import BoxFailure
    from flashing.esp import Device
    t = time.time()
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            with Device(port, baud=115200) as dev:
                dev.connect(attempts=1)
            raise AssertionError(f"connected to {port!r}?")
        except BoxFailure as e:
            assert e.detail and e.advice and e.kind, e
    count("bench ports")
    assert time.time() - t < 30, (port, time.time() - t)


def test_fuzz_bench_ports():
    try:
        import flashing.esp  # noqa: F401
    except ImportError as e:
        pytest.skip(f"the bench station's esptool layer (flashing.esp) is not importable: {e}")
    fuzz_bench_ports()


def _targets():
    out = [("fw build files", lambda: (fuzz_fw_build_files(), fuzz_fw_build_base_bin()))]
    try:
        import flashing.esp  # noqa: F401
        out.append(("bench ports", fuzz_bench_ports))
    except ImportError as e:
        SKIPPED["bench ports"] = f"flashing.esp is not importable: {e}"
    return out


TARGETS = _targets()
