"""The ten steps that turn the box in one slot into a traced, tested, labelled
device. Runs in the slot's own process (esptool's logger is global).

    1 connect      sync with the ROM loader, start the flasher stub
    2 identify     chip, revision, MAC, flash ID and size
    3 allocate     the serial, from the ledger (idempotent per MAC)
    4 credentials  generated at random in memory; the ledger gets only the broker's
                   password hash and the secrets sealed to the operator's public key
    5 image        base firmware + this box's littlefs image, in memory
    6 flash        compressed, MD5-verified, unchanged pieces skipped
    7 reset        the box boots what was flashed
    8 test         hw-tests/ on the box's console (pytest-embedded)
    9 label        PNG + PDF sticker (passing boxes only)
   10 record       the attempt goes into the ledger, pass or fail

A failure is a typed BoxFailure (flashing.errors): its kind, verdict and the
advice for the technician end up in the result. Responses by kind: no sync is
retried; an MD5 mismatch is retried once at a lower baud; a link lost
mid-flash is retried once (flashing resumes, skipping what was written); a dead
flash ID quarantines the box; a failed test names the failed check.
"""
from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common import credentials
from common.broker import parse_broker
from flashing import acceptance, esp, image, label
from flashing.errors import FAIL, PASS, BoxFailure, LinkLost, NoSync, PortMissing
from flashing.ledger import Ledger

STEPS = ["connect", "identify", "allocate", "credentials", "image", "flash", "reset", "test", "label", "record"]


@dataclass
class Job:
    """Everything one slot process needs. It holds no secret: `operator_pub` is the
    operator's public key, which the box's fresh secrets are sealed to; the secrets
    stay in memory, and the result never holds them."""
    run_id: str
    slot: str
    port: str
    ledger: Path
    operator_pub: bytes
    firmware: image.Firmware = field(repr=False)
    out_dir: Path
    broker: str                           # the bench broker: HOST:PORT, mqtt:// or mqtts://
    broker_user: str | None = None
    broker_ca: str | None = None          # CA file of an mqtts:// bench broker (its subscriber)
    bench_passwd: Path | None = None      # the bench broker's password file (the box's self-test logs in)
    bench_pid: str | None = None          # the bench broker's pid or pid file, for a reload
    box_ca: bytes | None = field(default=None, repr=False)   # the CA the boxes trust, as /ca.pem
    prefix: str = "HB"
    baud: int = esp.DEFAULT_BAUD
    station: str = ""
    technician: str = ""
    tools: dict = field(default_factory=dict)
    support: str | None = None
    operator: str = "homebox"
    box_config: dict = field(default_factory=dict)   # extra config.json keys for every box
    connect_tries: int = 2
    test_timeout: float = 300
    run_tests: bool = True

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / "runs" / self.run_id


class _Steps:
    """Times each step, counts its retries, tells the parent process."""

    def __init__(self, job: Job, emit: Callable[[dict], None], result: dict):
        self.job = job
        self.emit = emit
        self.result = result
        self.cur: dict | None = None

    def start(self, name: str, detail: str = "") -> dict:
        n = STEPS.index(name) + 1
        self.cur = {"n": n, "step": name, "status": "running", "retries": 0, "detail": detail,
                    "t0": time.monotonic()}
        self.result["steps"].append(self.cur)
        self.emit({"event": "step", "slot": self.job.slot, "n": n, "step": name, "detail": detail})
        return self.cur

    def done(self, status: str = "ok", detail: str | None = None) -> None:
        c = self.cur
        if c is None:
            return
        c["status"] = status
        c["seconds"] = round(time.monotonic() - c.pop("t0"), 2)
        if detail is not None:
            c["detail"] = detail
        self.cur = None

    def log(self, text: str) -> None:
        self.emit({"event": "log", "slot": self.job.slot, "text": text})


def new_result(job: Job) -> dict:
    return {"slot": job.slot, "port": job.port, "run_id": job.run_id, "verdict": None, "serial": None,
            "mac": None, "chip": None, "flash": None, "images": None, "steps": [], "failure": None,
            "label": None, "tests": None, "box_broker": None, "started_at": time.time(), "finished_at": None}


