"""`homebox demo`: the whole system on this machine, in one command.

It starts a broker (Debian's Mosquitto if installed, otherwise the pure-Python
amqtt broker in-process) and three virtual ESP32 boxes, each a different sim
home: a good home, weak Wi-Fi in one bedroom, a leaking tap. The real bench
pipeline flashes, provisions, tests and labels them; they boot the real agent
under the real MicroPython interpreter and publish. Ingest stores what they send
in SQLite, a live view shows the fleet, the operator pushes a parental schedule
and an option change, and at the end a report (plots, HTML, labels) is written.
Every process it started is stopped.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from backend import contract

HOMES = [("good_home", "a good home"),
         ("weak_bedroom", "weak Wi-Fi in one bedroom"),
         ("leaking_tap", "a leaking tap, a slow line")]
# Each home's line: (speed tier of its plan, Mbps the line carries). A speed-test
# server per home is that line (backend/speedtest_server.py, rate_bps).
LINES = {"good_home": ("10M", 10), "weak_bedroom": ("10M", 10), "leaking_tap": ("10M", 6)}
# The boxes test once a sim day (43 s at the default speedup) at their own time,
# shorter and smaller than in the field (8 s, 20 MB) to keep the demo short.
SPEED_WAIT_S = 50
SPEED_CONFIG = {"speed_window": [0, 24], "speed_seconds": 3, "speed_budget": 6000000,
                "speed_streams": 4}
EXAMPLES = contract.EXAMPLES_DIR


def configure(p) -> None:
    p.add_argument("--duration", type=float, default=60,
                   help="seconds the fleet runs after the bench (default 60); Ctrl-C ends it early")
    p.add_argument("--speedup", type=float, default=2000,
                   help="sim clock speed (default 2000x: one sim hour in 1.8 s)")
    p.add_argument("--out", type=Path, default=None, help="work and report directory (default: a new temp dir)")
    p.add_argument("--console-for", type=float, default=0,
                   help="keep the operator console up S seconds at the end (-1: until Ctrl-C; make demo does)")
    p.add_argument("--plain", action="store_true", help="plain lines instead of the live view")
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


class _Say:
    """Numbered steps in plain words."""

    def __init__(self):
        self.n = 0

    def step(self, text: str) -> None:
        self.n += 1
        print(f"\n{self.n}. {text}", flush=True)

    def line(self, text: str) -> None:
        print(f"   {text}", flush=True)


def _speed(r: dict) -> str:
    return "no speed test yet" if r.get("speed_ratio") is None else f"speed {r['speed_ratio']:.0%} of plan"


def _fleet_table(rows: list[dict], names: dict[str, str]):
    from rich.table import Table
    t = Table(title="the fleet, as the operator sees it", expand=False)
    for col in ("box", "home", "state", "messages", "updates", "speed", "alarms"):
        t.add_column(col)
    for r in rows:
        alarms = ", ".join(a["code"] for a in r["alarms"]) or "none"
        ups = " ".join(f"{k}=v{v}" for k, v in sorted(r["versions"].items())) or "-"
        if r["pending"]:
            ups += " (pending: " + ",".join(r["pending"]) + ")"
        t.add_row(r["box"], names.get(r["box"], "?"), r["state"], str(r.get("messages", "")), ups, _speed(r),
                  f"[red]{alarms}[/red]" if r["alarms"] else "[green]none[/green]")
    return t


def _plain_fleet(rows: list[dict], names: dict[str, str]) -> str:
    out = []
    for r in rows:
        alarms = ", ".join(a["code"] for a in r["alarms"]) or "no alarm"
        ups = " ".join(f"{k}=v{v}" for k, v in sorted(r["versions"].items()))
        out.append(f"{r['box']:<10} {names.get(r['box'], '?'):<26} {r['state']:<8} {ups}  {_speed(r)}  {alarms}")
    return "\n   ".join(out)


def _push(section: str, doc: dict, box: str, broker: str, key: bytes, db: str) -> str:
    """What `homebox ops push` does (backend.push), as one line for the demo."""
    from backend import push
    from backend.errors import OpsError
    from backend.store import Store
    from common.broker import parse_broker
    store = Store(db)
    try:
        r = push.push(parse_broker(broker), box, section, doc, None, store=store, timeout=30, key=key)
    except OpsError as e:
        return f"{e} (not pushed)"
    finally:
        store.close()
    return r.message


def _campaign(section: str, doc: dict, boxes: list[str], broker: str, master, db: str) -> list[str]:
    """What `homebox ops campaign create` + `start` do (backend.campaign): a canary
    box, then the rest; one line per wave and per box."""
    from backend import campaign
    from backend.errors import OpsError
    from backend.store import Store
    from common.broker import parse_broker
    store = Store(db)
    try:
        c = campaign.create(store, section, doc, {"boxes": boxes}, canary=1 / len(boxes) if boxes else 1.0,
                            waves=[1.0], success=1.0, box_timeout=30, author="demo")
        st = campaign.run(store, parse_broker(broker), c["id"], master, until=time.time() + 60)
    except OpsError as e:
        return [f"{e} (campaign not run)"]
    finally:
        store.close()
    lines = []
    for w in st["wave_stats"]:
        mine = [b for b in st["boxes"] if b["wave"] == w["wave"]]
        lines.append(f"{w['name']}: " + ", ".join(
            f"{b['box']} {b['state']}" + (f" v{b['version']}" if b["version"] else "") +
            (f" ({b['reason']})" if b["reason"] and b["state"] != "applied" else "") for b in mine))
    lines.append(f"campaign {st['id']}: {st['state']}" + (f" - {st['reason']}" if st["reason"] else ""))
    return lines


def _add_labels(index: Path, labels: list[tuple[str, dict]]) -> None:
    out = index.parent / "labels"
    out.mkdir(exist_ok=True)
    parts = ["<h2>Labels (stickers for the tenants)</h2>"]
    for serial, lab in labels:
        for kind in ("png", "pdf"):
            if lab.get(kind) and Path(lab[kind]).exists():
                shutil.copy(lab[kind], out / Path(lab[kind]).name)
        png = Path(lab.get("png", "")).name
        parts.append(f"<h3>{serial}</h3><img src='labels/{png}' alt='label {serial}' style='max-width:400px'>"
                     f" <a href='labels/{Path(lab.get('pdf', '')).name}'>PDF</a>")
    html = index.read_text()
    index.write_text(html.replace("</body>", "".join(parts) + "</body>") if "</body>" in html
                     else html + "".join(parts))


def _console(say, db: str, keep: float) -> None:
    """The operator console on this demo's store, with a demo account; up for `keep`
    seconds (-1: until Ctrl-C). It reads only: started without a broker or keys,
    its pushes answer 503 (the demo pushes with `ops push`'s library above)."""
    import secrets

    from backend import accounts
    from backend.api import Api, serve
    from backend.store import Store
    st = Store(db)
    password = "demo-" + secrets.token_urlsafe(6)
    accounts.add(st, "demo", "viewer", password, author="demo")
    st.close()
    api = Api(db, grace=60)
    srv = serve(api, "127.0.0.1", 0)
    host, port = srv.server_address[:2]
    say.step("The operator console (HTTP API and web pages, French and English)")
    say.line(f"console: http://{host}:{port}/  account: demo  password: {password}  "
             f"(OpenAPI: http://{host}:{port}/api/v1/openapi.json)")
    try:
        if keep < 0:
            say.line("up until Ctrl-C")
            while True:
                time.sleep(1)
        elif keep > 0:
            time.sleep(keep)
    except KeyboardInterrupt:
        pass
    finally:
        srv.shutdown()
        srv.server_close()
        api.close()


def run(args) -> int:
    from backend import report, status
    from backend.ingest import Ingest
    from backend.store import Store
    from common import credentials
    from flashing import image, slots, station
    from flashing.errors import BenchError
    from homebox.cli_bench import PlainView

    work = Path(args.out or tempfile.mkdtemp(prefix="homebox-demo-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    live = not args.plain and sys.stdout.isatty()
    say = _Say()
    print(f"homebox demo: three homes, the bench, the broker and the operator side, on this machine.\n"
          f"Work directory: {work}")
    broker = vslots = ingest = None
    lines: list = []
    ingest_thread = None
    names: dict[str, str] = {}
    rc = 0
    try:
        say.step("Starting the broker")
        broker = Broker(work)
        url = f"127.0.0.1:{broker.port}"
        say.line(f"{broker.kind} on {url}")

        say.step("Starting the operator's ingest (MQTT -> SQLite)")
        db = f"sqlite:///{work / 'backend.db'}"
        store = Store(db)
        ingest = Ingest(f"mqtt://{url}", store, client_id="homebox-demo-ingest", log=lambda *a: None)
        ingest_thread = threading.Thread(target=ingest.run, kwargs={"stats_every": 0}, daemon=True)
        ingest_thread.start()
        say.line(f"storing every message in {work / 'backend.db'}")

        say.step("Starting a speed-test server per home (each is that home's line)")
        from backend import speedtest_server
        for home, _ in HOMES:
            tier, mbps = LINES[home]
            lines.append(speedtest_server.start(rate_bps=mbps * 1e6))
            say.line(f"{home}: a {mbps} Mbps line on http://127.0.0.1:{lines[-1].server_address[1]}"
                     f" (plan {tier})")

        say.step("Plugging three virtual ESP32 boxes into the bench")
        op_key, op_pub = work / "operator" / "operator.key", work / "operator" / "operator.pub"
        if not op_key.exists():
            credentials.write_operator_key(work / "operator")
        say.line(f"a throwaway operator key pair for this demo: the bench gets only {op_pub.name}; "
                 f"{op_key.name} stays on the operator side (never printed)")
        # A whole sim home (Wi-Fi, Linky, water simulators in the box's own heap)
        # needs ~115-145 KB on this 64-bit port (and the vbox flash driver shares it);
        # a real box runs only the agent.
        vslots = slots.start_virtual(len(HOMES), work / "vbox", heap="256k", board="none")
        for sl, (home, words), srv in zip(vslots, HOMES, lines):
            sl.config = {"scenario": home, "speedup": args.speedup,
                         "speed_url": f"http://127.0.0.1:{srv.server_address[1]}", **SPEED_CONFIG}
            say.line(f"slot {sl.number}: {sl.port}  sim home: {words}")

        say.step("Running the bench: flash, provision, test, label (the real esptool and pytest-embedded)")
        fw = image.load_firmware(None, virtual=True)
        cfg = station.Config(out_dir=work / "bench", ledger=work / "bench" / "ledger.sqlite",
                             operator_pub=credentials.load_operator_pub(op_pub), key_source="file",
                             firmware=fw, broker=url,
                             support="Assistance homebox : 01 23 45 67 89", technician="demo")
        view = PlainView()
        rep = station.Station(cfg).run(vslots, lambda ev: view.event(ev) if ev["event"] != "log" else None)
        passed = [r for r in rep["boxes"] if r["verdict"] == "PASS"]
        for r in rep["boxes"]:
            home = dict(HOMES)[vslots[int(r["slot"]) - 1].config["scenario"]]
            if r.get("serial"):
                names[r["serial"]] = home
            why = "" if r["verdict"] == "PASS" else f": {(r.get('failure') or {}).get('detail', '')}"
            say.line(f"{r['verdict']}  slot {r['slot']}  {r.get('serial') or '-'}  ({home}){why}")
        if not passed:
            print("FAIL: no box passed the bench; nothing to show. See the lines above.")
            return 1
        from backend.keys import Registry
        from flashing.ledger import Ledger
        registry = Registry(work / "registry.sqlite")
        with Ledger(work / "bench" / "ledger.sqlite") as led:
            got = registry.import_records(led.escrow_records(), credentials.load_operator_key(op_key))
        say.line(f"the operator imports the bench's {len(got)} sealed key records into its registry "
                 "(`homebox bench export-escrow` then `homebox ops keys import`)")

        def box_key(serial: str) -> bytes:
            return registry.hmac_key(serial, credentials.load_operator_key(op_key))

        say.step(f"The boxes run the real agent under MicroPython and publish; watching for {args.duration:g} s")
        push_at = time.time() + min(15.0, args.duration / 3)
        end = time.time() + args.duration
        pushed = False
        parental = json.loads((EXAMPLES / "desired-parental.json").read_text())
        options = json.loads((EXAMPLES / "desired-options.json").read_text())
        options["bouquets"] = []                       # the boxes carry the free TNT lineup only
        serial_home = {r["serial"]: vslots[int(r["slot"]) - 1].config["scenario"] for r in passed}
        say.step("The operator sets each home's plan (options: speed tier, signed)")
        for r in passed:
            plan = dict(options, speed_tier=LINES[serial_home[r["serial"]]][0])
            plan.pop("consent", None)
            say.line(f"options (plan {plan['speed_tier']}) -> {r['serial']}: "
                     + _push("options", plan, r["serial"], url, box_key(r["serial"]), db))
        options.setdefault("consent", {})["detailed_consumption"] = True
        try:
            extended = False
            while True:
                rows = status.fleet(store, interval=30)
                if time.time() >= end:
                    # Speed against the plan for every box: a box that tested before its
                    # plan arrived tests again the next sim day (43 s); wait for it, a little.
                    if all(r["speed_ratio"] is not None for r in rows) or time.time() >= end + SPEED_WAIT_S:
                        break
                    if not extended:
                        extended = True
                        say.line(f"waiting up to {SPEED_WAIT_S} s more for every box's speed test against its plan")
                if not pushed and time.time() >= push_at:
                    pushed = True
                    say.step("The operator pushes a parental schedule and an option change (signed)")
                    for r in passed:
                        say.line(f"parental -> {r['serial']}: " + _push("parental", parental, r["serial"], url,
                                                                        box_key(r["serial"]), db))
                    leak_box = next((s for s, h in names.items() if h == dict(HOMES)["leaking_tap"]), None)
                    if leak_box:
                        options["speed_tier"] = LINES["leaking_tap"][0]
                        say.line(f"options (consent to detailed consumption) -> {leak_box}: "
                                 + _push("options", options, leak_box, url, box_key(leak_box), db))
                    say.step("A new TV lineup for every box, as a campaign: a canary box first, then the rest")
                    lineup = json.loads((EXAMPLES / "desired-channels.json").read_text())
                    for ln in _campaign("channels", lineup, [r["serial"] for r in passed], url, box_key, db):
                        say.line(ln)
                    say.step("Still watching")
                if extended:
                    time.sleep(1.0)
                    continue
                say.line(f"[{time.strftime('%H:%M:%S')}] " + _plain_fleet(rows, names))
                if live:
                    from rich.console import Console
                    Console().print(_fleet_table(rows, names))
                time.sleep(min(10.0, max(0.0, end - time.time())))
        except KeyboardInterrupt:
            say.line("Ctrl-C: writing the report now")

        say.step("Writing the report (plots, HTML, labels)")
        index = report.write_report(store, work / "report", interval=30)
        _add_labels(index, [(r["serial"], r["label"]) for r in passed if r.get("label")])
        rows = status.fleet(store, interval=30)
        for r in rows:
            alarms = "; ".join(f"{a['code']} ({a['detail']})" for a in r["alarms"]) or "no alarm"
            say.line(f"{r['box']} ({names.get(r['box'], '?')}): {_speed(r)}; {alarms}")
        totals = dict(ingest.totals)
        say.line(f"ingest: {totals['stored']} messages stored, {totals['invalid']} outside the contract")

        say.step("A home network: the box's DNS enforces the parental hours, and it serves the TV playlist")
        from homebox import demo_home
        home_key = credentials.generate("HB-HOME-NET").hmac_key      # that box's own key, as the bench makes it
        if not demo_home.run(say, url, bytes.fromhex(home_key), lambda s, d, b: _push(s, d, b, url, bytes.fromhex(home_key), db),
                             work / "home-net"):
            rc = 1
        print(f"\nReport: {index}")
        _console(say, db, args.console_for)
        if totals["invalid"] or len(passed) < len(HOMES):
            rc = 1
    except BenchError as e:
        print(f"FAIL: {e}")
        rc = 1
    except KeyboardInterrupt:
        print("\nstopped (Ctrl-C)")
        rc = 130
    finally:
        print("Stopping everything this demo started ...", flush=True)
        if vslots:
            slots.stop_virtual(vslots)
        if ingest is not None:
            ingest.stop()
            if ingest_thread is not None:
                ingest_thread.join(10)
        if broker is not None:
            broker.stop()
        for srv in lines:
            srv.shutdown()
            srv.server_close()
        print("done: nothing left running.")
    return rc
