"""`homebox ops ingest|status|report|reconcile|broker-config`: the operator backend."""
from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

DB_HELP = "store URL: sqlite:///PATH (default from $HOMEBOX_DB, else sqlite:///state/backend.db) or postgresql://..."


def register(sub) -> None:
    p = sub.add_parser("ingest", help="ingest all boxes' telemetry into the store (runs until stopped)")
    p.add_argument("--broker", required=True, help="mqtt://[user@]host:port or mqtts://... (password: $HOMEBOX_MQTT_PASSWORD)")
    p.add_argument("--db", default=None, help=DB_HELP)
    p.add_argument("--share", default=None, metavar="GROUP", help="MQTT 5 shared subscription group: N processes split the load")
    p.add_argument("--client-id", default=None, help="MQTT client id (unique per process; it names the persistent session)")
    p.add_argument("--no-state", dest="state", action="store_false",
                   help="with --share: leave the retained state documents (status, reported, desired) "
                        "to other members (default: every member also consumes them, not shared)")
    p.add_argument("--retention-days", type=float, default=None,
                   help="keep messages this many days (default 400; 0: keep everything); "
                        "PostgreSQL drops whole daily partitions, SQLite deletes rows; run hourly")
    p.add_argument("--batch", type=int, default=500, help="messages per transaction (default 500)")
    p.add_argument("--batch-wait", type=float, default=0.2, help="commit a partial batch after S seconds (default 0.2)")
    p.add_argument("--tls-ca", default=None, help="CA file for mqtts://")
    p.add_argument("--duration", type=float, default=0, help="stop after S seconds (0: run until Ctrl-C/SIGTERM)")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="serve /metrics (Prometheus) and /healthz on this port (0: any free port; default off)")
    p.add_argument("--metrics-host", default="127.0.0.1", help="address of the metrics endpoint (default 127.0.0.1)")
    p.add_argument("--db-wait", type=float, default=60,
                   help="at start, retry opening the database for S seconds (default 60)")
    p.add_argument("--alarm-webhook", default=None, metavar="URL",
                   help="POST alarm raises and clears there (Alertmanager webhook JSON), retried with backoff")
    p.add_argument("--interval", type=float, default=300,
                   help="nominal telemetry interval in seconds (alarm `silent` after 3; default 300)")
    p.add_argument("--grace", type=float, default=7 * 86400,
                   help="alarm `never_connected` this many seconds after the bench test (default 7 days)")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("status", help="the fleet at a glance: one row per box, with alarms")
    p.add_argument("--db", default=None, help=DB_HELP)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--interval", type=float, default=300, help="nominal telemetry interval in seconds (silence alarm after 3)")
    p.add_argument("--weak-share", type=float, default=0.25, help="alarm when a station spends more than this share of time in weak/unusable (default 0.25)")
    p.add_argument("--alarms-only", action="store_true", help="list only boxes with alarms")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("report", help="PNG plots and an HTML page for people")
    p.add_argument("--db", default=None, help=DB_HELP)
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--box", action="append", default=None, help="plot these boxes (default: those with alarms, then the first ones)")
    p.add_argument("--max-boxes", type=int, default=12, help="per-box pages at most (default 12)")
    p.add_argument("--interval", type=float, default=300)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("reconcile", help="re-publish every box's desired documents (retained) from the store")
    p.add_argument("--broker", required=True, help="mqtt://[user@]host:port (the push account)")
    p.add_argument("--db", default=None, help=DB_HELP)
    p.add_argument("--tls-ca", default=None)
    p.add_argument("--box", action="append", default=None, help="only these boxes")
    p.add_argument("--client-id", default=None, help="MQTT client id prefix (default homebox-reconcile-RANDOM)")
    p.add_argument("--all", action="store_true",
                   help="publish every stored document, even those the broker holds at the same version")
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser("broker-config", help="generate a Mosquitto configuration for the fleet")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--boxes", type=Path, default=None,
                   help="JSON or CSV of box credentials: {box_id: password} or rows box,password|hash")
    p.add_argument("--registry", type=Path, default=None,
                   help="the operator's key registry (`ops keys import`): each box's active hash; revoked boxes left out")
    p.add_argument("--port", type=int, default=8883, help="TLS listener port (default 8883)")
    p.add_argument("--plain-port", type=int, default=0, help="also a plain listener on 127.0.0.1:PORT (boxes on a test bench, tests)")
    p.add_argument("--backend-port", type=int, default=None,
                   help="the backend's listener, client certificates only (default: --port + 1)")
    p.add_argument("--host", action="append", default=None, help="server certificate names (default: localhost)")
    p.add_argument("--client-certs", action="store_true",
                   help="also issue a client certificate per box (bound to it, short-lived, with a CRL)")
    p.add_argument("--ca-dir", type=Path, default=None,
                   help="where the CA's private key is kept, apart from the broker's files (default: OUT-ca/)")
    p.add_argument("--fleet-size", type=int, default=1000, help="boxes the broker serves (sizes the queues)")
    p.add_argument("--ingest-accounts", type=int, default=4, help="ingest accounts homebox-ingest-1..N, one per ingest process (default 4)")
    p.add_argument("--push-accounts", type=int, default=4,
                   help="push accounts homebox-push-1..N besides homebox-push, one per campaign driver, "
                        "reconcile or fan-out connection (default 4)")
    p.add_argument("--run-as", default=None, help="user Mosquitto switches to when started as root (default: mosquitto)")
    p.set_defaults(func=cmd_broker_config)


