"""`homebox bench ...`: the bench station (library: flashing/).

    homebox bench run --broker HOST:PORT [--port P,...|--virtual N] [--slot N]
    homebox bench history (--serial S | --mac M)
    homebox bench slots
    homebox bench export-broker FILE
    homebox bench export-escrow FILE      # sealed per-box secrets, for `homebox ops keys import`
    homebox bench purge-labels [--older-than-days N]   # labels carry the tenants' Wi-Fi keys
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ENV_LEDGER = "HOMEBOX_LEDGER"


def register(sub) -> None:
    p = sub.add_parser("run", help="flash, provision, test and label every box on the hub")
    p.add_argument("--broker", required=True,
                   help="the bench broker, HOST:PORT or mqtts://HOST:PORT (TLS): the boxes' self-tests send to it "
                        "with their own credentials; the boxes keep the production broker of --box-config")
    p.add_argument("--bench-broker-passwd", type=Path, default=None, metavar="FILE",
                   help="the bench broker's Mosquitto password file, when it checks passwords: each box's "
                        "new hash is written there for its self-test (with --bench-broker-pid: then a reload)")
    p.add_argument("--bench-broker-pid", default=None, metavar="PID|FILE",
                   help="the bench broker's pid (or pid file), signalled to reload its password file")
    p.add_argument("--broker-ca", default=None, metavar="FILE",
                   help="CA certificate of an mqtts:// bench broker (the bench's own subscriber)")
    p.add_argument("--broker-user", default=None,
                   help="bench account that reads the boxes' telemetry (password: $HOMEBOX_BENCH_BROKER_PASSWORD)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--port", action="append", default=None, metavar="PORTS",
                     help="serial ports or rfc2217:// URLs, comma-separated, in slot order (default: every "
                          "USB serial port under /dev/serial/by-path)")
    src.add_argument("--virtual", type=int, default=0, metavar="N", help="start N virtual boxes and use them")
    p.add_argument("--slot", action="append", default=None, metavar="N",
                   help="only these slots (e.g. --slot 3 to run slot 3 again)")
    p.add_argument("--operator-pubkey", type=Path, default=None,
                   help="the operator's public key (default: $HOMEBOX_OPERATOR_PUBKEY); required for real boxes. "
                        "Each box's secrets are generated here and sealed to it: the bench keeps none")
    p.add_argument("--base-bin", type=Path, default=None, help="the pinned MicroPython ESP32_GENERIC .bin")
    p.add_argument("--lock", type=Path, default=None, help="base firmware lock (default firmware/base-firmware.lock.json)")
    p.add_argument("--agent-dir", type=Path, default=None, help=argparse_suppress())
    p.add_argument("--out", type=Path, default=Path("bench-out"), help="labels, reports and logs (default bench-out/)")
    p.add_argument("--ledger", type=Path, default=None,
                   help=f"the SQLite ledger (default ${ENV_LEDGER}, else OUT/ledger.sqlite); benches may share it")
    p.add_argument("--slots-file", type=Path, default=Path("bench-slots.json"),
                   help="slot numbers of the hub's USB locations (default bench-slots.json)")
    _usb_id_option(p)
    p.add_argument("--box-config", type=Path, default=None,
                   help="JSON of extra config.json keys for every box: the production broker goes there "
                        "(broker_host, broker_port, tls)")
    p.add_argument("--box-ca", type=Path, default=None, metavar="FILE",
                   help="CA certificate (PEM) the boxes trust for TLS: written to /ca.pem on each box (tls_ca)")
    p.add_argument("--support", default=None, help="support contact printed on the label")
    p.add_argument("--operator", default="homebox", help="operator name printed on the label")
    p.add_argument("--prefix", default="HB", help="serial number prefix (default HB)")
    p.add_argument("--baud", type=int, default=921600, help="flashing baud rate (default 921600)")
    p.add_argument("--station", default=None, help="this bench's name (default: the host name)")
    p.add_argument("--technician", default=None, help="who runs the bench (default: the login name)")
    p.add_argument("--vbox-baud-limit", action="store_true", help="virtual boxes: throttle links to the baud rate")
    p.add_argument("--vbox-heap", default="128k",
                   help="virtual boxes: MicroPython heap (default 128k; TLS on the unix port needs ~256k, its "
                        "mbedTLS buffers are on the heap where an ESP32 has them in the IDF heap)")
    p.add_argument("--test-timeout", type=float, default=300, help="seconds for one box's acceptance tests")
    p.add_argument("--plain", action="store_true", help="one line per event instead of the live table")
    p.add_argument("--json", action="store_true", help="print the run report as JSON (no live view)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("history", help="the record of one box")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--serial")
    g.add_argument("--mac")
    p.add_argument("--ledger", type=Path, default=None)
    p.add_argument("--out", type=Path, default=Path("bench-out"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("slots", help="the USB serial ports on this bench, by slot number")
    p.add_argument("--slots-file", type=Path, default=Path("bench-slots.json"))
    _usb_id_option(p)
    p.set_defaults(func=cmd_slots)

    p = sub.add_parser("purge-labels", help="delete printed labels (they carry the tenants' Wi-Fi keys)")
    p.add_argument("--older-than-days", type=float, default=1.0,
                   help="only labels older than this (default 1 day; 0: all)")
    p.add_argument("--out", type=Path, default=Path("bench-out"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_purge_labels)
    p = sub.add_parser("export-escrow", help="the boxes' sealed secrets, for `homebox ops keys import`")
    p.add_argument("file", type=Path, help="JSON list of escrow records (or - for stdout)")
    p.add_argument("--ledger", type=Path, default=None)
    p.add_argument("--out", type=Path, default=Path("bench-out"))
    p.set_defaults(func=cmd_export_escrow)
    p = sub.add_parser("export-broker", help="the boxes' broker password hashes, for `homebox ops broker-config`")
    p.add_argument("file", type=Path, help="JSON {serial: {mqtt_hash: $7$...}} (or - for stdout)")
    p.add_argument("--ledger", type=Path, default=None)
    p.add_argument("--out", type=Path, default=Path("bench-out"))
    p.set_defaults(func=cmd_export)


def argparse_suppress():
    # development only: build the agent from another directory (a frozen copy)
    import argparse
    return argparse.SUPPRESS


def ledger_path(args) -> Path:
    if args.ledger:
        return args.ledger
    if os.environ.get(ENV_LEDGER):
        return Path(os.environ[ENV_LEDGER])
    return args.out / "ledger.sqlite"


def _usb_id_option(p) -> None:
    p.add_argument("--usb-id", action="append", default=[], metavar="VID:PID",
                   help="also take ports of this USB bridge (hex, as lsusb shows; repeatable); "
                        "CP210x, CH340/CH9102/CH343, FTDI and Espressif's own are known")


def _err(msg: str) -> int:
    print(f"bench: {msg}", file=sys.stderr)
    return 2


# --- run ------------------------------------------------------------------------

def cmd_run(args) -> int:
    from common import credentials
    from flashing import image, slots, station
    from flashing.errors import SetupError

    say = (lambda m: print(m, file=sys.stderr)) if args.json else print
    args.out = args.out.resolve()
    from common.broker import parse_broker
    try:
        if ("://" not in args.broker and ":" not in args.broker) or \
                ("://" in args.broker and args.broker.split("://")[0].lower() not in ("mqtt", "mqtts")):
            raise ValueError
        parse_broker(args.broker)
    except ValueError:
        return _err(f"--broker must be HOST:PORT or mqtts://HOST:PORT, not {args.broker!r}")
    vslots: list = []
    try:
        pub = credentials.load_operator_pub(args.operator_pubkey)
        source = "file"
        if pub is None:
            if not args.virtual:
                return _err("a bench run needs the operator's public key: give --operator-pubkey FILE "
                            f"or set {credentials.ENV_OPERATOR_PUB}. Ask your operator for operator.pub.")
            pub, source = credentials.new_operator_key()[1], "throwaway"
            say("note: no operator public key given: these virtual boxes' secrets are sealed to a "
                "throwaway key (no one can open them later)")
        fw = image.load_firmware(args.base_bin, args.lock, virtual=bool(args.virtual), agent_dir=args.agent_dir)
        box_config = json.loads(args.box_config.read_text()) if args.box_config else {}
        box_ca = args.box_ca.read_bytes() if args.box_ca else None
        wanted = [int(x) for s in (args.slot or []) for x in s.split(",") if x.strip()]
        if args.virtual:
            # a named sim home in --box-config is the home the emulated boards live in
            home = box_config.get("scenario")
            vslots = slots.start_virtual(args.virtual, args.out / "vbox", baud_limit=args.vbox_baud_limit,
                                         heap=args.vbox_heap, home=home if isinstance(home, str) else None)
            found = vslots
        elif args.port:
            found = slots.explicit(args.port)
        else:
            found = slots.discover(args.slots_file, extra_ids=slots.parse_ids(args.usb_id))
            if not found:
                return _err("no box found: no ESP32 USB-serial bridge under /dev/serial/by-path. Plug the hub "
                            "in (or give --port, or --usb-id for another bridge chip).")
        chosen = slots.select(found, wanted)
        cfg = station.Config(out_dir=args.out, ledger=ledger_path(args), operator_pub=pub, key_source=source,
                             firmware=fw, broker=args.broker, broker_user=args.broker_user, broker_ca=args.broker_ca,
                             bench_passwd=args.bench_broker_passwd, bench_pid=args.bench_broker_pid,
                             box_ca=box_ca, prefix=args.prefix,
                             baud=args.baud, support=args.support, operator=args.operator, box_config=box_config,
                             test_timeout=args.test_timeout)
        if args.station:
            cfg.station = args.station
        if args.technician:
            cfg.technician = args.technician
        view = None if args.json else (PlainView() if args.plain or not sys.stdout.isatty() else LiveView(chosen))
        try:
            report = station.Station(cfg).run(chosen, view.event if view else None)
        finally:
            if view:
                view.close()
    except (SetupError, credentials.MasterSecretError) as e:
        return _err(str(e))
    except (OSError, ValueError) as e:
        return _err(str(e))
    finally:
        slots.stop_virtual(vslots)
    if args.json:
        print(json.dumps(report, indent=1, sort_keys=True))
    else:
        print_summary(report, args)
    return 0 if report["summary"]["pass"] == report["summary"]["total"] else 1


STEP_NAMES = {"connect": "connecting", "identify": "reading chip", "allocate": "serial number",
              "credentials": "credentials", "image": "building image", "flash": "flashing",
              "reset": "rebooting", "test": "testing", "label": "printing label", "record": "recording"}


class PlainView:
    """One line per event: for logs, CI and non-terminal output."""

    def __init__(self, out=None):
        self.out = out or sys.stdout
        self.t0 = time.monotonic()

    def event(self, ev: dict) -> None:
        t = f"{time.monotonic() - self.t0:6.1f}s"
        kind = ev["event"]
        if kind == "start":
            print(f"{t}  bench run {ev['run_id']}: {len(ev['slots'])} slot(s)", file=self.out, flush=True)
        elif kind == "step" and ev["step"] != "record":
            print(f"{t}  slot {ev['slot']:>2}  [{ev['n']:>2}/10] {STEP_NAMES[ev['step']]}", file=self.out, flush=True)
        elif kind == "serial":
            print(f"{t}  slot {ev['slot']:>2}  serial {ev['serial']} (MAC {ev['mac']})", file=self.out, flush=True)
        elif kind == "result":
            r = ev["result"]
            f = r.get("failure")
            why = f"  {f['kind']}: {f['detail']}" if f else ""
            print(f"{t}  slot {ev['slot']:>2}  {r['verdict']}{why}", file=self.out, flush=True)

    def close(self) -> None:
        pass


class LiveView:
    """The rich live table: one row per slot with its step, a progress bar and the verdict."""

    def __init__(self, slots):
        from rich.console import Console
        from rich.live import Live
        self.console = Console()
        self.rows = {s.name: {"port": s.location or s.port, "serial": "", "step": "waiting", "n": 0,
                              "frac": 0.0, "verdict": "", "why": ""} for s in slots}
        self.t0 = time.monotonic()
        # started on the first event, once the slot processes exist: no
        # refresh thread is running when the station forks them
        self.live = Live(self._table(), console=self.console, refresh_per_second=8, transient=False)
        self.started = False

    def _table(self):
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        t = Table(title=f"homebox bench  {time.monotonic() - self.t0:5.0f} s", expand=False)
        for col in ("slot", "port", "serial", "step", "progress", "verdict"):
            t.add_column(col)
        for name, r in self.rows.items():
            total = 10
            done = r["n"] - 1 + (r["frac"] if r["step"] == "flashing" else 0)
            if r["verdict"]:
                done = total
            bar = ProgressBar(total=total, completed=max(done, 0), width=20)
            style = {"PASS": "bold green", "FAIL": "bold red", "QUARANTINE": "bold yellow"}.get(r["verdict"], "")
            verdict = f"[{style}]{r['verdict']}[/]" + (f" {r['why']}" if r["why"] else "") if r["verdict"] else ""
            step = r["step"] + (f" {int(r['frac'] * 100)}%" if r["step"] == "flashing" else "")
            t.add_row(name, r["port"][-32:], r["serial"], step, bar, verdict)
        return t

    def event(self, ev: dict) -> None:
        if not self.started:
            self.started = True
            self.t0 = time.monotonic()
            self.live.start()
        r = self.rows.get(str(ev.get("slot")))
        kind = ev["event"]
        if r is not None:
            if kind == "step":
                r["step"], r["n"], r["frac"] = STEP_NAMES[ev["step"]], ev["n"], 0.0
            elif kind == "progress":
                r["frac"] = ev["fraction"]
            elif kind == "serial":
                r["serial"] = ev["serial"]
            elif kind == "result":
                res = ev["result"]
                r["verdict"] = res["verdict"]
                r["step"] = "done"
                f = res.get("failure")
                r["why"] = f["kind"] if f else ""
        self.live.update(self._table())

    def close(self) -> None:
        if self.started:
            self.live.update(self._table())
            self.live.stop()


def print_summary(report: dict, args) -> None:
    s = report["summary"]
    print()
    for r in report["boxes"]:
        serial = r.get("serial") or "-"
        line = f"{r['verdict']:<10} slot {r['slot']:>2}  {serial:<10}  {r.get('mac') or '-':<17}"
        if r["verdict"] == "PASS":
            line += f"  label {r['label']['pdf']}" if r.get("label") else ""
            print(line)
            continue
        f = r.get("failure") or {}
        print(line + f"  {f.get('kind', '?')}: {f.get('detail', '')}")
        print(f"{'':<10} what to do: {f.get('advice', '')}")
    print()
    print(f"{s['total']} box(es): {s['pass']} PASS, {s['fail']} FAIL, {s['quarantine']} QUARANTINE "
          f"in {report['seconds']:.0f} s ({s['boxes_per_hour']:.0f} boxes/hour)")
    redo = [r["slot"] for r in report["boxes"] if r["verdict"] == "FAIL"]
    if redo:
        print("run the failed slot(s) again with:\n  " + rerun_command(redo))
    print(f"report: {report['report_file']}")


def rerun_command(slots: list[str], argv: list[str] | None = None) -> str:
    """This command line again, for the given slots only."""
    import shlex
    argv = list(sys.argv[1:] if argv is None else argv)
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--slot":
            skip = True
            continue
        if a.startswith("--slot=") or a in ("--json", "--plain"):
            continue
        out.append(a)
    return " ".join(shlex.quote(a) for a in ["homebox"] + out + ["--slot", ",".join(slots)])


# --- history, slots, export -------------------------------------------------------

def cmd_history(args) -> int:
    from flashing.errors import LedgerError
    from flashing.ledger import Ledger
    path = ledger_path(args)
    if not path.exists():
        return _err(f"no ledger at {path}")
    try:
        with Ledger(path) as led:
            h = led.history(serial=args.serial, mac=args.mac)
    except LedgerError as e:
        return _err(str(e))
    if h is None:
        return _err(f"no box {args.serial or args.mac} in {path}")
    if args.json:
        print(json.dumps(h, indent=1, sort_keys=True))
        return 0
    b = h["box"]
    print(f"{b['serial'] or '(no serial)'}  MAC {b['mac']}  {b['chip']}  flash {b['flash_size']} (ID {b['flash_id']})")
    print(f"  Wi-Fi {b['wifi_ssid']}  broker hash {'recorded' if b['mqtt_hash'] else 'none'}  last verdict {b['verdict']}")
    for a in h["attempts"]:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(a["started_at"]))
        f = a["failure"] or {}
        print(f"  {when}  run {a['run_id']}  {a['station']} slot {a['slot']}  by {a['technician']}  {a['verdict']}"
              + (f"  {f.get('kind')}: {f.get('detail')}" if f else ""))
        imgs = a.get("images") or {}
        for name in ("base", "vfs"):
            if name in imgs:
                print(f"      {name:<5} {imgs[name]['offset']:#08x}  sha256 {imgs[name]['sha256']}")
        for s in a["steps"] or []:
            n = s.get("retries") or 0
            retries = f" ({n} {'retry' if n == 1 else 'retries'})" if n else ""
            print(f"      [{s['n']:>2}] {s['step']:<12} {s['status']:<7} {s.get('seconds', 0):6.2f} s{retries}  {s.get('detail') or ''}")
        for c in a.get("checks") or []:
            print(f"      check {c['name']:<13} {c['status']:<5} {c.get('detail') or ''}")
    return 0


def cmd_slots(args) -> int:
    from flashing import slots
    from flashing.errors import SetupError
    try:
        found = slots.discover(args.slots_file, extra_ids=slots.parse_ids(args.usb_id))
    except SetupError as e:
        print(f"FAIL: {e}")
        return 2
    if not found:
        print("no ESP32 USB-serial bridge under /dev/serial/by-path (another chip? add --usb-id VID:PID)")
        return 1
    for s in found:
        print(f"slot {s.number:>2}  {s.location}")
    print(f"(numbers kept in {args.slots_file})")
    return 0


def cmd_purge_labels(args) -> int:
    d = args.out / "labels"
    cutoff = time.time() - args.older_than_days * 86400
    gone = []
    for p in sorted(d.glob("*")) if d.is_dir() else []:
        if p.suffix in (".png", ".pdf") and p.stat().st_mtime <= cutoff:
            p.unlink()
            gone.append(p.name)
    if args.json:
        print(json.dumps({"deleted": gone}))
    else:
        print(f"{len(gone)} label file(s) deleted from {d}")
    return 0


def cmd_export_escrow(args) -> int:
    from flashing.ledger import Ledger
    path = ledger_path(args)
    if not path.exists():
        return _err(f"no ledger at {path}")
    with Ledger(path) as led:
        recs = led.escrow_records()
    data = json.dumps(recs, indent=1, sort_keys=True) + "\n"
    if str(args.file) == "-":
        sys.stdout.write(data)
    else:
        args.file.write_text(data)
        print(f"{args.file}: {len(recs)} sealed records (only the operator's key opens them); "
              f"on the operator side: homebox ops keys import {args.file}")
    return 0


def cmd_export(args) -> int:
    from flashing.ledger import Ledger
    path = ledger_path(args)
    if not path.exists():
        return _err(f"no ledger at {path}")
    with Ledger(path) as led:
        data = json.dumps(led.broker_credentials(), indent=1, sort_keys=True) + "\n"
    if str(args.file) == "-":
        sys.stdout.write(data)
    else:
        args.file.write_text(data)
        print(f"{args.file}: broker password hashes; use with: homebox ops broker-config --boxes {args.file} --out DIR")
    return 0
