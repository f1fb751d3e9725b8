"""The bench station end to end: `homebox bench run` on virtual boxes against a
real Mosquitto. Four boxes pass with four serials and labels, a second run is
idempotent and skips what is already flashed, no secret leaks anywhere but the
labels, and each label's QR code decodes back to its Wi-Fi string. Fault
injection: a link dropped mid-flash, a dead flash chip, a corrupted write and a
silent port each end in their own classified verdict while the healthy box
passes, and the re-run of the dropped slot passes with the same serial."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import vbox
from common import credentials
from firmware import build as fb
from tests.helpers import ROOT, Mosquitto
from vbox import standin

HOMEBOX = [sys.executable, "-m", "homebox.cli"]


@pytest.fixture(scope="module")
def bench_broker(tmp_path_factory):
    m = Mosquitto(tmp_path_factory.mktemp("bench-broker")).start()
    yield m
    m.stop()


def _bench(args: list[str], timeout: float = 240, env: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env or {}))
    env.pop("HOMEBOX_MASTER_SECRET_FILE", None)
    env.pop("HOMEBOX_OPERATOR_PUBKEY", None)
    env.pop("HOMEBOX_LEDGER", None)
    return subprocess.run(HOMEBOX + ["bench"] + args, cwd=str(ROOT), env=env, capture_output=True,
                          text=True, timeout=timeout)


def _operator(tmp_path: Path) -> tuple[Path, Path]:
    """The operator's key pair (`ops keygen`): the bench gets only the public half."""
    return credentials.write_operator_key(tmp_path / "operator")


def _boxes_creds(ledger: Path, key_file: Path) -> dict[tuple[str, int], credentials.Credentials]:
    """Every credential the bench generated, opened with the operator's key (as the operator can)."""
    from flashing.ledger import Ledger
    key = credentials.load_operator_key(key_file)
    with Ledger(ledger) as led:
        return {(r["box"], r["version"]): credentials.open_escrow(key, r) for r in led.escrow_records()}


def _latest(creds: dict, serial: str) -> credentials.Credentials:
    return creds[max(k for k in creds if k[0] == serial)]


def _secrets(creds: dict, key_file: Path) -> dict[str, str]:
    """Every secret of the run: the operator's private key and each box's secrets."""
    out = {"operator key": key_file.read_text().strip().split(":", 1)[1]}
    for (s, v), c in creds.items():
        out[f"{s} v{v} wifi key"] = c.wifi_key
        out[f"{s} v{v} mqtt password"] = c.mqtt_password
        out[f"{s} v{v} hmac key"] = c.hmac_key
        out[f"{s} v{v} hmac key (upper)"] = c.hmac_key.upper()
    return out


def _leaks(secrets: dict[str, str], roots: list[Path], texts: dict[str, str]) -> list[str]:
    found = []
    needles = {k: v.encode() for k, v in secrets.items()}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if not p.is_file():
                continue
            if p.parent.name == "labels" and p.suffix in (".png", ".pdf"):
                continue                                  # the sticker is meant to carry the Wi-Fi key
            if p.name == "flash.bin":
                continue                                  # the box's own flash
            data = p.read_bytes()
            found += [f"{k} in {p}" for k, v in needles.items() if v in data]
    for name, text in texts.items():
        found += [f"{k} in {name}" for k, v in secrets.items() if v in text]
    return found


