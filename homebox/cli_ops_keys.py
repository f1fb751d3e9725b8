"""`homebox ops keygen|keys|rotate|revoke`: the operator's key registry (library:
backend/keys.py; docs/decisions/0013-per-box-secrets.md).

    homebox ops keygen --out opkeys/                 # operator.key (0600) + operator.pub for the benches
    homebox ops keys import escrow.json              # from `homebox bench export-escrow`
    homebox ops keys list --json
    homebox ops rotate HB-000001 --broker mqtt://homebox-push@host:1883 --broker-dir cfg/ --broker-pid PID
    homebox ops revoke HB-000001 --broker-dir cfg/ --broker-pid PID

The registry file: --registry or $HOMEBOX_REGISTRY; the operator key: --operator-key or
$HOMEBOX_OPERATOR_KEY (refused when others can read it).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from common import credentials
from homebox.cli_ops_common import broker_url, out

REG_HELP = "the key registry (SQLite; default: $HOMEBOX_REGISTRY, else registry.sqlite)"
KEY_HELP = "the operator's private key (default: $HOMEBOX_OPERATOR_KEY)"


def register(sub) -> None:
    p = sub.add_parser("keygen", help="a new operator key pair: operator.key (private) and operator.pub (benches)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("keys", help="the key registry: import the benches' escrow, list the boxes' key versions")
    ks = p.add_subparsers(dest="keys_cmd", metavar="ACTION")
    ks.required = True
    q = ks.add_parser("import", help="import escrow records (`homebox bench export-escrow`)")
    q.add_argument("file", type=Path)
    _common(q)
    q.set_defaults(func=cmd_import)
    q = ks.add_parser("list", help="each box's active and pending key version (no secret)")
    q.add_argument("--registry", type=Path, default=None, help=REG_HELP)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_list)

    p = sub.add_parser("rotate", help="give a box new credentials over MQTT (signed desired/keys), then the broker")
    p.add_argument("box")
    _common(p)
    _broker(p)
    p.add_argument("--broker", default="127.0.0.1:1883",
                   help="mqtt://[user@]host:port (the push account; password: $HOMEBOX_MQTT_PASSWORD)")
    p.add_argument("--tls-ca", default=None)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the box")
    p.set_defaults(func=cmd_rotate)

    p = sub.add_parser("revoke", help="revoke every key of a box: the broker refuses it from the reload on")
    p.add_argument("box")
    p.add_argument("--ca-dir", type=Path, default=None,
                   help="with client certificates: the CA's directory (default: BROKER_DIR-ca/), for the CRL")
    p.add_argument("--registry", type=Path, default=None, help=REG_HELP)
    p.add_argument("--json", action="store_true")
    _broker(p)
    p.set_defaults(func=cmd_revoke)


def _common(p) -> None:
    p.add_argument("--registry", type=Path, default=None, help=REG_HELP)
    p.add_argument("--operator-key", type=Path, default=None, help=KEY_HELP)
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _broker(p) -> None:
    p.add_argument("--broker-dir", type=Path, default=None,
                   help="the directory `ops broker-config --out` wrote: its passwd is rewritten from the registry")
    p.add_argument("--broker-pid", default=None, help="the broker's pid or pid file: SIGHUP after the change")


def registry(args):
    from backend.keys import ENV_REGISTRY, Registry
    return Registry(args.registry or os.environ.get(ENV_REGISTRY) or "registry.sqlite")


def operator_key(args) -> bytes:
    try:
        key = credentials.load_operator_key(args.operator_key)
    except credentials.MasterSecretError as e:
        raise SystemExit(f"ops: {e}") from None
    if key is None:
        raise SystemExit(f"ops: give --operator-key FILE or set {credentials.ENV_OPERATOR_KEY}")
    return key


def _out(args, data: dict, text: str) -> None:
    out(args, data, text, sort_keys=True)


def cmd_keygen(args) -> int:
    try:
        priv, pub = credentials.write_operator_key(args.out)
    except credentials.MasterSecretError as e:
        raise SystemExit(f"ops: {e}") from None
    _out(args, {"key": str(priv), "pub": str(pub)},
         f"{priv}: the operator's private key (mode 0600; keep it on the operator side only)\n"
         f"{pub}: the public key for the benches (homebox bench run --operator-pubkey {pub})")
    return 0


def cmd_import(args) -> int:
    from backend.keys import RegistryError
    try:
        records = json.loads(args.file.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"ops: cannot read {args.file}: {e}") from None
    key = operator_key(args)
    with registry(args) as reg:
        try:
            res = reg.import_records(records, key)
        except RegistryError as e:
            raise SystemExit(f"ops: {e}") from None
    n = sum(1 for r in res if r["result"] != "already imported")
    _out(args, {"records": res, "imported": n}, f"{n} key versions imported ({len(res) - n} already there)")
    return 0


def cmd_list(args) -> int:
    with registry(args) as reg:
        rows = reg.listing()
    if args.json:
        print(json.dumps(rows, sort_keys=True))
    else:
        for r in rows:
            state = "REVOKED" if r["revoked"] and not r["active"] else f"v{r['active']}"
            print(f"{r['box']:<16} {state}" + (f" (v{r['pending']} pending)" if r["pending"] else ""))
    return 0


def cmd_rotate(args) -> int:
    from backend import keys
    from backend.errors import OpsError
    url = broker_url(args.broker)
    key = operator_key(args)
    with registry(args) as reg:
        try:
            r = keys.rotate(reg, key, url, args.box, broker_dir=args.broker_dir, reload=args.broker_pid,
                            tls_ca=args.tls_ca, timeout=args.timeout)
        except OpsError as e:
            _out(args, {"box": args.box, "status": "error", "message": str(e)}, f"ops: {e}")
            return 2
    _out(args, r, r["message"])
    return {"confirmed": 0, "applied": 0, "rejected": 1}.get(r["status"], 3)


def cmd_revoke(args) -> int:
    from backend import keys
    with registry(args) as reg:
        try:
            r = keys.revoke(reg, args.box, broker_dir=args.broker_dir, reload=args.broker_pid, ca_dir=args.ca_dir)
        except keys.RegistryError as e:
            raise SystemExit(f"ops: {e}") from None
    _out(args, r, r["message"])
    return 0


def push_key(args, box: str) -> bytes | None:
    """The box's signing key from the registry, for `ops push --registry` (None: no registry given)."""
    if not (args.registry or os.environ.get("HOMEBOX_REGISTRY")):
        return None
    from backend.keys import RegistryError
    key = operator_key(args)
    with registry(args) as reg:
        try:
            return reg.hmac_key(box, key)
        except RegistryError as e:
            raise SystemExit(f"ops: {e}") from None


def signer_from_env():
    """With $HOMEBOX_REGISTRY (and $HOMEBOX_OPERATOR_KEY): a function box id -> its
    active key, for the commands that sign many boxes (ops campaign, rollback)."""
    path = os.environ.get("HOMEBOX_REGISTRY")
    if not path:
        return None
    from backend.keys import Registry
    try:
        key = credentials.load_operator_key()
    except credentials.MasterSecretError as e:
        raise SystemExit(f"ops: {e}") from None
    if key is None:
        raise SystemExit(f"ops: $HOMEBOX_REGISTRY needs ${credentials.ENV_OPERATOR_KEY} (the operator key)")
    return Registry(path).signer(key)


if __name__ == "__main__":      # pragma: no cover
    sys.exit("use: homebox ops keys ...")
