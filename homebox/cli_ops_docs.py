"""`homebox ops validate` and `homebox ops push`: desired documents for one box.

The rules are the box's own (the package agent/rules, imported on
CPython), so a document that validates here is judged the same way on the box.

`push` records each document it publishes in the backend store (`--db`, the
same store as `ops ingest|status|reconcile`) before publishing it, so that
`reconcile` can re-publish it after a broker loses its retained messages and
`status` can compare what the operator wants with what the box reports.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from backend.push import SECTIONS
from common import credentials
from homebox.cli_ops_fleet import DB_HELP

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
    p.add_argument("--registry", type=Path, default=None,
                   help="the key registry (default: $HOMEBOX_REGISTRY): the document is signed with the box's own key")
    p.add_argument("--operator-key", type=Path, default=None,
                   help="the operator's private key, which opens the registry (default: $HOMEBOX_OPERATOR_KEY)")
    p.add_argument("--master-secret-file", type=Path, default=None,
                   help=f"legacy: boxes keyed from a master secret (default: ${ENV_SECRET}); "
                        "with neither, the document goes unsigned")
    p.add_argument("--no-check", action="store_true", help="publish even if the local check fails")
    p.add_argument("--db", default=None, help=DB_HELP + "; the pushed document is recorded there")
    p.add_argument("--no-record", action="store_true",
                   help="do not record the document in the store (reconcile will not re-publish it)")
    p.add_argument("--author", default=None,
                   help="recorded with the document in the history (default $HOMEBOX_AUTHOR or $USER)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_push)


# ---- commands ------------------------------------------------------------------

def cmd_validate(args) -> int:
    from backend.push import violations
    doc = _load(args.file)
    ctx = None
    if args.channels:
        ctx = {"channels": _load(args.channels)}
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
    from backend import push
    from backend.errors import BrokerError, BrokerTimeout, DocumentInvalid
    from common.broker import parse_broker
    try:
        url = parse_broker(args.broker)
    except ValueError as e:
        raise SystemExit(f"--broker: {e}") from None
    doc = _load(args.file)
    if not args.no_check:
        try:
            push.check(args.section, doc)
        except DocumentInvalid as e:
            for f, r in e.violations:
                print(f"{f}: {r}", file=sys.stderr)
            print(f"not pushed: {len(e.violations)} violation(s) (use --no-check to let the box decide)",
                  file=sys.stderr)
            return 1
    from homebox.cli_ops_keys import push_key
    key = push_key(args, args.box)
    master = None
    if key is None:
        try:
            master = credentials.load_master(args.master_secret_file)
        except credentials.MasterSecretError as e:
            raise SystemExit(str(e)) from None
    if key is None and master is None:
        print(f"warning: no key (--registry with --operator-key, or --master-secret-file / ${ENV_SECRET}): "
              "pushing unsigned; a box with a key will refuse it", file=sys.stderr)

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
        r = push.push(url, args.box, args.section, doc, master, store=store, tls_ca=args.tls_ca,
                      timeout=args.timeout, validate=False, author=args.author, key=key)
    except BrokerError as e:
        say("timeout" if isinstance(e, BrokerTimeout) else "error", str(e), None)
        return 2
    finally:
        if store is not None:
            store.close()
    say(r.status, r.message, r.version)
    return {"applied": 0, "rejected": 1}.get(r.status, 2)


def _load(path: Path):
    from backend.errors import DocumentError
    from backend.push import load_doc
    try:
        return load_doc(path)
    except DocumentError as e:
        raise SystemExit(str(e)) from None
