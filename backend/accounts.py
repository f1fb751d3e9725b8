"""Accounts, roles, tokens and the audit log of the operator's API and console.

    from backend import accounts
    accounts.add(store, "alice", "viewer", "a long passphrase", author="admin")
    acct = accounts.login(store, "alice", "a long passphrase")   # Account or None
    tok = accounts.new_token(store, "alice", "crm")              # shown once
    accounts.by_token(store, tok)                                # Account or None
    accounts.audit(store, "alice", "push", "HB-000001/options", {"version": 3})

Roles are ordered: viewer (reads), operator (pushes, tags, campaigns), admin
(accounts, the audit log). Passwords are hashed with Argon2id (argon2-cffi, its
default parameters); tokens are 256-bit random strings of which the store keeps
only the SHA-256 (a token is as strong as a key, so a slow hash adds nothing and
would cost every API call). Sessions of the web console are tokens of kind
`session` with an expiry.

Tables (new, additive): api_accounts, api_tokens, api_audit.
"""
from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass

from backend.errors import OpsError
from backend.store import ensure_tables

ROLES = ("viewer", "operator", "admin")
SESSION_S = 8 * 3600
TOKEN_PREFIX = "hbt_"
MIN_PASSWORD = 10


class AccountError(OpsError):
    """An account cannot be created or changed as asked."""