def test_bench_run_virtual_4(tmp_path, bench_broker):
    key_file, pub_file = _operator(tmp_path)
    out = tmp_path / "out"
    agent = tmp_path / "src" / "agent"          # the same agent for both runs
    shutil.copytree(ROOT / "agent", agent, ignore=shutil.ignore_patterns("__pycache__"))
    # the boxes are built for the production broker (nothing listens there on this
    # machine); the bench broker is given to each box's self-test on its console only
    from tests.helpers import free_port
    prod = free_port()
    (tmp_path / "box.json").write_text(json.dumps({"broker_host": "127.0.0.1", "broker_port": prod}))
    args = ["run", "--virtual", "4", "--broker", f"127.0.0.1:{bench_broker.port}", "--operator-pubkey",
            str(pub_file), "--out", str(out), "--support", "Assistance : Association Port-Boyer 02 40 00 00 00",
            "--agent-dir", str(agent), "--box-config", str(tmp_path / "box.json")]
    t0 = time.monotonic()
    r1 = _bench(args + ["--json"])
    t1 = time.monotonic()
    assert r1.returncode == 0, r1.stdout[-3000:] + r1.stderr[-3000:]
    rep = json.loads(r1.stdout)
    assert rep["summary"] == {"total": 4, "pass": 4, "fail": 0, "quarantine": 0,
                              "boxes_per_hour": rep["summary"]["boxes_per_hour"]}
    serials = sorted(b["serial"] for b in rep["boxes"])
    assert len(set(serials)) == 4 and all(s.startswith("HB-") for s in serials)
    assert rep["operator_key"] == "file"
    for b in rep["boxes"]:
        assert [s["step"] for s in b["steps"]] == ["connect", "identify", "allocate", "credentials", "image",
                                                   "flash", "reset", "test", "label", "record"]
        assert all(s["status"] == "ok" for s in b["steps"]), b["steps"]
        assert b["tests"]["passed"] and len(b["tests"]["tests"]) == 4
        assert b["box_broker"] == f"127.0.0.1:{prod}"
        checks = {c["name"]: c for c in b["tests"]["checks"]}
        assert checks["mqtt"]["status"] == "pass" and f"127.0.0.1:{bench_broker.port}" in checks["mqtt"]["detail"]
        assert checks["access_point"] == {"name": "access_point", "status": "pass",
                                          "detail": f"Wi-Fi homebox-{b['serial'][3:]} on, WPA2 with the label's key"}
        assert set(b["images"]) >= {"base", "vfs", "agent_build", "firmware", "flash"}

    # the virtual boxes are emulated ESP32 boards: they run the ESP32 HAL
    cons = [(out / "vbox" / f"slot-{i}" / "console.log").read_bytes().decode(errors="replace") for i in range(1, 5)]
    assert all(", hal esp32" in c and ", hal sim" not in c for c in cons), [c[-1500:] for c in cons]

    db = sqlite3.connect(out / "ledger.sqlite")
    # the self-test's checks are in each box's ledger record
    kept = [json.loads(c) for (c,) in db.execute("SELECT checks FROM attempts ORDER BY serial")]
    assert len(kept) == 4 and all({c["name"] for c in k} >= {"mqtt", "access_point", "tic_uart"} for k in kept)
    rows = db.execute("SELECT serial, mac, mqtt_hash, verdict FROM boxes ORDER BY serial").fetchall()
    assert [r[0] for r in rows] == serials
    assert all(r[2].startswith("$7$") and r[3] == "PASS" for r in rows)
    assert len({r[1] for r in rows}) == 4
    db.close()

    labels = out / "labels"
    assert sorted(p.name for p in labels.glob("*.png")) == [f"{s}.png" for s in serials]
    assert sorted(p.name for p in labels.glob("*.pdf")) == [f"{s}.pdf" for s in serials]
    assert all((labels / f"{s}.pdf").read_bytes().startswith(b"%PDF") for s in serials)

    # the label PNG decodes back to the right Wi-Fi string
    import zxingcpp
    from PIL import Image
    creds = _boxes_creds(out / "ledger.sqlite", key_file)
    assert sorted(creds) == [(s, 1) for s in serials]
    for s in serials:
        c = creds[(s, 1)]
        got = [x.text for x in zxingcpp.read_barcodes(Image.open(labels / f"{s}.png"))]
        assert got == [f"WIFI:T:WPA;S:{c.wifi_ssid};P:{c.wifi_key};;"], (s, got)

    # a second run: same serials, fresh secrets (key version 2), and flashing skips
    # what is already there
    r2 = _bench(args + ["--plain"])
    t2 = time.monotonic()
    assert r2.returncode == 0, r2.stdout[-3000:] + r2.stderr[-3000:]
    rep2 = json.loads(Path(r2.stdout.strip().splitlines()[-1].split("report: ")[1]).read_text())
    assert sorted(b["serial"] for b in rep2["boxes"]) == serials
    assert {b["mac"]: b["serial"] for b in rep2["boxes"]} == {b["mac"]: b["serial"] for b in rep["boxes"]}
    for b1 in rep["boxes"]:
        b2 = next(b for b in rep2["boxes"] if b["mac"] == b1["mac"])
        assert b2["images"]["vfs"]["sha256"] != b1["images"]["vfs"]["sha256"]    # new secrets in the image
        f1, f2 = b1["images"]["flash"], b2["images"]["flash"]
        # only what the agent changed on its filesystem since is written again (the
        # base goes in two pieces around the nvs partition, which it leaves alone)
        assert f2["parts"] == 34 and f2["skipped"] >= f2["parts"] - 4 and f2["bytes_written"] <= f1["bytes_written"], (f1, f2)
        assert f2["bytes_written"] <= 4 * 0x10000
    assert "4 box(es): 4 PASS, 0 FAIL, 0 QUARANTINE" in r2.stdout
    print(f"\nbench run --virtual 4: first {t1 - t0:.1f} s, second {t2 - t1:.1f} s; "
          f"{rep['summary']['boxes_per_hour']} then {rep2['summary']['boxes_per_hour']} boxes/hour")

    # history of one box: two attempts, both PASS
    h = _bench(["history", "--serial", serials[0], "--out", str(out), "--json"])
    assert h.returncode == 0, h.stderr
    hist = json.loads(h.stdout)
    assert [a["verdict"] for a in hist["attempts"]] == ["PASS", "PASS"]
    assert hist["attempts"][0]["tools"]["esptool"] and hist["attempts"][0]["station"]
    h = _bench(["history", "--mac", rows[0][1], "--out", str(out)])
    assert h.returncode == 0 and serials[0] in h.stdout and "[ 6] flash" in h.stdout

    # no secret in the logs, the ledger, the reports or the console output
    creds = _boxes_creds(out / "ledger.sqlite", key_file)
    assert sorted(creds) == sorted([(s, 1) for s in serials] + [(s, 2) for s in serials])
    leaks = _leaks(_secrets(creds, key_file), [out],
                   {"run 1 stdout": r1.stdout, "run 1 stderr": r1.stderr, "run 2 stdout": r2.stdout,
                    "run 2 stderr": r2.stderr, "history": h.stdout})
    assert not leaks, leaks
    # ... while the boxes did get them (the grep would find them if they leaked)
    c = _latest(creds, serials[0])
    flash = (out / "vbox").rglob("flash.bin")
    assert any(c.mqtt_password.encode() in f.read_bytes() for f in flash)

    # the broker gets the hashes, in Mosquitto's format
    e = _bench(["export-broker", str(tmp_path / "creds.json"), "--out", str(out)])
    assert e.returncode == 0, e.stderr
    creds = json.loads((tmp_path / "creds.json").read_text())
    assert sorted(creds) == serials
    boxes = _boxes_creds(out / "ledger.sqlite", key_file)
    assert all(credentials.check_hash(_latest(boxes, s).mqtt_password, creds[s]["mqtt_hash"]) for s in serials)

    # the operator's registry takes the escrow; the broker configuration comes from it
    e = _bench(["export-escrow", str(tmp_path / "escrow.json"), "--out", str(out)])
    assert e.returncode == 0 and "8 sealed records" in e.stdout, e.stdout + e.stderr
    env = dict(os.environ, HOMEBOX_OPERATOR_KEY=str(key_file))
    imp = subprocess.run(HOMEBOX + ["ops", "keys", "import", str(tmp_path / "escrow.json"), "--registry",
                                    str(tmp_path / "registry.sqlite"), "--json"], cwd=str(ROOT), env=env,
                         capture_output=True, text=True, timeout=60)
    assert imp.returncode == 0 and json.loads(imp.stdout)["imported"] == 8, imp.stdout + imp.stderr
    ls = subprocess.run(HOMEBOX + ["ops", "keys", "list", "--registry", str(tmp_path / "registry.sqlite"), "--json"],
                        cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert {r["box"]: r["active"] for r in json.loads(ls.stdout)} == {s: 2 for s in serials}


def _silent_port():
    """A serial-over-TCP port where nothing answers (no box, or a box that
    never enters its ROM loader)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held = []

    def accept():
        while True:
            try:
                held.append(srv.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return srv, f"socket://127.0.0.1:{srv.getsockname()[1]}"


def test_fault_injection_classifies_each_slot_and_rerun_passes(tmp_path, bench_broker):
    base = standin.make_base("4MB")
    (tmp_path / "base.bin").write_bytes(base)
    (tmp_path / "lock.json").write_text(json.dumps(dict(fb.load_lock(), sha256=hashlib.sha256(base).hexdigest())))
    _, pub_file = _operator(tmp_path)
    boxes = [vbox.spawn(tmp_path / f"box{i}", name=f"fault-{i}") for i in range(1, 5)]
    srv, silent = _silent_port()
    try:
        dropping, dead, flaky, good = boxes
        dropping.set_faults(drop_link_after=20000)     # the cable goes mid-flash, and stays out
        dead.set_faults(flash_id="ffffff")             # the flash chip does not answer
        flaky.set_faults(corrupt_write=1)              # one write lands wrong: MD5 mismatch
        ports = ",".join(b.url for b in boxes) + "," + silent
        args = ["run", "--port", ports, "--broker", f"127.0.0.1:{bench_broker.port}",
                "--operator-pubkey", str(pub_file), "--out", str(tmp_path / "out"),
                "--base-bin", str(tmp_path / "base.bin"), "--lock", str(tmp_path / "lock.json")]
        r = _bench(args + ["--json"])
        assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
        rep = json.loads(r.stdout)
        by_slot = {b["slot"]: b for b in rep["boxes"]}
        assert by_slot["1"]["verdict"] == "FAIL" and by_slot["1"]["failure"]["kind"] == "link_lost"
        assert "cable" in by_slot["1"]["failure"]["advice"]
        assert by_slot["1"]["serial"]                       # allocated before the flash
        assert by_slot["2"]["verdict"] == "QUARANTINE" and by_slot["2"]["failure"]["kind"] == "bad_flash"
        assert by_slot["2"]["flash"]["flash_id"] == "ffffff" and by_slot["2"]["serial"] is None
        h = _bench(["history", "--mac", by_slot["2"]["mac"], "--out", str(tmp_path / "out")])
        assert h.returncode == 0 and "(no serial)" in h.stdout and "QUARANTINE  bad_flash" in h.stdout, h.stdout
        assert by_slot["3"]["verdict"] == "PASS"
        flash3 = by_slot["3"]["images"]["flash"]
        assert flash3["retries"] == 1 and flash3["baud"] == 115200       # retried once at a lower baud
        assert by_slot["4"]["verdict"] == "PASS"
        assert by_slot["5"]["verdict"] == "FAIL" and by_slot["5"]["failure"]["kind"] == "no_sync"
        assert "hold the BOOT button" in by_slot["5"]["failure"]["advice"]
        assert by_slot["5"]["steps"][0]["retries"] == 1                  # no sync: tried again
        assert dropping.faults() == {"unplugged": True}
        failed_serial = by_slot["1"]["serial"]

        # the technician reseats the cable and runs that slot again
        dropping.replug()
        r = _bench(args + ["--slot", "1", "--json"])
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        again = json.loads(r.stdout)["boxes"]
        assert len(again) == 1 and again[0]["verdict"] == "PASS" and again[0]["serial"] == failed_serial

        h = _bench(["history", "--serial", failed_serial, "--out", str(tmp_path / "out"), "--json"])
        attempts = json.loads(h.stdout)["attempts"]
        assert [(a["verdict"], (a["failure"] or {}).get("kind")) for a in attempts] == \
            [("FAIL", "link_lost"), ("PASS", None)]
    finally:
        srv.close()
        for b in boxes:
            b.stop()


def test_a_run_does_not_start_without_its_bench_broker(tmp_path):
    from tests.helpers import free_port
    r = _bench(["run", "--virtual", "1", "--broker", f"127.0.0.1:{free_port()}", "--out", str(tmp_path)])
    assert r.returncode == 2 and "bench broker" in r.stderr and "does not answer" in r.stderr, r.stderr
    assert not (tmp_path / "labels").exists()


def test_a_real_bench_run_refuses_to_start_without_the_operator_public_key(tmp_path):
    r = _bench(["run", "--port", "/dev/ttyUSB9", "--broker", "127.0.0.1:1883", "--out", str(tmp_path)])
    assert r.returncode == 2 and "public key" in r.stderr and "--operator-pubkey" in r.stderr
    bad = tmp_path / "bad.pub"
    bad.write_text("short")
    r = _bench(["run", "--port", "/dev/ttyUSB9", "--broker", "127.0.0.1:1883", "--out", str(tmp_path),
                "--operator-pubkey", str(bad)])
    assert r.returncode == 2 and "not a homebox operator pub file" in r.stderr, r.stderr


def test_a_box_whose_linky_is_silent_fails_with_what_to_do(tmp_path):
    """Over TLS, as on a real bench: the bench broker is an mqtts:// fleet broker
    that knows the box's password, the box is built for its production broker
    and trusts the fleet CA (--box-ca). The box's settings turn the TIC on (a home
    with a Linky) but nothing comes on the line: the self-test's tic_uart check
    fails and the technician is told what to check, while its mqtt check passed
    over TLS with the box's own credentials; no label, and the ledger keeps the checks."""
    from tests.helpers import FleetBroker, free_port
    key_file, pub_file = _operator(tmp_path)
    serial = "HB-000001"                       # the first serial of a new ledger
    # the bench broker learns the box's hash when the bench makes its secrets
    bench_pw = "bench-reader-" + "7f3a9c" * 4
    broker = FleetBroker(tmp_path / "broker", {}, plain=False, readers={"bench-1": bench_pw}).start()
    try:
        (tmp_path / "box.json").write_text(json.dumps({"broker_host": "127.0.0.1", "broker_port": free_port(),
                                                       "tls": True, "scenario": "silent_linky",
                                                       "tic_mode": "standard", "selftest_tic_s": 2}))
        out = tmp_path / "out"
        env = {"HOMEBOX_BENCH_BROKER_PASSWORD": bench_pw}
        r = _bench(["run", "--virtual", "1", "--broker", f"mqtts://localhost:{broker.tls}", "--broker-ca",
                    str(broker.ca), "--broker-user", "bench-1", "--box-ca", str(broker.ca),
                    "--operator-pubkey", str(pub_file), "--bench-broker-passwd", str(broker.out / "passwd"),
                    "--bench-broker-pid", str(broker.proc.pid), "--out", str(out), "--box-config",
                    str(tmp_path / "box.json"), "--vbox-heap", "256k", "--json"], env=env)
    finally:
        broker.stop()
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    b = json.loads(r.stdout)["boxes"][0]
    assert b["serial"] == serial and b["verdict"] == "FAIL" and b["failure"]["kind"] == "test_failed", b["failure"]
    assert b["failure"]["failed_checks"] == ["tic_uart"], b["failure"]
    assert "TIC test cable" in b["failure"]["advice"] and "no signal from the electricity meter" in b["failure"]["detail"]
    assert b["label"] is None and b["box_broker"].endswith("(TLS)")
    h = json.loads(_bench(["history", "--serial", serial, "--out", str(out), "--json"]).stdout)
    checks = {c["name"]: c for c in h["attempts"][-1]["checks"]}
    assert checks["tic_uart"]["status"] == "fail" and checks["pulse_input"]["status"] == "n/a"
    assert checks["mqtt"]["status"] == "pass" and "(TLS), with the box's credentials" in checks["mqtt"]["detail"]
    assert not _leaks(_secrets(_boxes_creds(out / "ledger.sqlite", key_file), key_file), [out],
                      {"stdout": r.stdout, "stderr": r.stderr})


