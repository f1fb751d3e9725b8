"""`homebox ops validate` and `homebox ops push`: desired documents for one box.

The rules are the box's own (agent/sections.py and agent/sec_*.py, imported on
CPython), so a document that validates here is judged the same way on the box.

`push` records each document it publishes in the backend store (`--db`, the
same store as `ops ingest|status|reconcile`) before publishing it, so that
`reconcile` can re-publish it after a broker loses its retained messages and
`status` can compare what the operator wants with what the box reports.
"""
from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from pathlib import Path

from agent import sections, sign, topics
from common import credentials
from homebox.cli_ops_fleet import DB_HELP

SECTIONS = sorted(sections.VALIDATORS)
ENV_SECRET = credentials.ENV_SECRET


def register(sub) -> None:
    p = sub.add_parser("validate", help="check a desired document with the box's own rules")
    p.add_argument("section", choices=SECTIONS)
    p.add_argument("file", type=Path)
    p.add_argument("--channels", type=Path, default=None,
                   help="a channels document to check option bouquets against (default: not checked)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("push", help="sign and publish a desired document to one box, wait for its report")
    p.add_argument("section", choices=SECTIONS)
    p.add_argument("file", type=Path)
    p.add_argument("--box", required=True, help="box id")
    p.add_argument("--broker", default="127.0.0.1:1883",
                   help="MQTT broker HOST:PORT, or mqtt://[user@]host:port / mqtts://... "
                        "(the push account; password: $HOMEBOX_MQTT_PASSWORD)")
    p.add_argument("--tls-ca", default=None, help="CA file for mqtts://")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the box's report")
    p.add_argument("--master-secret-file", type=Path, default=None,
                   help=f"operator master secret (default: ${ENV_SECRET}); without one the document goes unsigned")
    p.add_argument("--no-check", action="store_true", help="publish even if the local check fails")
    p.add_argument("--db", default=None, help=DB_HELP + "; the pushed document is recorded there")
    p.add_argument("--no-record", action="store_true",
                   help="do not record the document in the store (reconcile will not re-publish it)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_push)


# ---- library -------------------------------------------------------------------

def load_doc(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise SystemExit(f"cannot read {path}: {e.strerror}") from None
    except ValueError as e:
        raise SystemExit(f"{path}: not valid JSON ({e})") from None
    return doc


def violations(section: str, doc, ctx: dict | None = None) -> list[tuple[str, str]]:
    if not isinstance(doc, dict):
        return [("$", "must be a JSON object")]
    return sections.errors(section, doc, ctx)


def prepare(doc: dict, box_id: str, version: int, master: bytes | None) -> dict:
    d = {k: v for k, v in doc.items() if k != "sig"}
    d["version"] = version
    d["box"] = box_id
    if master is not None:
        d["sig"] = sign.sign(d, credentials.box_key(master, box_id))
    return d


class Session:
    """One MQTT connection that reads the retained desired/reported documents of
    a section, publishes a new desired document and waits for the report."""

    def __init__(self, url, box: str, section: str, tls_ca: str | None = None):
        import paho.mqtt.client as mqtt

        from backend.ingest import make_client
        self.box, self.section = box, section
        self.t_desired = topics.desired(box, section)
        self.t_reported = topics.reported(box, section)
        self.t_probe = f"homebox-ops/probe/{uuid.uuid4().hex}"
        self.desired: dict | None = None
        self.reported: dict | None = None
        self.cond = threading.Condition()
        self.probed = False
        self.refused: str | None = None
        # a unique client id (a broker with use_username_as_clientid replaces it)
        self.c = make_client(url, f"homebox-ops-{uuid.uuid4().hex[:12]}", tls_ca, protocol=mqtt.MQTTv311)
        self.c.on_message = self._on_message
        self.c.on_connect = self._on_connect
        self.c.connect(url.host, url.port)
        self.c.loop_start()
        self.c.subscribe([(self.t_desired, 1), (self.t_reported, 1), (self.t_probe, 1)])
        # The broker sends retained messages right after the SUBACK; a probe
        # published after that comes back after them, so when it arrives we
        # have seen whatever was retained.
        self.c.publish(self.t_probe, b"probe", qos=1)

    def _on_connect(self, client, userdata, flags, rc, props=None):
        if rc.is_failure:
            with self.cond:
                self.refused = str(rc)
                self.cond.notify_all()

    def _on_message(self, client, userdata, msg):
        with self.cond:
            if msg.topic == self.t_probe:
                self.probed = True
            else:
                try:
                    doc = json.loads(msg.payload)
                except ValueError:
                    doc = None
                if isinstance(doc, dict):
                    if msg.topic == self.t_desired:
                        self.desired = doc
                    else:
                        self.reported = doc
            self.cond.notify_all()

    def wait(self, pred, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(pred, timeout)

    def next_version(self) -> int:
        vs = [0]
        for d in (self.desired, self.reported):
            if d:
                vs.append(_int(d.get("version")))
        if self.reported:
            for k in ("rejected", "ignored"):
                if isinstance(self.reported.get(k), dict):
                    vs.append(_int(self.reported[k].get("version")))
        return max(vs) + 1

    def publish(self, payload: bytes) -> None:
        info = self.c.publish(self.t_desired, payload, qos=1, retain=True)
        info.wait_for_publish(10)

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def _int(v) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def outcome(rep: dict | None, version: int) -> tuple[str, str] | None:
    """('applied'|'rejected', text) once the reported document speaks of `version`."""
    if not rep:
        return None
    if rep.get("status") == "applied" and rep.get("version") == version:
        return "applied", f"applied v{version}"
    rj = rep.get("rejected")
    if rep.get("status") == "rejected" and isinstance(rj, dict) and rj.get("version") == version:
        return "rejected", f"rejected: {rj.get('field')}: {rj.get('reason')}"
    ig = rep.get("ignored")
    if isinstance(ig, dict) and ig.get("version") == version and rep.get("version", 0) >= version:
        return "rejected", f"rejected: version: {ig.get('reason')}"
    return None


# ---- commands ------------------------------------------------------------------

def cmd_validate(args) -> int:
    doc = load_doc(args.file)
    ctx = None
    if args.channels:
        ctx = {"channels": load_doc(args.channels)}
    errs = violations(args.section, doc, ctx)
    if args.json:
        print(json.dumps({"valid": not errs, "section": args.section,
                          "violations": [{"field": f, "rule": r} for f, r in errs]}))
    elif errs:
        for f, r in errs:
            print(f"{f}: {r}")
        print(f"{args.file}: {len(errs)} violation(s) of the {args.section} rules", file=sys.stderr)
    else:
        print(f"{args.file}: valid {args.section} document")
    return 1 if errs else 0


def cmd_push(args) -> int:
    from common.broker import parse_broker
    try:
        url = parse_broker(args.broker)
    except ValueError as e:
        raise SystemExit(f"--broker: {e}") from None
    doc = load_doc(args.file)
    if not args.no_check:
        errs = violations(args.section, dict(doc, version=1) if isinstance(doc, dict) else doc)
        if errs:
            for f, r in errs:
                print(f"{f}: {r}", file=sys.stderr)
            print(f"not pushed: {len(errs)} violation(s) (use --no-check to let the box decide)",
                  file=sys.stderr)
            return 1
    try:
        master = credentials.load_master(args.master_secret_file)
    except credentials.MasterSecretError as e:
        raise SystemExit(str(e)) from None
    if master is None:
        print(f"warning: no master secret (--master-secret-file or ${ENV_SECRET}): pushing unsigned; "
              "a box with a key will refuse it", file=sys.stderr)

    def say(result: str, text: str, version: int | None) -> None:
        if args.json:
            print(json.dumps({"result": result, "version": version, "box": args.box,
                              "section": args.section, "message": text}))
        else:
            print(text)

    store = None
    if not args.no_record:
        from homebox.cli_ops_fleet import _store
        store = _store(args)
    try:
        s = Session(url, args.box, args.section, args.tls_ca)
    except OSError as e:
        say("error", f"cannot connect to {url.host}:{url.port}: {e}", None)
        if store is not None:
            store.close()
        return 2
    try:
        if not s.wait(lambda: s.probed or s.refused, min(args.timeout, 10)) or s.refused:
            if s.refused:
                say("error", f"the broker refused the connection: {s.refused}", None)
            else:
                say("timeout", "timeout: the broker did not answer", None)
            return 2
        version = s.next_version()
        if store is not None:
            # the store may know a later version than the broker still retains
            version = max(version, store.desired_version(args.box, args.section) + 1)
        d = prepare(doc, args.box, version, master)
        payload = json.dumps(d, separators=(",", ":")).encode()
        if store is not None:
            # recorded first: a document on the broker is always one the store knows
            store.put_desired(args.box, args.section, payload, source="push")
        s.publish(payload)
        res: list = []
        deadline = time.time() + args.timeout

        def done():
            o = outcome(s.reported, version)
            if o:
                res.append(o)
            return bool(o)

        if not s.wait(done, max(0.0, deadline - time.time())):
            say("timeout", f"timeout: no report from {args.box} for v{version} after {args.timeout:g} s "
                "(the document stays retained; the box applies it when it connects)", version)
            return 2
        result, text = res[-1]
        say(result, text, version)
        return 0 if result == "applied" else 1
    finally:
        s.close()
        if store is not None:
            store.close()