@dataclass(frozen=True)
class Account:
    name: str
    role: str

    def can(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


def _ddl(dialect: str) -> list[str]:
    serial = "BIGSERIAL PRIMARY KEY" if dialect == "postgresql" else "INTEGER PRIMARY KEY AUTOINCREMENT"
    return [
        """CREATE TABLE IF NOT EXISTS api_accounts (
            name TEXT PRIMARY KEY, role TEXT NOT NULL, hash TEXT NOT NULL,
            disabled BIGINT NOT NULL DEFAULT 0, created_at DOUBLE PRECISION NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS api_tokens (
            digest TEXT PRIMARY KEY, account TEXT NOT NULL, kind TEXT NOT NULL, label TEXT,
            created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION)""",
        "CREATE INDEX IF NOT EXISTS api_tokens_account ON api_tokens (account)",
        f"""CREATE TABLE IF NOT EXISTS api_audit (
            id {serial}, at DOUBLE PRECISION NOT NULL, author TEXT NOT NULL, action TEXT NOT NULL,
            target TEXT NOT NULL, detail TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS api_audit_at ON api_audit (at)",
    ]


def ensure_schema(store) -> None:
    ensure_tables(store, "_accounts_ready", lambda: _ddl(store.dialect))


def _hasher():
    from argon2 import PasswordHasher
    return PasswordHasher()


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _check_name(name: str) -> None:
    if not name or len(name) > 64 or not all(c.isalnum() or c in "._-@" for c in name):
        raise AccountError(f"bad account name {name!r}: letters, digits and . _ - @ (64 at most)")


def add(store, name: str, role: str, password: str, *, author: str) -> Account:
    ensure_schema(store)
    _check_name(name)
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"password too short: {MIN_PASSWORD} characters at least")
    if store._q("SELECT 1 FROM api_accounts WHERE name=?", (name,)):
        raise AccountError(f"account {name!r} exists")
    h = _hasher().hash(password)
    now = time.time()

    def tx(cur):
        cur.execute(store._sql("INSERT INTO api_accounts (name, role, hash, disabled, created_at) "
                               "VALUES (?,?,?,0,?)"), (name, role, h, now))
        _audit(store, cur, author, "account.add", name, {"role": role}, now)
    store._tx(tx)
    return Account(name, role)


def set_role(store, name: str, role: str, *, author: str) -> Account:
    ensure_schema(store)
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    _get(store, name)

    def tx(cur):
        cur.execute(store._sql("UPDATE api_accounts SET role=? WHERE name=?"), (role, name))
        _audit(store, cur, author, "account.role", name, {"role": role}, time.time())
    store._tx(tx)
    return Account(name, role)


def disable(store, name: str, *, author: str) -> None:
    """Disable an account and revoke its tokens and sessions."""
    ensure_schema(store)
    _get(store, name)

    def tx(cur):
        cur.execute(store._sql("UPDATE api_accounts SET disabled=1 WHERE name=?"), (name,))
        cur.execute(store._sql("DELETE FROM api_tokens WHERE account=?"), (name,))
        _audit(store, cur, author, "account.disable", name, {}, time.time())
    store._tx(tx)


def _get(store, name: str) -> tuple:
    rows = store._q("SELECT name, role, hash, disabled FROM api_accounts WHERE name=?", (name,))
    if not rows:
        raise AccountError(f"no account {name!r}")
    return rows[0]


def list_accounts(store) -> list[dict]:
    ensure_schema(store)
    return [{"name": n, "role": r, "disabled": bool(d), "created_at": c} for n, r, d, c in
            store._q("SELECT name, role, disabled, created_at FROM api_accounts ORDER BY name")]


def login(store, name: str, password: str) -> Account | None:
    """The account if the password matches (and the account is enabled), else None."""
    from argon2.exceptions import InvalidHashError, VerificationError
    ensure_schema(store)
    rows = store._q("SELECT name, role, hash, disabled FROM api_accounts WHERE name=?", (name,))
    ph = _hasher()
    if not rows:
        # the same work as a real check: no timing tells which names exist
        try:
            ph.verify(_DUMMY[0] or _dummy(ph), password)
        except (VerificationError, InvalidHashError):
            pass
        return None
    n, role, h, disabled = rows[0]
    try:
        ph.verify(h, password)
    except (VerificationError, InvalidHashError):
        return None
    if disabled:
        return None
    if ph.check_needs_rehash(h):
        store._tx(lambda cur: cur.execute(store._sql("UPDATE api_accounts SET hash=? WHERE name=?"),
                                          (ph.hash(password), n)))
    return Account(n, role)


_DUMMY: list = [None]


def _dummy(ph) -> str:
    _DUMMY[0] = ph.hash(secrets.token_urlsafe(16))
    return _DUMMY[0]


def new_token(store, name: str, label: str = "", *, kind: str = "token",
              ttl: float | None = None) -> str:
    """A new bearer token for `name` (returned once; the store keeps its digest)."""
    ensure_schema(store)
    _, _, _, disabled = _get(store, name)
    if disabled:
        raise AccountError(f"account {name!r} is disabled")
    tok = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = time.time()

    def tx(cur):
        cur.execute(store._sql("INSERT INTO api_tokens (digest, account, kind, label, created_at, expires_at) "
                               "VALUES (?,?,?,?,?,?)"),
                    (_digest(tok), name, kind, label[:80], now, None if ttl is None else now + ttl))
        if kind == "token":
            _audit(store, cur, name, "token.create", name, {"label": label[:80]}, now)
    store._tx(tx)
    return tok


def revoke(store, token: str) -> None:
    ensure_schema(store)
    store._tx(lambda cur: cur.execute(store._sql("DELETE FROM api_tokens WHERE digest=?"),
                                      (_digest(token),)))


def by_token(store, token: str | None) -> Account | None:
    if not token or not token.startswith(TOKEN_PREFIX):
        return None
    ensure_schema(store)
    rows = store._q("SELECT a.name, a.role, t.expires_at FROM api_tokens t JOIN api_accounts a "
                    "ON a.name = t.account WHERE t.digest=? AND a.disabled=0", (_digest(token),))
    if not rows:
        return None
    name, role, exp = rows[0]
    if exp is not None and exp < time.time():
        return None
    return Account(name, role)


# ---- audit -------------------------------------------------------------------------

def _audit(store, cur, author: str, action: str, target: str, detail: dict, now: float) -> None:
    cur.execute(store._sql("INSERT INTO api_audit (at, author, action, target, detail) VALUES (?,?,?,?,?)"),
                (now, author, action, target, json.dumps(detail, sort_keys=True)))


def audit(store, author: str, action: str, target: str, detail: dict | None = None) -> None:
    """Record that `author` did `action` on `target` (never a secret in `detail`)."""
    ensure_schema(store)
    now = time.time()
    store._tx(lambda cur: _audit(store, cur, author, action, target, detail or {}, now))


def audit_log(store, *, limit: int = 100, offset: int = 0, author: str | None = None) -> list[dict]:
    ensure_schema(store)
    q = "SELECT id, at, author, action, target, detail FROM api_audit"
    args: tuple = ()
    if author:
        q += " WHERE author=?"
        args = (author,)
    rows = store._q(q + " ORDER BY id DESC LIMIT ? OFFSET ?", args + (int(limit), int(offset)))
    return [{"id": int(i), "at": at, "author": au, "action": ac, "target": t, "detail": json.loads(d)}
            for i, at, au, ac, t, d in rows]