def run(job: Job, emit: Callable[[dict], None], logline: Callable[[str], None] | None = None) -> dict:
    """Run the ten steps for one slot; returns the result (no secret in it)."""
    result = new_result(job)
    st = _Steps(job, emit, result)
    logline = logline or st.log
    cap = esp.capture_esptool_log(logline)
    ledger = Ledger(job.ledger, job.prefix)
    dev = esp.Device(job.port, job.baud)
    try:
        _steps(job, st, result, dev, ledger, cap, emit, logline)
        result["verdict"] = PASS
    except BoxFailure as e:
        st.done("fail", e.detail)
        result["verdict"] = e.verdict
        result["failure"] = e.as_dict()
        outcome = getattr(e, "outcome", None)
        if outcome is not None:
            result["tests"] = outcome.as_dict()
    except Exception as e:          # a bug, not the box: still recorded, still one slot only
        st.done("fail", repr(e))
        result["verdict"] = FAIL
        result["failure"] = {"kind": "internal", "verdict": FAIL, "detail": repr(e)[:300],
                             "advice": "a software error on the bench: call support with the log of this slot"}
        logline("internal error:\n" + traceback.format_exc())
    finally:
        dev.close()
    rec = st.start("record")
    result["finished_at"] = time.time()
    try:
        st.done("ok")                 # the ledger row is the record itself
        ledger.record(job.run_id, _for_ledger(result), job.station, job.technician, job.tools)
    except Exception as e:
        rec.update(status="fail", detail=repr(e)[:300])
        result["verdict"] = FAIL
        result["failure"] = result["failure"] or {"kind": "ledger", "verdict": FAIL, "detail": repr(e)[:300],
                                                  "advice": "the ledger could not be written: call support"}
    finally:
        ledger.close()
    for s in result["steps"]:
        s.pop("t0", None)
    emit({"event": "result", "slot": job.slot, "result": result})
    return result


def provision(ledger: Ledger, serial: str, operator_pub: bytes, run_id: str | None = None) -> credentials.Credentials:
    """Step 4: fresh random credentials for the box, in memory; the ledger keeps the
    broker hash and the secrets sealed to the operator's public key, nothing that
    opens the box (docs/decisions/0013-per-box-secrets.md)."""
    creds = credentials.generate(serial, ledger.next_key_version(serial))
    ledger.add_escrow(credentials.escrow(creds, operator_pub), run_id)
    return creds