def _store(args):
    from backend.store import StoreError, open_store
    try:
        return open_store(args.db)
    except StoreError as e:
        raise SystemExit(str(e)) from None


def cmd_ingest(args) -> int:
    import time

    from backend.ingest import Ingest, tune_gc
    from backend.store import RETENTION_DAYS, StoreError, open_store
    deadline, delay = time.time() + args.db_wait, 0.5
    while True:
        try:
            store = open_store(args.db)
            break
        except StoreError as e:
            if time.time() + delay > deadline:
                raise SystemExit(str(e)) from None
            print(f"ingest: {e}; retrying in {delay:.1f} s", file=sys.stderr, flush=True)
            time.sleep(delay)
            delay = min(delay * 2, 10)
    ing = Ingest(args.broker, store, share=args.share, client_id=args.client_id,
                 batch_size=args.batch, batch_wait=args.batch_wait, tls_ca=args.tls_ca,
                 metrics_port=args.metrics_port, metrics_host=args.metrics_host, state=args.state,
                 retention_days=RETENTION_DAYS if args.retention_days is None else args.retention_days,
                 alarm_webhook=args.alarm_webhook, alarm_interval=args.interval, alarm_grace=args.grace)
    signal.signal(signal.SIGTERM, lambda *_: ing.stop())
    tune_gc()
    try:
        totals = ing.run(duration=args.duration or None)
    except KeyboardInterrupt:
        ing.stop()
        totals = ing.totals
    print(json.dumps(totals))
    store.close()
    return 0


def cmd_status(args) -> int:
    from backend import status
    store = _store(args)
    rows = status.fleet(store, interval=args.interval, weak_share=args.weak_share)
    if args.alarms_only:
        rows = [r for r in rows if r["alarms"]]
    if args.json:
        print(json.dumps({"boxes": rows, "summary": status.summary(rows), "counters": store.counters()},
                         indent=1, default=str))
    else:
        status.print_table(rows, store.counters())
    return 1 if any(r["alarms"] for r in rows) and args.alarms_only else 0


def cmd_report(args) -> int:
    from backend import report
    store = _store(args)
    index = report.write_report(store, args.out, boxes=args.box, max_boxes=args.max_boxes,
                                interval=args.interval)
    print(index)
    return 0


def cmd_reconcile(args) -> int:
    from backend import reconcile
    store = _store(args)
    n = reconcile.reconcile(store, args.broker, tls_ca=args.tls_ca, boxes=args.box, client_id=args.client_id,
                            compare=not args.all)
    print(f"re-published {n} desired documents (retained)")
    return 0


def cmd_broker_config(args) -> int:
    from backend import broker_config
    creds = broker_config.load_credentials(args.boxes) if args.boxes else {}
    if args.registry:
        from backend.keys import Registry
        with Registry(args.registry) as reg:
            hashes = reg.broker_hashes()
            for b in reg.boxes() - set(hashes):      # revoked: no line, whatever --boxes says
                creds.pop(b, None)
            creds.update(hashes)
    out = broker_config.generate(args.out, creds, port=args.port, plain_port=args.plain_port,
                                 hosts=args.host or ["localhost"], client_certs=args.client_certs,
                                 fleet_size=args.fleet_size, ingest_accounts=args.ingest_accounts,
                                 push_accounts=args.push_accounts, backend_port=args.backend_port,
                                 run_as=args.run_as, ca_dir=args.ca_dir)
    for k, v in out.items():
        print(f"{k}: {v}")
    if out.get("backend_port"):
        print(f"the backend's services log in on port {out['backend_port']} with their certificate "
              f"(--broker 'mqtts://HOST:{out['backend_port']}?cert={out['backend_certs']}/homebox-push.crt'); "
              "people with `homebox ops broker-login`", file=sys.stderr)
    return 0
