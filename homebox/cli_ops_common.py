"""What the `homebox ops` command modules (cli_ops_campaign, cli_ops_serve,
cli_ops_keys) share: --db/--json arguments, the store of --db, output as JSON or
text, --broker parsing and a typed error to its exit code."""
from __future__ import annotations

import json
import sys

from homebox.cli_ops_fleet import DB_HELP


def add_db_json(p, json_help: str | None = None) -> None:
    """--db (the store URL) and --json on parser `p`."""
    p.add_argument("--db", default=None, help=DB_HELP)
    p.add_argument("--json", action="store_true", help=json_help)


def out(args, data, text: str, sort_keys: bool = False) -> None:
    """`data` as JSON with --json, else `text`."""
    print(json.dumps(data, sort_keys=sort_keys) if args.json else text)


def broker_url(spec: str):
    """The BrokerUrl of a --broker value (a bad one: exit with the reason)."""
    from common.broker import parse_broker
    try:
        return parse_broker(spec)
    except ValueError as e:
        raise SystemExit(f"--broker: {e}") from None


def fail(args, e, code: int = 1) -> int:
    """Report the typed error `e` (JSON with --json, else on stderr, with a document's
    violations) and return `code`, the command's exit code."""
    from backend.errors import DocumentInvalid
    if args.json:
        res = {"error": type(e).__name__, "message": str(e)}
        if isinstance(e, DocumentInvalid):
            res["violations"] = [{"field": f, "rule": r} for f, r in e.violations]
        print(json.dumps(res))
    else:
        if isinstance(e, DocumentInvalid):
            for f, r in e.violations:
                print(f"{f}: {r}", file=sys.stderr)
        print(f"error: {e}", file=sys.stderr)
    return code


def with_store(args, fn, errors: type | tuple = (), code: int = 1):
    """(fn(store), None) on the store of --db, closed after; when fn raises one of
    `errors`: (None, the exit code) once `fail` has reported it."""
    from homebox.cli_ops_fleet import _store
    store = _store(args)
    try:
        return fn(store), None
    except errors as e:
        return None, fail(args, e, code)
    finally:
        store.close()


ENV_PASSWORD = "HOMEBOX_ACCOUNT_PASSWORD"


def read_password(args, prompt: str, confirm: bool = False) -> str:
    """A console account's password: --password-stdin, $HOMEBOX_ACCOUNT_PASSWORD, or
    asked at the terminal (twice when it is a new one), never from an argument."""
    import getpass
    import os
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    if os.environ.get(ENV_PASSWORD):
        return os.environ[ENV_PASSWORD]
    if not sys.stdin.isatty():
        raise SystemExit(f"no password: use --password-stdin or ${ENV_PASSWORD}")
    pw = getpass.getpass(prompt)
    if confirm and getpass.getpass("again: ") != pw:
        raise SystemExit("the two passwords differ")
    return pw
