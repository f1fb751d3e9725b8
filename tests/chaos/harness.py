"""The chaos runs' backend and operator: a real Mosquitto, the real ingest process
into SQLite, an operator pushing desired documents (and garbage), and the tally
of what a run checked."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt

from agent import topics
from agent.rules import SECTIONS
from backend.store import Store
from tests.helpers import Mosquitto

ROOT = Path(__file__).resolve().parents[2]


EXAMPLES = ROOT / "docs" / "contract" / "examples"
PROBE = "chaos-probe"
ROGUE = "chaos-rogue"
# Chaos boxes: a telemetry report every 0.1 s of real time (60 s on a 600x sim clock).
BOX_CFG = dict(telemetry_interval=60, speedup=600, keepalive=10, backoff_base=0.2, backoff_cap=2.0,
               drain_rate=200)


class ChaosError(AssertionError):
    pass


@dataclass
class Tally:
    scenario: str
    boxes: int = 0
    kills: int = 0
    boots: int = 0
    state_files: int = 0
    pending_at_cuts: int = 0     # records in an outbox at a cut: each must arrive later
    seqs_checked: int = 0
    lost: int = 0
    duplicated: int = 0          # one (box, boot, seq) carrying two different messages
    redelivered: int = 0         # the same message again (QoS 1), removed by the store
    declared_dropped: int = 0    # dropped by a box's outbox bound, and said so
    pushed: int = 0
    rejected_seen: int = 0       # reported documents naming a rejected field
    bad_injected: int = 0
    converged: int = 0
    extra: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)

    def fail(self, msg: str) -> None:
        self.failures.append(msg)

    def line(self) -> str:
        s = (f"{self.scenario}: boxes {self.boxes}, kills {self.kills}, boots {self.boots}, "
             f"state files checked {self.state_files}, seqs checked {self.seqs_checked}, "
             f"lost {self.lost}, duplicated {self.duplicated}, redelivered {self.redelivered}, "
             f"declared dropped {self.declared_dropped}, pending at cuts {self.pending_at_cuts}, "
             f"updates pushed {self.pushed}, converged {self.converged}/{self.boxes}")
        if self.bad_injected:
            s += f", bad messages injected {self.bad_injected} (rejections seen {self.rejected_seen})"
        for k, v in self.extra.items():
            s += f", {k} {v}"
        return s

    def check(self) -> None:
        if self.failures or self.lost or self.duplicated:
            raise ChaosError(f"{self.line()}\n" + "\n".join(self.failures[:30]))


# ---- desired documents ------------------------------------------------------------

def desired_doc(section: str, version: int) -> dict:
    """A valid document of each section whose content changes with the version."""
    if section == "options":
        return {"version": version, "speed_tier": "%dM" % (2 + version % 9), "bouquets": [],
                "phone": {"enabled": version % 2 == 0, "number": "+33299000000"}}
    base = json.loads((EXAMPLES / f"desired-{section}.json").read_text())
    base["version"] = version
    if section == "channels":
        chans = [c for c in base["channels"] if c["bouquet"] == "tnt"]
        chans[0] = dict(chans[0], name="TF1 %d" % version)
        base["channels"] = chans
    else:
        base["profiles"][0]["name"] = "Children %d" % version
    return base


def payload(doc: dict) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


# ---- the backend: broker, ingest process, store ----------------------------------------

class Backend:
    """A real Mosquitto, the real ingest process (`homebox ops ingest`) into SQLite,
    and a Store connection of our own to read what it wrote."""

    def __init__(self, workdir: Path, persistence: bool = False, extra: str = ""):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.broker = Mosquitto(self.workdir / "broker", persistence=persistence, extra=extra)
        self.db = f"sqlite:///{self.workdir / 'backend.db'}"
        self.ingest: subprocess.Popen | None = None
        self.store: Store | None = None
        self.client_id = f"chaos-ingest-{os.getpid()}-{id(self) % 10000}"
        self.totals: dict = {}

    @property
    def port(self) -> int:
        return self.broker.port

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.broker.port}"

    def start(self) -> Backend:
        self.broker.start()
        self.start_ingest()
        self.store = Store(self.db)
        self.probe()
        return self

    def start_ingest(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "homebox.cli", "ops", "ingest", "--broker", self.url, "--db", self.db,
               "--client-id", self.client_id, "--batch-wait", "0.05"]
        self.ingest = subprocess.Popen(cmd, env=env, cwd=str(ROOT),
                                       stdout=open(self.workdir / "ingest.out", "ab"),
                                       stderr=open(self.workdir / "ingest.log", "ab"))

    def probe(self, timeout: float = 30) -> None:
        """Test delivery, not SUBACKs: a status message must reach the database."""
        deadline = time.time() + timeout
        boot = int(time.time())
        while time.time() < deadline:
            publish_once(self.port, topics.status(PROBE),
                         payload({"state": "offline", "box": PROBE, "boot": boot}), retain=False)
            t = time.time() + 1.0
            while time.time() < t:
                if any(b["box"] == PROBE and b["state_boot"] == boot for b in self.store.boxes()):
                    return
                time.sleep(0.05)
            if self.ingest.poll() is not None:
                break
        raise ChaosError(f"ingest does not store what the broker delivers: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return (self.workdir / "ingest.log").read_text()[-2000:]
        except OSError:
            return ""

    def stop_ingest(self) -> dict:
        if self.ingest and self.ingest.poll() is None:
            self.ingest.send_signal(signal.SIGTERM)
            try:
                self.ingest.wait(30)
            except subprocess.TimeoutExpired:
                self.ingest.kill()
                self.ingest.wait()
        self.ingest = None
        try:
            lines = (self.workdir / "ingest.out").read_text().strip().splitlines()
            self.totals = json.loads(lines[-1]) if lines else {}
        except (OSError, ValueError):
            self.totals = {}
        return self.totals

    def wait(self, pred, timeout: float, what: str) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if pred():
                return
            if self.ingest is not None and self.ingest.poll() is not None:
                raise ChaosError(f"ingest exited while waiting for {what}: {self.log_tail()}")
            time.sleep(0.1)
        raise ChaosError(f"timed out waiting for {what}")

    def close(self) -> None:
        self.stop_ingest()
        self.broker.stop()
        if self.store:
            self.store.close()


def publish_once(port: int, topic: str, data: bytes, retain: bool = True, qos: int = 1) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"chaos-pub-{os.getpid()}-{time.time_ns()}")
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        c.publish(topic, data, qos=qos, retain=retain).wait_for_publish(10)
    finally:
        c.loop_stop()
        c.disconnect()


class Operator:
    """Pushes desired documents as the operator's push tool does: record in the
    store first, then publish retained with QoS 1."""

    def __init__(self, backend: Backend, boxes: list[str], seed: int = 1):
        self.backend = backend
        self.boxes = boxes
        self.rng = random.Random(seed)
        self.store = Store(backend.db)
        self.versions: dict[tuple[str, str], int] = {}
        self.pushed = 0
        self.bad = 0
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"chaos-operator-{os.getpid()}")
        self.c.reconnect_delay_set(0.1, 1)
        self.c.connect("127.0.0.1", backend.port)
        self.c.loop_start()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def push(self, box: str, section: str, version: int | None = None) -> int:
        v = version or self.versions.get((box, section), 0) + 1
        data = payload(desired_doc(section, v))
        self.store.put_desired(box, section, data, source="chaos")
        self.c.publish(topics.desired(box, section), data, qos=1, retain=True).wait_for_publish(10)
        self.versions[(box, section)] = v
        self.pushed += 1
        return v

    def push_all(self, version: int | None = None) -> None:
        for b in self.boxes:
            for s in SECTIONS:
                self.push(b, s, version)

    def inject_bad(self) -> None:
        """What a broken or hostile publisher sends (the test broker has no ACL):
        desired documents a box must refuse, not retained so the good ones stay;
        and garbage on telemetry topics, which ingest must quarantine."""
        r = self.rng
        box = r.choice(self.boxes)
        section = r.choice(SECTIONS)
        v = self.versions.get((box, section), 0)
        bad = [b"{broken json", b"[]", b'{"version": 0}', b'{"version": "9"}',
               payload(dict(desired_doc(section, v + 1000), unknown_field=1)),
               bytes(r.randrange(256) for _ in range(r.randrange(1, 64)))]
        if v > 1:
            bad.append(payload(desired_doc(section, v - 1)))        # a stale replay
        # Only documents that break the contract, or stale ones: ingest records a
        # contract-valid desired document as what the operator wants (in production
        # the broker's ACL lets only the push account write desired topics).
        self.c.publish(topics.desired(box, section), r.choice(bad), qos=1, retain=False).wait_for_publish(10)
        junk = r.choice([b"", b"\xff\xfe", b"{}", b'{"v":1}', b"null",
                         payload({"v": 1, "box": ROGUE, "boot": "x", "seq": -1, "kind": "health"})])
        t = r.choice([topics.telemetry(ROGUE, "health"), topics.event(ROGUE), topics.status(ROGUE),
                      topics.telemetry(box, "health")])
        self.c.publish(t, junk, qos=1).wait_for_publish(10)
        self.bad += 2

    def run_background(self, period: float = 0.3, bad_share: float = 0.3) -> None:
        def loop():
            while not self._stop.wait(self.rng.uniform(0.5, 1.5) * period):
                try:
                    if self.rng.random() < bad_share:
                        self.inject_bad()
                    else:
                        self.push(self.rng.choice(self.boxes), self.rng.choice(SECTIONS))
                except Exception as e:      # the broker may be down: try again later
                    print(f"chaos: operator: {e!r}", file=sys.stderr)
        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop_background(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)

    def close(self) -> None:
        self.stop_background()
        self.c.loop_stop()
        self.c.disconnect()
        self.store.close()
