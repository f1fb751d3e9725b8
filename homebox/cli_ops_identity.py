"""`homebox ops broker-login` and `ops broker-revoke`: each operator pushes to the
fleet broker as themselves (backend/identities.py).

    homebox ops broker-login alice --broker-dir broker/ --out ~/.homebox/alice --broker-pid PID
    HOMEBOX_MQTT_CERT=~/.homebox/alice homebox ops push options doc.json --box HB-000001 \\
        --broker mqtts://broker.example:8884 --tls-ca broker/ca.crt
    homebox ops broker-revoke alice --broker-dir broker/ --broker-pid PID
"""
from __future__ import annotations

from pathlib import Path

from homebox.cli_ops_common import add_db_json, fail, out, read_password


def register(sub) -> None:
    p = sub.add_parser("broker-login", help="your own broker identity (op.NAME certificates, hours long), "
                                            "after your console password")
    p.add_argument("name", help="your account (`ops account add`), role operator or admin")
    p.add_argument("--broker-dir", type=Path, required=True, help="the directory `ops broker-config --out` wrote")
    p.add_argument("--ca-dir", type=Path, default=None, help="the CA's key (default: BROKER_DIR-ca/)")
    p.add_argument("--out", type=Path, required=True,
                   help="where the certificates go (mode 0700): then HOMEBOX_MQTT_CERT=OUT")
    p.add_argument("--hours", type=float, default=12.0, help="their lifetime (default 12, at most a week)")
    p.add_argument("--connections", type=int, default=1,
                   help="identities op.NAME, op.NAME~2 .. ~N: one per connection of a campaign (default 1)")
    p.add_argument("--broker-pid", default=None, help="the broker's pid or pid file: SIGHUP when its ACL changed")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add_db_json(p)
    p.set_defaults(func=cmd_login)

    p = sub.add_parser("broker-revoke", help="a person's broker identities on the CRL and out of the ACL")
    p.add_argument("name")
    p.add_argument("--broker-dir", type=Path, required=True, help="the directory `ops broker-config --out` wrote")
    p.add_argument("--ca-dir", type=Path, default=None, help="the CA's key (default: BROKER_DIR-ca/)")
    p.add_argument("--broker-pid", default=None, help="the broker's pid or pid file: SIGHUP after the change")
    add_db_json(p)
    p.set_defaults(func=cmd_revoke)




def cmd_login(args) -> int:
    from backend import accounts, identities
    from backend.errors import OpsError
    from backend.keys import reload_broker
    from backend.store import open_store
    pw = read_password(args, f"{args.name}'s console password: ")
    st = open_store(args.db)
    try:
        acct = accounts.login(st, args.name, pw)
        if acct is None or not acct.can("operator"):
            # one answer for a wrong password, an unknown or disabled account and a viewer
            return fail(args, OpsError(f"{args.name}: wrong password, or not an enabled operator account"), 2)
        r = identities.issue(args.broker_dir, acct.name, args.out, hours=args.hours,
                             connections=args.connections, ca_dir=args.ca_dir)
        reloaded = reload_broker(args.broker_pid) if r["acl_changed"] else False
        accounts.audit(st, acct.name, "broker.login", ",".join(r["names"]), {"hours": args.hours})
    except OpsError as e:
        return fail(args, e, 2)
    finally:
        st.close()
    note = ""
    if r["acl_changed"] and not reloaded:
        note = "; new names in the ACL: reload the broker (SIGHUP) before pushing"
    out(args, dict(r, out=str(args.out), reloaded=reloaded),
        f"{', '.join(r['names'])}: certificates in {args.out} for {args.hours:g} h{note}\n"
        f"push with: HOMEBOX_MQTT_CERT={args.out} homebox ops push ... --broker mqtts://HOST:BACKEND_PORT")
    return 0


def cmd_revoke(args) -> int:
    from backend import accounts, identities
    from backend.errors import OpsError
    from backend.keys import reload_broker
    from backend.store import open_store
    try:
        gone = identities.revoke(args.broker_dir, args.name, ca_dir=args.ca_dir)
        reloaded = reload_broker(args.broker_pid) if gone else False
    except OpsError as e:
        return fail(args, e, 2)
    if gone:
        st = open_store(args.db)
        try:
            accounts.audit(st, "cli", "broker.revoke", ",".join(gone), {})
        finally:
            st.close()
    out(args, {"revoked": gone, "reloaded": reloaded},
        (f"revoked {', '.join(gone)}" + ("" if reloaded else "; reload the broker (SIGHUP)")) if gone
        else f"{args.name} has no broker identity")
    return 0
