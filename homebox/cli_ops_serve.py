"""`homebox ops serve` (the HTTP API and web console), `ops account ...`,
`ops token create`, `ops inventory import|set` and `ops audit`: backend/api.py,
backend/accounts.py and backend/inventory.py."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from homebox.cli_ops_common import (
    ENV_PASSWORD,
    add_db_json,
    broker_url,
    out,
    read_password,
    with_store,
)
from homebox.cli_ops_fleet import DB_HELP


def register(sub) -> None:
    p = sub.add_parser("serve", help="the HTTP API (OpenAPI) and the web console, with accounts and roles")
    p.add_argument("--db", default=None, help=DB_HELP)
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (0: any free port; default 8080)")
    p.add_argument("--broker", default=None,
                   help="MQTT broker for pushes and campaigns (with --broker-dir: the backend listener, "
                        "each person as themselves; else one account, password $HOMEBOX_MQTT_PASSWORD); "
                        "without it the server only reads")
    p.add_argument("--tls-ca", default=None, help="CA file for mqtts://")
    p.add_argument("--broker-dir", type=Path, default=None,
                   help="the directory `ops broker-config` wrote: push and drive campaigns as each person "
                        "(op.NAME certificates, an hour each) on --broker, the backend listener")
    p.add_argument("--ca-dir", type=Path, default=None, help="the CA's key (default: BROKER_DIR-ca/)")
    p.add_argument("--broker-pid", default=None,
                   help="the broker's pid or pid file: SIGHUP when a person's first identity joins the ACL")
    p.add_argument("--master-secret-file", default=None,
                   help="operator master secret to sign documents (default: $HOMEBOX_MASTER_SECRET)")
    p.add_argument("--tls-cert", default=None, help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--tls-key", default=None, help="its private key (PEM)")
    p.add_argument("--push-timeout", type=float, default=10.0, help="seconds a push waits for the report")
    p.add_argument("--grace", type=float, default=7 * 86400,
                   help="seconds after its bench test before a box never connected raises never_connected")
    p.add_argument("--alarm-webhook", default=None, metavar="URL",
                   help="POST alarm raises and clears there (Alertmanager webhook JSON), retried with backoff")
    p.add_argument("--interval", type=float, default=300,
                   help="nominal telemetry interval in seconds (alarm `silent` after 3; default 300)")
    p.add_argument("--duration", type=float, default=0, help="stop after S seconds (0: until Ctrl-C)")
    p.add_argument("--json", action="store_true", help="print the address as JSON once listening")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("account", help="accounts of the API and console (add, list, role, disable)")
    asub = p.add_subparsers(dest="action", metavar="ACTION")
    asub.required = True
    a = asub.add_parser("add", help=f"create an account (password from ${ENV_PASSWORD} or asked)")
    a.add_argument("name")
    a.add_argument("--role", required=True, choices=("viewer", "operator", "admin"))
    a.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    for x in [a] + [asub.add_parser(n, help=h) for n, h in
                    (("list", "list accounts"),)]:
        add_db_json(x)
    a.set_defaults(func=cmd_account_add)
    asub.choices["list"].set_defaults(func=cmd_account_list)
    r = asub.add_parser("role", help="change an account's role")
    r.add_argument("name")
    r.add_argument("role", choices=("viewer", "operator", "admin"))
    d = asub.add_parser("disable", help="disable an account and revoke its tokens (and, with --broker-dir, "
                                        "its broker identities)")
    d.add_argument("name")
    d.add_argument("--broker-dir", type=Path, default=None,
                   help="the directory `ops broker-config` wrote: also `ops broker-revoke` the person")
    d.add_argument("--broker-pid", default=None, help="the broker's pid or pid file: SIGHUP after the revoke")
    for x, fn in ((r, cmd_account_role), (d, cmd_account_disable)):
        add_db_json(x)
        x.set_defaults(func=fn)

    p = sub.add_parser("token", help="bearer tokens for machine clients")
    tsub = p.add_subparsers(dest="action", metavar="ACTION")
    tsub.required = True
    t = tsub.add_parser("create", help="a new token for an account (printed once)")
    t.add_argument("name")
    t.add_argument("--label", default="", help="what the token is for (e.g. crm)")
    add_db_json(t)
    t.set_defaults(func=cmd_token)

    p = sub.add_parser("inventory", help="the boxes the bench provisioned, with their address and building")
    isub = p.add_subparsers(dest="action", metavar="ACTION")
    isub.required = True
    i = isub.add_parser("import", help="import a bench ledger (no secret is read from it)")
    i.add_argument("--ledger", required=True, help="the bench's ledger file (SQLite), or a copy")
    i.set_defaults(func=cmd_inventory_import)
    i2 = isub.add_parser("set", help="set a box's address and building")
    i2.add_argument("box")
    i2.add_argument("--address", default=None)
    i2.add_argument("--building", default=None)
    i2.set_defaults(func=cmd_inventory_set)
    for x in (i, i2):
        add_db_json(x)

    p = sub.add_parser("audit", help="the audit log of the API and console: who did what")
    p.add_argument("--db", default=None, help=DB_HELP)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--author", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit)


def _author() -> str:
    return "cli:" + (os.environ.get("USER") or "unknown")


def cmd_serve(args) -> int:
    from backend.api import Api, serve
    from backend.store import StoreError
    from common import credentials
    broker = None
    if args.broker:
        broker = broker_url(args.broker)
    try:
        master = credentials.load_master(args.master_secret_file)
    except credentials.MasterSecretError as e:
        raise SystemExit(str(e)) from None
    from backend.store import default_url
    try:
        issuer = None
        if args.broker_dir:
            if broker is None or not broker.tls:
                raise SystemExit("--broker-dir needs --broker mqtts://HOST:BACKEND_PORT (the backend listener)")
            from backend.identities import Issuer
            issuer = Issuer(args.broker_dir, broker, tls_ca=args.tls_ca, ca_dir=args.ca_dir,
                            reload=args.broker_pid)
        api = Api(args.db or default_url(), broker=broker, master=master, tls_ca=args.tls_ca,
                  push_timeout=args.push_timeout, secure_cookies=bool(args.tls_cert), grace=args.grace,
                  identities=issuer)
        srv = serve(api, args.host, args.port, tls_cert=args.tls_cert, tls_key=args.tls_key)
    except (StoreError, OSError) as e:
        raise SystemExit(f"cannot serve: {e}") from None
    host, port = srv.server_address[:2]
    url = f"{'https' if args.tls_cert else 'http'}://{host}:{port}"
    # the time-based alarms (silent, never_connected) and the webhook, beside the server
    from backend.alarm_loop import AlarmLoop
    loop = AlarmLoop(api.db_url, webhook=args.alarm_webhook, interval=args.interval, grace=args.grace,
                     external_url=url).start()
    if args.json:
        print(json.dumps({"url": url, "openapi": url + "/api/v1/openapi.json", "console": url + "/"}), flush=True)
    else:
        print(f"console: {url}/   API: {url}/api/v1/   OpenAPI: {url}/api/v1/openapi.json", flush=True)
        if broker is None:
            print("note: no --broker: pushes and campaign drives answer 503", flush=True)
        if not args.tls_cert and host not in ("127.0.0.1", "localhost", "::1"):
            print("warning: plain HTTP on a public address: use --tls-cert/--tls-key or a TLS proxy",
                  file=sys.stderr, flush=True)
    try:
        end = time.time() + args.duration if args.duration else None
        while end is None or time.time() < end:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        srv.shutdown()
        loop.stop()
        if issuer is not None:
            issuer.close()
    return 0




def cmd_account_add(args) -> int:
    from backend import accounts
    pw = read_password(args, "password: ", confirm=True)
    a, rc = with_store(args, lambda st: accounts.add(st, args.name, args.role, pw, author=_author()),
                       accounts.AccountError)
    if rc is not None:
        return rc
    out(args, {"name": a.name, "role": a.role}, f"account {a.name} ({a.role}) created")
    return 0


def cmd_account_list(args) -> int:
    from backend import accounts
    rows, _ = with_store(args, accounts.list_accounts)
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            print(f"{r['name']:<24} {r['role']:<9} {'disabled' if r['disabled'] else ''}")
    return 0


def cmd_account_role(args) -> int:
    from backend import accounts
    a, rc = with_store(args, lambda st: accounts.set_role(st, args.name, args.role, author=_author()),
                       accounts.AccountError)
    if rc is not None:
        return rc
    out(args, {"name": a.name, "role": a.role}, f"{a.name}: {a.role}")
    return 0


def cmd_account_disable(args) -> int:
    from backend import accounts
    _, rc = with_store(args, lambda st: accounts.disable(st, args.name, author=_author()), accounts.AccountError)
    if rc is not None:
        return rc
    res: dict = {"name": args.name, "disabled": True}
    text = f"{args.name}: disabled"
    if args.broker_dir:
        from backend import identities
        from backend.keys import reload_broker
        res["broker_revoked"] = gone = identities.revoke(args.broker_dir, args.name)
        res["broker_reloaded"] = reload_broker(args.broker_pid) if gone else False
        if gone:
            text += f"; revoked {', '.join(gone)}" + ("" if res["broker_reloaded"] else " (reload the broker: SIGHUP)")
    out(args, res, text)
    return 0


def cmd_token(args) -> int:
    from backend import accounts
    tok, rc = with_store(args, lambda st: accounts.new_token(st, args.name, args.label), accounts.AccountError)
    if rc is not None:
        return rc
    out(args, {"account": args.name, "token": tok}, tok)
    return 0


def cmd_inventory_import(args) -> int:
    from backend import accounts, inventory

    def do(store) -> int:
        n = inventory.import_ledger(store, args.ledger)
        accounts.audit(store, _author(), "inventory.import", str(args.ledger), {"boxes": n})
        return n
    n, rc = with_store(args, do, inventory.InventoryError)
    if rc is not None:
        return rc
    out(args, {"imported": n}, f"{n} boxes imported from {args.ledger}")
    return 0


def cmd_inventory_set(args) -> int:
    from backend import accounts, inventory

    def do(store) -> dict:
        d = inventory.set_place(store, args.box, address=args.address, building=args.building)
        accounts.audit(store, _author(), "place", args.box,
                       {k: v for k, v in (("address", args.address), ("building", args.building)) if v is not None})
        return d
    d, rc = with_store(args, do, inventory.InventoryError)
    if rc is not None:
        return rc
    out(args, d, f"{args.box}: {d.get('building') or '-'}, {d.get('address') or '-'}")
    return 0


def cmd_audit(args) -> int:
    from backend import accounts
    rows, _ = with_store(args, lambda st: accounts.audit_log(st, limit=args.limit, author=args.author))
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            t = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["at"]))
            print(f"{t}  {r['author']:<16} {r['action']:<16} {r['target']}  {json.dumps(r['detail'])}")
    return 0
