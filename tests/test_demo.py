"""`homebox demo` as a new user runs it: three sim homes through the real bench,
the real agent under MicroPython, ingest, pushes, the report; nothing left running."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found.append(f"{d.name}: {cmd[:200]}")
    return found


def test_demo_runs_the_whole_system_and_leaves_nothing_running(tmp_path):
    out = tmp_path / "demo"
    exe = Path(sys.executable).with_name("homebox")
    p = subprocess.run([str(exe), "demo", "--duration", "25", "--out", str(out), "--plain"],
                       capture_output=True, text=True, timeout=400, cwd=ROOT, start_new_session=True)
    log = p.stdout + p.stderr
    assert p.returncode == 0, log[-4000:]
    for words in ("Starting the broker", "Running the bench", "pushes a parental schedule",
                  "Writing the report", "nothing left running"):
        assert words in log, words
    assert len(re.findall(r"^\s+PASS\s+slot", log, re.M)) == 3, log[-3000:]
    assert len(re.findall(r"parental -> HB-\d+: applied v1", log)) == 3, log[-3000:]
    assert len(re.findall(r"options \(plan 10M\) -> HB-\d+: applied v1", log)) == 3, log[-3000:]
    assert re.search(r"options \(consent to detailed consumption\) -> HB-\d+: applied v2", log), log[-3000:]
    assert re.search(r"campaign c-[\w-]+: completed", log), log[-3000:]
    assert re.search(r"canary: HB-\d+ applied v\d+", log), log[-3000:]
    # the operator console, with a demo account (make demo keeps it up until Ctrl-C)
    assert re.search(r"console: http://127\.0\.0\.1:\d+/  account: demo  password: demo-\S+", log), log[-2000:]
    m = re.search(r"^Report: (.+index\.html)$", log, re.M)
    assert m, log[-2000:]
    index = Path(m.group(1))
    html = index.read_text()
    pngs = sorted(x.name for x in index.parent.glob("box-*.png"))
    assert len(pngs) == 3, pngs
    assert "weak_coverage" in html and "water_leak" in html and "slow_line" in html
    labels = index.parent / "labels"
    assert len(list(labels.glob("*.png"))) == 3 and len(list(labels.glob("*.pdf"))) == 3
    # the good home raises no alarm; the other two raise exactly theirs
    assert re.search(r"\(a good home\): speed \d+% of plan; no alarm", log), log[-2000:]
    # every box tested against its plan; the 6 Mbps line on a 10M plan is a slow line
    assert re.search(r"\(weak Wi-Fi in one bedroom\): speed \d+% of plan", log), log[-2000:]
    assert re.search(r"\(a leaking tap, a slow line\): speed [3-7]\d% of plan; .*slow_line", log), log[-2000:]
    assert re.search(r"\(weak Wi-Fi in one bedroom\): .*weak_coverage", log)
    assert re.search(r"\(a leaking tap, a slow line\): .*water_leak", log)
    assert "0 outside the contract" in log
    # the home network (issue 15): a device refused in its blocked hours, the playlist following options
    assert re.search(r"the tablet asks for \S+ at 21:30: REFUSED", log), log[-3000:]
    assert re.search(r"the phone asks for the same name: answered", log), log[-3000:]
    assert "new: Ciné Un (40), Ciné Deux (41)" in log, log[-3000:]
    # The operator's key never shows, and no process the demo started survives it.
    key = (out / "operator" / "operator.key").read_text().strip().split(":", 1)[1]
    assert len(key) >= 32 and key not in log
    assert _processes_mentioning(str(out)) == []
