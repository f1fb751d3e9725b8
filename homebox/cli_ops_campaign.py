"""`homebox ops campaign create|start|pause|resume|abort|status|list|tag`, `ops history`
and `ops rollback`: thin callers of backend.campaign and backend.history.

    homebox ops campaign create options lineup.json --tag tower-B --canary 0.1 --name lineup-b
    homebox ops campaign start lineup-b --broker mqtt://homebox-push@h:8883   # drives it
    homebox ops campaign status lineup-b --json

`start` and `resume` drive the campaign in the foreground until it completes, pauses
or aborts (exit 0, 3, 1); `pause` and `abort` from another shell stop it. A driver
that was killed is resumed with `resume` (everything is in the store).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from backend.campaign import SECTIONS as CAMPAIGN_SECTIONS
from backend.push import SECTIONS
from common import credentials
from homebox.cli_ops_common import add_db_json, broker_url, fail, out, with_store

EXIT = {"completed": 0, "aborted": 1, "paused": 3, "running": 4, "created": 4}


def register(sub) -> None:
    p = sub.add_parser("campaign", help="send a document to many boxes in waves (canary, rate, abort)")
    cs = p.add_subparsers(dest="campaign_cmd", metavar="ACTION")
    cs.required = True

    c = cs.add_parser("create", help="record a campaign over a target (nothing is sent yet)")
    c.add_argument("section", choices=CAMPAIGN_SECTIONS,
                   help="a section, or release (an agent release: ops release build|template)")
    c.add_argument("file", type=Path, help="the section document template (JSON; version, box and sig are set per box)")
    t = c.add_mutually_exclusive_group(required=True)
    t.add_argument("--box", action="append", help="a box id (repeat, or comma-separated)")
    t.add_argument("--tag", help="every box with this tag (ops campaign tag)")
    t.add_argument("--plan", help="every box whose options document (in the store) has this speed_tier")
    t.add_argument("--all", action="store_true", help="every box the store knows")
    c.add_argument("--name", default=None, help="campaign id (default: c-DATE-TIME-xxxx)")
    c.add_argument("--canary", type=float, default=0.1, help="share of the boxes in the first wave (default 0.1)")
    c.add_argument("--waves", default="0.3,1.0", help="cumulative shares of the next waves (default 0.3,1.0)")
    c.add_argument("--success", type=float, default=0.9, help="applied share a wave needs before the next (default 0.9)")
    c.add_argument("--abort", type=float, default=0.2, help="abort above this share of failed decided boxes (default 0.2)")
    c.add_argument("--abort-min", type=int, default=None, help="decided boxes before the abort rule applies (default: the canary's size)")
    c.add_argument("--rate", type=float, default=50.0, help="boxes sent per second at most (default 50)")
    c.add_argument("--max-in-flight", type=int, default=200,
                   help="boxes sent and not yet settled at most (a window; default 200)")
    c.add_argument("--box-timeout", type=float, default=60.0, help="seconds an online box has to report (default 60)")
    c.add_argument("--author", default=None, help="recorded with each document (default $HOMEBOX_AUTHOR or $USER)")
    _common(c)
    c.set_defaults(func=cmd_create)

    for name, hlp in (("start", "start a created campaign and drive it"),
                      ("resume", "resume a paused or interrupted campaign and drive it")):
        c = cs.add_parser(name, help=hlp)
        c.add_argument("id")
        c.add_argument("--broker", action="append", default=None,
                       help="mqtt://[user[:password]@]host:port (default 127.0.0.1:1883); on a fleet broker "
                            "mqtts://HOST:BACKEND_PORT with $HOMEBOX_MQTT_CERT=DIR (`ops broker-login --connections N`: "
                            "one connection per certificate), or repeated with ?cert=... one identity each")
        c.add_argument("--connections", type=int, default=2,
                       help="connections to an anonymous broker (with identities: one per identity)")
        c.add_argument("--tls-ca", default=None)
        c.add_argument("--master-secret-file", type=Path, default=None,
                       help=f"operator master secret (default ${credentials.ENV_SECRET})")
        c.add_argument("--no-wait", action="store_true", help="only mark it running (a later resume drives it)")
        c.add_argument("--poll", type=float, default=0.2, help="seconds between looks at the store")
        _common(c)
        c.set_defaults(func=cmd_drive, action=name)

    for name, hlp in (("pause", "stop sending (boxes already sent still settle)"),
                      ("abort", "stop the campaign for good")):
        c = cs.add_parser(name, help=hlp)
        c.add_argument("id")
        c.add_argument("--reason", default=None)
        _common(c)
        c.set_defaults(func=cmd_state, action=name)

    c = cs.add_parser("status", help="a campaign's waves and per-box states")
    c.add_argument("id")
    c.add_argument("--boxes", action="store_true", help="list every box (always in --json)")
    _common(c)
    c.set_defaults(func=cmd_status)

    c = cs.add_parser("list", help="every campaign, with its counts")
    _common(c)
    c.set_defaults(func=cmd_list)

    c = cs.add_parser("tag", help="give boxes a tag (a building, a tower) for --tag targets")
    c.add_argument("tag")
    c.add_argument("boxes", nargs="+")
    c.add_argument("--remove", action="store_true")
    _common(c)
    c.set_defaults(func=cmd_tag)

    p = sub.add_parser("history", help="every desired document sent to a box, with author and campaign")
    p.add_argument("box")
    p.add_argument("--section", choices=SECTIONS, default=None)
    p.add_argument("--payloads", action="store_true", help="show each document")
    _common(p)
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("rollback", help="send a box an earlier document again (as a new version)")
    p.add_argument("box")
    p.add_argument("section", choices=SECTIONS)
    p.add_argument("--to", type=int, required=True, metavar="VERSION", help="the earlier version (ops history)")
    p.add_argument("--broker", default="127.0.0.1:1883")
    p.add_argument("--tls-ca", default=None)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--master-secret-file", type=Path, default=None)
    p.add_argument("--author", default=None)
    _common(p)
    p.set_defaults(func=cmd_rollback)


def _common(p) -> None:
    add_db_json(p, "machine-readable output")


def _store(args):
    from homebox.cli_ops_fleet import _store as open_
    return open_(args)


def _fail(args, e) -> int:
    return fail(args, e, 2)


def _master(path):
    # the box's own keys from the registry ($HOMEBOX_REGISTRY with $HOMEBOX_OPERATOR_KEY:
    # docs/decisions/0013-per-box-secrets.md), else the legacy master secret
    from homebox.cli_ops_keys import signer_from_env
    signer = signer_from_env() if path is None else None
    if signer is not None:
        return signer
    try:
        return credentials.load_master(path)
    except credentials.MasterSecretError as e:
        raise SystemExit(str(e)) from None


def _line(c: dict) -> str:
    n = c.get("counts", {})
    parts = " ".join(f"{k}={v}" for k, v in n.items() if v)
    return f"{c['id']}: {c['state']} ({c['section']}, wave {c['wave'] + 1}/{len(c['waves'])}) {parts}" + \
        (f" - {c['reason']}" if c.get("reason") else "")


def cmd_create(args) -> int:
    from backend import campaign
    from backend.errors import OpsError
    from backend.push import load_doc
    if args.box:
        target: dict = {"boxes": [b for v in args.box for b in v.split(",") if b]}
    elif args.tag:
        target = {"tag": args.tag}
    elif args.plan:
        target = {"plan": args.plan}
    else:
        target = {"all": True}

    def do(store) -> dict:
        doc = load_doc(args.file)
        waves = [float(x) for x in args.waves.split(",") if x.strip()]
        c = campaign.create(store, args.section, doc, target, name=args.name, canary=args.canary, waves=waves,
                            success=args.success, abort=args.abort, abort_min=args.abort_min, rate=args.rate,
                            box_timeout=args.box_timeout, max_in_flight=args.max_in_flight,
                            author=args.author)
        c["counts"] = campaign.counts(store, c["id"])
        return c
    c, rc = with_store(args, do, (OpsError, ValueError), 2)
    if rc is not None:
        return rc
    out(args, c, f"created {_line(c)}; waves end at boxes {c['waves']}")
    return 0


def cmd_drive(args) -> int:
    from backend import campaign
    from backend.errors import OpsError
    from common.broker import parse_broker
    store = _store(args)
    try:
        c = campaign.get(store, args.id)
        c = campaign.start(store, args.id) if args.action == "start" else campaign.resume(store, args.id)
        if args.no_wait or c["state"] != "running":
            c["counts"] = campaign.counts(store, args.id)
            print(json.dumps(c) if args.json else _line(c))
            return EXIT.get(c["state"], 4) if c["state"] != "running" else 0
        urls = [parse_broker(b) for b in (args.broker or ["127.0.0.1:1883"])]
        master = _master(args.master_secret_file)
        if master is None:
            print(f"warning: no master secret (--master-secret-file or ${credentials.ENV_SECRET}): sending "
                  "unsigned; a box with a key will refuse it", file=sys.stderr)
        log = None if args.json else (lambda m: print(m, flush=True))
        st = campaign.run(store, urls, args.id, master, tls_ca=args.tls_ca, poll=args.poll, log=log,
                          connections=args.connections)
    except ValueError as e:
        raise SystemExit(f"--broker: {e}") from None
    except OpsError as e:
        return _fail(args, e)
    finally:
        store.close()
    if args.json:
        print(json.dumps(st))
    else:
        print(_line(st))
    return EXIT.get(st["state"], 4)


def cmd_state(args) -> int:
    from backend import campaign
    from backend.errors import OpsError
    fn = campaign.pause if args.action == "pause" else campaign.abort

    def do(store) -> dict:
        c = fn(store, args.id, args.reason) if args.reason else fn(store, args.id)
        c["counts"] = campaign.counts(store, args.id)
        return c
    c, rc = with_store(args, do, OpsError, 2)
    if rc is not None:
        return rc
    out(args, c, _line(c))
    return 0


def cmd_status(args) -> int:
    from backend import campaign
    from backend.errors import OpsError
    st, rc = with_store(args, lambda store: campaign.status(store, args.id), OpsError, 2)
    if rc is not None:
        return rc
    if args.json:
        print(json.dumps(st))
        return 0
    print(_line(st))
    for w in st["wave_stats"]:
        print(f"  {w['name']:>8}: {w['boxes']} boxes: " +
              " ".join(f"{k}={v}" for k, v in w["counts"].items() if v))
    for b in st["boxes"]:
        if args.boxes or b["state"] in ("rejected", "timed_out"):
            print(f"  {b['box']}: {b['state']}" + (f" v{b['version']}" if b["version"] else "") +
                  (f" - {b['reason']}" if b["reason"] else ""))
    return 0


def cmd_list(args) -> int:
    from backend import campaign
    cs, _ = with_store(args, campaign.list_campaigns)
    if args.json:
        print(json.dumps(cs))
    else:
        for c in cs:
            print(_line(c))
        if not cs:
            print("no campaign")
    return 0


def cmd_tag(args) -> int:
    from backend import campaign
    with_store(args, lambda store: campaign.tag(store, args.boxes, [args.tag], remove=args.remove))
    out(args, {"tag": args.tag, "boxes": args.boxes, "removed": args.remove},
        f"{'untagged' if args.remove else 'tagged'} {len(args.boxes)} box(es) {args.tag}")
    return 0


def cmd_history(args) -> int:
    from backend import history
    docs, _ = with_store(args, lambda store: history.list_docs(store, args.box, args.section))
    if args.json:
        print(json.dumps([dict(d, payload=json.loads(d["payload"])) for d in docs]))
        return 0
    for d in docs:
        print(f"{d['section']} v{d['version']} by {d['author']}" +
              (f" (campaign {d['campaign']})" if d["campaign"] else ""))
        if args.payloads:
            print("  " + d["payload"].decode())
    if not docs:
        print(f"no desired document was sent to {args.box}")
    return 0


def cmd_rollback(args) -> int:
    from backend import rollback
    from backend.errors import OpsError
    url = broker_url(args.broker)
    r, rc = with_store(args, lambda store: rollback.rollback(
        url, store, args.box, args.section, args.to, _master(args.master_secret_file),
        author=args.author, tls_ca=args.tls_ca, timeout=args.timeout), OpsError, 2)
    if rc is not None:
        return rc
    if args.json:
        print(json.dumps({"result": r.status, "version": r.version, "box": r.box, "section": r.section,
                          "rolled_back_to": args.to, "message": r.message}))
    else:
        print(f"{r.message} (the content of v{args.to})")
    return {"applied": 0, "rejected": 1}.get(r.status, 2)
