"""`homebox box run` as the README shows it: the default state directory is relative
to where the command runs, and the box (which runs from another directory) finds it."""
import subprocess
import sys

from tests.helpers import ROOT, free_port


def test_box_run_with_the_default_state_dir(tmp_path):
    # nothing listens on the port: the box keeps its telemetry and stops after one cycle
    r = subprocess.run([sys.executable, "-m", "homebox.cli", "box", "run", "--box-id", "hb-cli",
                        "--broker", f"127.0.0.1:{free_port()}", "--speedup", "3000", "--cycles", "1"],
                       cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "state" / "hb-cli" / "config.json").exists()
    assert any((tmp_path / "state" / "hb-cli" / "fs").iterdir())


def test_sigterm_stops_the_box_too(tmp_path):
    import os
    import signal
    import time
    p = subprocess.Popen([sys.executable, "-m", "homebox.cli", "box", "run", "--box-id", "hb-term",
                          "--broker", f"127.0.0.1:{free_port()}"], cwd=tmp_path,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    boot = tmp_path / "state" / "hb-term" / "fs" / "boot.json"
    deadline = time.time() + 30
    while not boot.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert boot.exists(), "the box did not start"
    p.terminate()
    assert p.wait(20) is not None
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.killpg(p.pid, 0)           # anything left in the command's process group?
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(p.pid, signal.SIGKILL)
    raise AssertionError("the agent kept running after `homebox box run` was terminated")