def bench_broker_login(passwd: Path, serial: str, mqtt_hash: str, pid: str | None) -> None:
    """Let the box's self-test log in to a bench broker that checks passwords: its
    hash replaces the box's line in the bench broker's password file (under a lock:
    slots run at once), then the broker reloads. Only the hash is written."""
    import fcntl
    import os
    passwd = Path(passwd)
    with open(passwd.with_name(passwd.name + ".lock"), "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        lines = passwd.read_text().splitlines() if passwd.exists() else []
        lines = [ln for ln in lines if ln.split(":", 1)[0] != serial] + [f"{serial}:{mqtt_hash}"]
        tmp = passwd.with_name(passwd.name + ".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        if passwd.exists():
            os.chmod(tmp, passwd.stat().st_mode & 0o777)
        os.replace(tmp, passwd)
        if pid:
            import signal
            p = str(pid)
            os.kill(int(p) if p.isdigit() else int(Path(p).read_text().strip()), signal.SIGHUP)


def _for_ledger(result: dict) -> dict:
    r = dict(result)
    r["steps"] = [{k: v for k, v in s.items() if k != "t0"} for s in result["steps"]]
    return r


def _connect(job: Job, st: _Steps, dev: esp.Device, logline) -> None:
    """No sync: try again (job.connect_tries in all)."""
    for attempt in range(1, job.connect_tries + 1):
        try:
            dev.connect()
            return
        except (NoSync, PortMissing, LinkLost) as e:
            logline(f"connect attempt {attempt} failed: {e.detail}")
            if attempt == job.connect_tries:
                raise
            if st.cur is not None:
                st.cur["retries"] += 1
            time.sleep(0.5)


def _steps(job: Job, st: _Steps, result: dict, dev: esp.Device, ledger: Ledger, cap, emit, logline) -> None:
    # 1-2
    st.start("connect", job.port)
    _connect(job, st, dev, logline)
    st.done()
    st.start("identify")
    try:
        info = dev.identify()
    finally:                                       # BadFlash (QUARANTINE) still says what was read
        i = dev.info
        if i is not None:
            result["mac"] = i.mac
            result["chip"] = {"chip": i.chip, "description": i.description, "revision": i.revision,
                              "crystal_mhz": i.crystal_mhz}
            result["flash"] = {"flash_id": i.flash_id, "flash_size": i.flash_size}
    st.done(detail=f"{info.description}, MAC {info.mac}, flash {info.flash_size} (ID {info.flash_id})")
    # 3
    st.start("allocate")
    ident = ledger.allocate(info.mac, {"chip": info.description, "revision": info.revision,
                                       "flash_id": info.flash_id, "flash_size": info.flash_size})
    result["serial"] = ident.serial
    st.done(detail=f"{ident.serial} ({'new' if ident.new else 'known box'})")
    emit({"event": "serial", "slot": job.slot, "serial": ident.serial, "mac": info.mac})
    # 4
    st.start("credentials")
    creds = provision(ledger, ident.serial, job.operator_pub, job.run_id)
    if job.bench_passwd:
        bench_broker_login(job.bench_passwd, ident.serial, credentials.mosquitto_hash(creds.mqtt_password),
                           job.bench_pid)
    st.done(detail=f"key version {creds.key_version}: generated in memory, sealed to the operator")
    # 5
    st.start("image")
    config = {"state_dir": "/state", "telemetry_interval": 300}
    config.update(job.box_config)
    if not config.get("broker_host"):
        # No production broker in --box-config: the box keeps the bench broker
        # (a lab or demo run). A production box gets its broker from --box-config;
        # the bench broker is only given to the self-test, on the console.
        broker = parse_broker(job.broker)
        config.update(broker_host=broker.host, broker_port=broker.port, tls=broker.tls)
    config.update({"box_id": ident.serial, "serial": ident.serial, "mac": info.mac,
                   "wifi_ssid": creds.wifi_ssid})
    files = {}
    if job.box_ca:
        files["ca.pem"] = job.box_ca
        config.setdefault("tls_ca", "/ca.pem")
    img = image.build(job.firmware, info.flash_size, config, creds.secrets_json(), files)
    result["images"] = dict(img.images, agent_build=img.agent_build, firmware=img.firmware)
    result["box_broker"] = "%s:%s%s" % (config["broker_host"], config.get("broker_port", 1883),
                                        " (TLS)" if config.get("tls") else "")
    st.done(detail=f"agent build {img.agent_build}")
    # 6
    cur = st.start("flash")
    last_pct = [-1]

    def progress(frac: float) -> None:
        pct = int(frac * 100)
        if pct != last_pct[0]:
            last_pct[0] = pct
            emit({"event": "progress", "slot": job.slot, "fraction": frac})

    split = (img.images["vfs"]["offset"],)          # the agent writes there: compare it piece by piece
    try:
        rep = dev.flash(img.parts, progress, cap, split=split)
    except LinkLost as e:
        # one retry: reconnect, and flashing resumes where it stopped (pieces
        # already written match their MD5 and are skipped)
        logline(f"link lost during flashing ({e.detail}); reconnecting once")
        cur["retries"] += 1
        dev.close()
        try:
            dev.connect()
        except BoxFailure as again:
            logline(f"reconnect failed: {again.detail}")
            raise LinkLost(f"the USB link dropped at {max(last_pct[0], 0)}% of flashing and did not come back") from None
        rep = dev.flash(img.parts, progress, cap, split=split)
    cur["retries"] += rep.retries
    result["images"]["flash"] = rep.as_dict()
    st.done(detail=f"{rep.parts - rep.skipped} of {rep.parts} pieces written, {rep.skipped} already there"
                   + (f", retried at {rep.baud} baud" if rep.retries else ""))
    # 7
    st.start("reset")
    dev.reset()
    st.done()
    # 8
    st.start("test")
    if job.run_tests:
        outcome = acceptance.run(job.port, ident.serial, info.mac, job.broker,
                                 job.run_dir / f"slot-{job.slot}", job.broker_user, job.test_timeout,
                                 broker_ca=job.broker_ca)
        result["tests"] = outcome.as_dict()
        st.done(detail=f"{len(outcome.tests)} tests passed in {outcome.seconds:.1f} s")
    else:
        st.done("skipped", "--no-tests")
    # 9
    st.start("label")
    try:
        files = label.make(job.out_dir / "labels", ident.serial, creds.wifi_ssid, creds.wifi_key,
                           job.support, job.operator)
    except OSError as e:
        from flashing.errors import LabelError
        raise LabelError(f"cannot write the label: {e}") from None
    result["label"] = files.as_dict()
    st.done(detail=str(files.png))
