"""`homebox box tic-decode`: one JSON object per frame, exit 0 only if all are valid."""
from __future__ import annotations

import json
import subprocess
import sys

from homebox.cli import main
from tests.helpers import ROOT

REF = ROOT / "tests" / "data" / "tic"   # a copy of shared/reference/tic
HIST = REF / "enedis-historic-frame.bin"
STD = REF / "enedis-standard-frame.bin"
BAD = REF / "enedis-standard-frame-pcoup-invalid.bin"


def run(capsys, *argv):
    rc = main(["box", "tic-decode", *argv])
    out, err = capsys.readouterr()
    return rc, [json.loads(line) for line in out.splitlines()], err


def test_historic_reference(capsys):
    rc, frames, _ = run(capsys, str(HIST))
    assert rc == 0 and len(frames) == 1
    f = frames[0]
    assert set(f) == {"mode", "valid", "groups", "errors"}
    assert f["mode"] == "historic" and f["valid"] is True and f["errors"] == []
    assert f["groups"]["BASE"] == {"value": "000000104", "horodate": None, "checksum_ok": True}
    assert list(f["groups"])[0] == "ADCO" and len(f["groups"]) == 9


def test_standard_reference(capsys):
    rc, frames, _ = run(capsys, "--mode", "standard", str(STD))
    assert rc == 0
    g = frames[0]["groups"]
    assert g["DATE"] == {"value": "", "horodate": "E170915101601", "checksum_ok": True}
    assert g["NGTF"]["value"] == "H PLEINE/CREUSE "
    assert g["LTARF"]["value"] == "INDEX INACTIF 2 "
    assert all(v["checksum_ok"] for v in g.values()) and len(g) == 38


def test_pcoup_invalid_is_flagged_and_fails(capsys):
    rc, frames, err = run(capsys, str(BAD))
    assert rc == 1 and "1 of 1" in err
    f = frames[0]
    assert f["valid"] is False and f["errors"] == ["checksum:PCOUP"]
    assert f["groups"]["PCOUP"] == {"value": "02", "horodate": None, "checksum_ok": False}
    assert sum(1 for v in f["groups"].values() if v["checksum_ok"]) == 37


def test_several_frames_one_line_each_exit_reflects_all(tmp_path, capsys):
    cap = tmp_path / "cap.bin"
    cap.write_bytes(b"noise" + STD.read_bytes() + HIST.read_bytes() + STD.read_bytes()[:300])
    rc, frames, _ = run(capsys, str(cap))
    assert [f["valid"] for f in frames] == [True, True, False]      # the cut last frame
    assert frames[2]["errors"][-1] == "interrupted" and rc == 1
    cap.write_bytes(STD.read_bytes() + STD.read_bytes())
    rc, frames, _ = run(capsys, str(cap))
    assert rc == 0 and len(frames) == 2


def test_wrong_mode_and_no_frame(tmp_path, capsys):
    rc, frames, _ = run(capsys, "--mode", "historic", str(STD))
    assert rc == 1 and frames[0]["valid"] is False and frames[0]["groups"] == {}
    empty = tmp_path / "e.bin"
    empty.write_bytes(b"\x00" * 100)
    rc, frames, err = run(capsys, str(empty))
    assert rc == 1 and frames == [] and "no frame" in err
    rc, _, err = run(capsys, str(tmp_path / "missing.bin"))
    assert rc == 2


def test_stdin_through_the_console_command():
    exe = [sys.executable, "-m", "homebox.cli", "box", "tic-decode", "-"]
    p = subprocess.run(exe, input=HIST.read_bytes() + STD.read_bytes(), capture_output=True,
                       cwd=ROOT, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.decode().splitlines()
    assert [json.loads(x)["mode"] for x in lines] == ["historic", "standard"]
    p = subprocess.run(exe, input=BAD.read_bytes(), capture_output=True, cwd=ROOT, timeout=60)
    assert p.returncode == 1