def test_a_virtual_box_flashed_by_the_bench_runs_the_esp32_path(tmp_path, bench_broker):
    """Issue 14's acceptance: a virtual box flashed by `homebox bench run` boots
    `hal esp32` and publishes health, coverage (neighbours from the scan, stations
    without RSSI) and consumption (TIC and water) that validate against the
    contract, through the emulated board."""
    from backend.contract import validate
    from tests.helpers import Capture
    out = tmp_path / "out"
    slot = out / "vbox" / "slot-1"
    slot.mkdir(parents=True)
    # the virtual network's clock is set 8 s before an hour's end: the hourly
    # consumption report comes while the bench tests the box
    (slot / "board.json").write_text(json.dumps({"hour_end_in_s": 8}))
    box_cfg = tmp_path / "box.json"
    box_cfg.write_text(json.dumps({"coverage": True, "coverage_sample_s": 1, "coverage_interval": 4,
                                   "tic_mode": "standard", "water_enabled": True, "consumption_curve_s": 60,
                                   "telemetry_interval": 5}))
    cap = Capture(bench_broker.port)
    key_file, pub_file = _operator(tmp_path)
    try:
        r = _bench(["run", "--virtual", "1", "--broker", f"127.0.0.1:{bench_broker.port}", "--out", str(out),
                    "--box-config", str(box_cfg), "--operator-pubkey", str(pub_file), "--json"])
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        # the tenant's consent, signed with the box's own key (the operator opens the
        # escrow): an hourly report is a sub-daily figure, sent only with consent
        from backend import push
        from tests.helpers import publish
        serial = json.loads(r.stdout)["boxes"][0]["serial"]
        hkey = bytes.fromhex(_latest(_boxes_creds(out / "ledger.sqlite", key_file), serial).hmac_key)
        consent = push.prepare({"speed_tier": "10M", "consent": {"detailed_consumption": True}}, serial, 1, None, hkey)
        publish(bench_broker.port, f"homebox/v1/{serial}/desired/options", consent)
        # the bench powers its boxes off when it is done: power the flashed box on
        # again, on its bench, until its first hourly consumption report is out
        box = vbox.spawn(slot, name="vbox-1", board="esp32", scenario=out / "vbox" / "home.json")

        def kinds_of(c) -> dict:
            k: dict = {}
            for t, p, _r in c.messages:
                k.setdefault(t.rsplit("/", 1)[-1], []).append((t, p))
            return k
        try:
            ok = cap.wait_for(lambda c: {"health", "coverage", "consumption"} <= set(kinds_of(c)), 120)
            con = box.console()
        finally:
            box.stop()
        kinds = kinds_of(cap)
        assert ok, (sorted(kinds), con[-3000:])
        assert ", hal esp32" in con and "Traceback" not in con, con[-3000:]
        for kind in ("health", "coverage", "consumption"):
            for t, p in kinds[kind]:
                validate(t, p)
        cov = json.loads(kinds["coverage"][-1][1])["data"]
        assert cov["scan"]["aps"] >= 1 and cov["rssi"] == "unsupported"
        assert cov["stations"] and all(s["signal_strength"] == "unsupported" for s in cov["stations"])
        cons = [json.loads(p)["data"] for _t, p in kinds["consumption"]]
        assert any((c.get("elec") or {}).get("frames_ok") for c in cons), cons     # TIC frames decoded
        assert any(c.get("water") for c in cons), cons
    finally:
        cap.close()
