"""`homebox demo`: one simulated box, the real agent, a real broker, on this machine.

It starts a broker (Debian's Mosquitto if installed, otherwise the pure-Python amqtt
broker in-process), runs one box with the real agent (under the real MicroPython
interpreter when it is installed), prints every message the broker delivers, and
stops everything it started.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from homebox import boxrun, contract


def configure(p) -> None:
    p.add_argument("--duration", type=float, default=40, help="seconds to run (default 40)")
    p.add_argument("--speedup", type=float, default=300, help="sim clock speed (default 300x)")
    p.add_argument("--cpython", action="store_true", help="run the agent under CPython, not MicroPython")
    p.set_defaults(func=run)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 10) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class Broker:
    def __init__(self, workdir: Path):
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None
        self.thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.kind = ""
        exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        if exe:
            conf = workdir / "mosquitto.conf"
            conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
            self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.kind = "Mosquitto"
        else:
            self._start_amqtt()
            self.kind = "amqtt (pure Python; Mosquitto is not installed)"
        if not _wait_port(self.port):
            self.stop()
            raise RuntimeError("the broker did not start")

    def _start_amqtt(self) -> None:
        from amqtt.broker import Broker as AmqttBroker
        cfg = {"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
               "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}}
        ready = threading.Event()

        def serve():
            self.loop = asyncio.new_event_loop()
            broker = AmqttBroker(cfg, loop=self.loop)
            self.loop.run_until_complete(broker.start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        ready.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        if self.loop:
            self.loop.call_soon_threadsafe(self.loop.stop)


def _describe(topic: str, payload: bytes) -> str:
    try:
        contract.validate(topic, payload)
        ok = "valid"
    except contract.ContractError as e:
        ok = f"INVALID ({e.errors[0]})"
    try:
        m = json.loads(payload)
    except ValueError:
        return f"{topic}: {payload[:60]!r}"
    kind = topic.split("/", 3)[-1]
    if "seq" in m:
        d = m.get("data", {})
        extra = ", ".join(f"{k}={d[k]}" for k in ("uptime_s", "heap_alloc", "outbox_backlog") if k in d)
        return f"{kind:<22} boot={m['boot']} seq={m['seq']:<3} ts={m['ts']}  {extra}  [{ok}]"
    if "state" in m:
        return f"{kind:<22} {m['state']}  [{ok}]"
    return f"{kind:<22} version={m.get('version')} status={m.get('status')}  [{ok}]"


def run(args) -> int:
    work = Path(tempfile.mkdtemp(prefix="homebox-demo-"))
    print(f"homebox demo: one simulated home, the real agent, a real broker (work dir {work})")
    broker = Broker(work)
    print(f"1. broker: {broker.kind} on 127.0.0.1:{broker.port}")
    use_mpy = not args.cpython
    if use_mpy:
        try:
            boxrun.micropython_exe()
        except boxrun.BoxRunError:
            use_mpy = False
    received: list[str] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="homebox-demo-viewer")
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("homebox/#", qos=1)

    def on_message(c, u, msg):
        line = _describe(msg.topic, msg.payload)
        received.append(line)
        print("   <- " + line, flush=True)

    sub.on_message = on_message
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    cfg = boxrun.write_config(work / "box", box_id="demo-box-1", broker_host="127.0.0.1",
                              broker_port=broker.port, speedup=args.speedup, duration=args.duration,
                              telemetry_interval=300)
    cmd, env = boxrun.box_command(cfg, micropython=use_mpy, heap="128k")
    interp = "the real MicroPython interpreter (128 KB heap)" if use_mpy else "CPython"
    print(f"2. box demo-box-1: the real agent under {interp}; sim clock {args.speedup:g}x, "
          f"a health report every 5 sim minutes")
    print("3. what the broker delivers (each checked against docs/contract):")
    box = subprocess.Popen(cmd, env=env, cwd=boxrun.neutral_cwd(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rc = 0
    try:
        box.wait(args.duration + 30)
    except KeyboardInterrupt:
        print("\nstopping (Ctrl-C)")
        box.send_signal(signal.SIGINT)
    except subprocess.TimeoutExpired:
        box.kill()
    finally:
        if box.poll() is None:
            box.kill()
            box.wait()
        time.sleep(0.5)
        sub.loop_stop()
        sub.disconnect()
        broker.stop()
    telemetry = [r for r in received if "seq=" in r]
    bad = [r for r in received if "INVALID" in r]
    if box.returncode not in (0, None) and box.returncode != -signal.SIGKILL:
        err = box.stderr.read().decode(errors="replace")[-2000:] if box.stderr else ""
        print(f"FAIL: the box exited with code {box.returncode}\n{err}")
        rc = 1
    print(f"4. done: {len(telemetry)} telemetry messages received, {len(bad)} outside the contract; "
          "broker and box stopped.")
    if not telemetry or bad:
        rc = 1
    return rc
