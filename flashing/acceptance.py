"""Step 8: the acceptance suite (hw-tests/, pytest-embedded on the box's
serial console), run for one box in its own pytest process. The same suite runs
on a real port and on a virtual box; this module only starts it and reads the
outcome back from its JUnit XML: which test failed, and for the self-test,
which of its checks.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from flashing.errors import CHECK_ADVICE, TestFailed

# hw-tests/ of the checkout; installed from a wheel, the package data flashing/hw_tests/
_PACKAGED = Path(__file__).resolve().parent / "hw_tests"
INSTALLED = (_PACKAGED / "pytest.ini").is_file()
ROOT = Path(__file__).resolve().parent.parent
HW_TESTS = _PACKAGED if INSTALLED else ROOT / "hw-tests"

# test function -> the check a technician is told about
TEST_CHECK = {
    "test_boot_banner_gives_firmware_and_agent_versions": "boot_banner",
    "test_info_matches_the_ledger": "info",
    "test_selftest_passes_and_its_telemetry_reaches_the_bench_broker": "selftest",
    "test_log_returns_the_agent_log": "log",
}


@dataclass
class Outcome:
    passed: bool
    tests: list[dict] = field(default_factory=list)   # {"name", "check", "outcome", "seconds", "message"}
    failed_checks: list[str] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)   # the box's self-test: {"name", "status", "detail"}
    seconds: float = 0.0
    log: str = ""

    def as_dict(self) -> dict:
        return {"passed": self.passed, "tests": self.tests, "failed_checks": self.failed_checks,
                "checks": self.checks, "seconds": self.seconds, "log": self.log}


def command(port: str, serial: str, mac: str, broker: str | None, workdir: Path,
            broker_user: str | None = None, broker_ca: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", str(HW_TESTS), "-q", "-p", "no:cacheprovider",
           "--port", port, "--box-serial", serial, "--box-mac", mac,
           "--root-logdir", str(workdir / "console"), "--cache-dir", str(workdir / "cache"),
           "--basetemp", str(workdir / "tmp"),
           "--junitxml", str(workdir / "junit.xml"), "-o", "junit_family=xunit1"]
    if broker:
        cmd += ["--bench-broker", broker]
    if broker_user:
        cmd += ["--bench-broker-user", broker_user]
    if broker_ca:
        cmd += ["--bench-broker-ca", str(broker_ca)]
    return cmd


def run(port: str, serial: str, mac: str, broker: str | None, workdir: Path,
        broker_user: str | None = None, timeout: float = 300, broker_ca: str | None = None) -> Outcome:
    """Run the suite; raise TestFailed naming the failed checks."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    logf = workdir / "pytest.log"
    t0 = time.monotonic()
    env = dict(os.environ)
    if INSTALLED:
        # nothing is written beside the installed suite: no assertion-rewrite .pyc
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    # a checkout's packages are found from its root; an install needs no cwd of its own
    cwd = workdir if INSTALLED else ROOT
    with open(logf, "wb") as out:
        try:
            p = subprocess.run(command(port, serial, mac, broker, workdir, broker_user, broker_ca), cwd=str(cwd), env=env,
                               stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout)
            rc = p.returncode
        except subprocess.TimeoutExpired:
            rc = None
    outcome = read_junit(workdir / "junit.xml")
    outcome.seconds = round(time.monotonic() - t0, 2)
    outcome.log = str(logf)
    if rc is None:
        raise TestFailed(f"the acceptance tests did not finish in {timeout:.0f} s", ["timeout"],
                         "the box stopped answering during the tests: run this slot again")
    if rc == 0 and outcome.tests and all(t["outcome"] in ("passed", "skipped") for t in outcome.tests):
        outcome.passed = True
        return outcome
    failed = outcome.failed_checks or ["acceptance"]
    names = ", ".join(failed)
    first = next((t["message"] for t in outcome.tests if t["outcome"] != "passed" and t["message"]), "")
    advice = "; ".join(CHECK_ADVICE[c] for c in failed if c in CHECK_ADVICE) or None
    err = TestFailed(f"failed check: {names}" + (f" ({first})" if first else ""), failed, advice)
    err.outcome = outcome
    raise err


def read_junit(path: Path) -> Outcome:
    out = Outcome(False)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return out
    for tc in root.iter("testcase"):
        name = tc.get("name", "")
        base = name.split("[")[0]
        check = TEST_CHECK.get(base, base)
        outcome, message = "passed", ""
        for tag in ("failure", "error"):
            el = tc.find(tag)
            if el is not None:
                outcome = "failed" if tag == "failure" else "error"
                message = (el.get("message") or "").strip().splitlines()[0][:300] if el.get("message") else ""
        if tc.find("skipped") is not None:
            outcome = "skipped"
        props = {p.get("name"): p.get("value") for p in tc.iter("property")}
        if props.get("checks"):
            try:
                out.checks = [{k: c.get(k) for k in ("name", "status", "detail")} for c in json.loads(props["checks"])]
            except (ValueError, AttributeError):
                pass
        out.tests.append({"name": base, "check": check, "outcome": outcome,
                          "seconds": round(float(tc.get("time") or 0), 2), "message": message})
        if outcome in ("failed", "error"):
            sub = json.loads(props["failed_checks"]) if props.get("failed_checks") else []
            out.failed_checks += sub or [check]
    return out
