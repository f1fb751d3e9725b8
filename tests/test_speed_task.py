"""The scheduled speed test as the runtime runs it (agent.speedsched.task), under CPython
and MicroPython: the plan comes from the applied options document, and a box without
a data counter (the ESP32) decides an idle line by the connect-latency probe."""
from __future__ import annotations

import json
import subprocess

import pytest

from backend import speedtest_server
from tests.helpers import INTERPRETERS, ROOT, interpreter_cmd, interpreter_env

SCRIPT = ROOT / "tests" / "data" / "speed_task_run.py"


def run_task(interp, tmp_path) -> list[dict]:
    # 4 Mbps for 3 s: a window after the 1 s warm-up long enough to estimate on a
    # starved host, within the 2 MB budget
    srv = speedtest_server.start(rate_bps=4e6)
    try:
        url = "http://127.0.0.1:%d" % srv.server_address[1]
        sd = tmp_path / "state"
        sd.mkdir()
        p = subprocess.run(interpreter_cmd(interp, "512k") + [str(SCRIPT), url, str(sd)],
                           env=interpreter_env(interp), capture_output=True, text=True, timeout=180,
                           cwd=tmp_path)
    finally:
        srv.shutdown()
        srv.server_close()
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return [json.loads(x[4:]) for x in p.stdout.splitlines() if x.startswith("REC ")]


@pytest.mark.parametrize("interp", INTERPRETERS)
def test_plan_from_options_and_idle_probe(interp, tmp_path):
    first, second, third = run_task(interp, tmp_path)
    for r in (first, second):
        assert r["plan_down_bps"] == 5_000_000 and r["plan_up_bps"] is None, r
        assert r["down"]["goodput_bps"] and r["ratio_down"] == round(r["down"]["goodput_bps"] / 5e6, 3), r
        assert r["bytes"] <= r["budget"] <= 2_000_000
    # no HAL counter and no baseline yet: cannot tell, so it runs; then the probe decides
    assert first["idle_by"] == "unknown" and second["idle_by"] == "probe"
    # a baseline no connect can meet: every probe says busy, the box retries every
    # ~15 min of sim time, and the night's run is skipped when the window ends
    assert third == {"skipped": "busy", "bytes": 0, "budget": 0}
