"""The box's release download (agent/ota_cold.py) against the release server
(backend/release.py) under CPython and MicroPython: cut connections resumed
with Range requests, a part file left by a power cut resumed, wrong bytes
refused (tests/onbox/ota_net.py holds the box side)."""
import subprocess

import pytest

from backend import release
from tests.helpers import INTERPRETERS, ROOT, interpreter_cmd, interpreter_env


def _files(tag):
    body = b"VERSION = '%s'\n" % tag.encode()
    return {"agent/__init__.py": body, "agent/hal/x.py": b"X = 1\n" * 300}


@pytest.mark.parametrize("interp", INTERPRETERS)
def test_release_download(interp, tmp_path):
    root = tmp_path / "releases"
    good = release.write(root / "good", "good", _files("good"))
    bad = release.write(root / "bad", "bad", _files("bad"))
    (root / "bad" / "agent" / "hal" / "x.py").write_bytes(b"Y = 2\n" * 300)     # not the manifest's bytes
    srv = release.serve(root)
    # the tests run in name order: the first download of "good" (from a part file of
    # 700 bytes) is cut after 600 more bytes, and then after 1300 (the file's end);
    # the manifest is cut once after 40 bytes
    srv.cut("/good/manifest", 40)
    srv.cut("/good/agent/hal/x.py", 600)
    srv.cut("/good/agent/hal/x.py", 1300)
    env = interpreter_env(interp)
    env.update(HB_TMP=str(tmp_path / "t"), HB_OTA_URL=srv.url, HB_OTA_GOOD=good["manifest_sha256"],
               HB_OTA_BAD=bad["manifest_sha256"])
    try:
        p = subprocess.run(interpreter_cmd(interp) + [str(ROOT / "tests" / "onbox" / "run.py"), "ota_net"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    finally:
        srv.shutdown()
    assert p.returncode == 0 and "fail=0" in p.stdout, p.stdout[-4000:] + p.stderr[-2000:]
    assert "pass=6" in p.stdout, p.stdout
    starts = [s for path, s in srv.requests if path == "/good/agent/hal/x.py"]
    # resumed at 700 (the part file), cut at 1300 and resumed there; another release's
    # part: resumed at 600, then from 0 when it did not add up; then a fresh slot from 0
    assert starts == [700, 1300, 600, 0, 0], srv.requests
    assert [s for path, s in srv.requests if path == "/good/manifest"].count(0) >= 3
