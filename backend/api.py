"""The operator's HTTP API (JSON, /api/v1/...) and web console on one server.

    from backend.api import Api, serve
    api = Api("sqlite:///fleet.db", broker=parse_broker("mqtt://127.0.0.1:1883"), master=None)
    srv = serve(api, "127.0.0.1", 0)          # a ThreadingHTTPServer on its own thread
    srv.server_address                        # ('127.0.0.1', PORT)
    srv.shutdown()

Every route but /healthz and the console's login page needs an account: a bearer
token (`Authorization: Bearer hbt_...`, for machine clients) or the console's
session cookie. `POST /api/v1/tokens` also takes HTTP Basic (name and password)
so that a machine client can get its first token. Roles: viewer reads,
operator pushes documents, tags boxes and drives campaigns, admin manages
accounts and reads the audit log. Every change is in the audit log with its
author. The routes and their schemas are in backend/openapi.py, served at
/api/v1/openapi.json; tests/test_api.py checks the two agree.

Lists are paginated (limit, offset) and computed in SQL. A request takes a store
connection from a small pool (never shared by two threads at once).
"""
from __future__ import annotations

import base64
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from backend import accounts, alarms, campaign, console, inventory, push
from backend.errors import BrokerError, DocumentInvalid, OpsError
from backend.fleetq import HttpError, box_detail, page, search_boxes
from backend.store import Store

MAX_BODY = 1 << 20
# ---- the application ---------------------------------------------------------------

class Api:
    def __init__(self, db_url: str, *, broker=None, master: bytes | None = None, tls_ca: str | None = None,
                 push_timeout: float = 10.0, interval: float = 300.0, secure_cookies: bool = False,
                 grace: float = inventory.GRACE_S, identities=None):
        # identities: a backend.identities.Issuer, to push as each person (op.NAME)
        # rather than as the one account of `broker`
        self.db_url = db_url
        self.broker, self.master, self.tls_ca = broker, master, tls_ca
        self.identities = identities
        self.push_timeout = push_timeout
        self.interval = interval
        self.grace = grace
        self.secure_cookies = secure_cookies
        self._pool: list[Store] = []
        self._lock = threading.Lock()
        self.drivers: dict[str, threading.Thread] = {}
        st = Store(db_url)           # the schemas, once, before any request
        accounts.ensure_schema(st)
        campaign.ensure_schema(st)
        inventory.ensure_schema(st)
        self._pool.append(st)

    def acquire(self) -> Store:
        """A store connection for one request (a pool: a connection is never shared
        by two threads at once, and there are never more than the busiest moment needed)."""
        with self._lock:
            if self._pool:
                return self._pool.pop()
        st = Store(self.db_url)
        st._accounts_ready = st._campaign_ready = st._inventory_ready = True    # type: ignore[attr-defined]
        return st

    def release(self, st: Store) -> None:
        with self._lock:
            self._pool.append(st)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, []
        for st in pool:
            st.close()

    # ---- handlers: each (ctx, match) -> (status, body) -------------------------------
    def me(self, c, m):
        return 200, {"name": c.account.name, "role": c.account.role}

    def boxes(self, c, m):
        return 200, search_boxes(c.store, c.query, self.grace)

    def box(self, c, m):
        return 200, box_detail(c.store, m["box"], self.interval, self.grace)

    def telemetry(self, c, m):
        limit, _ = page(c.query)
        kind = m["kind"]
        if kind not in ("coverage", "speed", "consumption", "health", "event"):
            raise HttpError(400, "bad_request", "kind: coverage, speed, consumption, health or event")
        self._known(c.store, m["box"])
        return 200, {"box": m["box"], "kind": kind, "items": c.store.series(m["box"], kind, limit)}

    def alarms(self, c, m):
        return 200, alarms.list_alarms(c.store, c.query)

    def alarm_ack(self, c, m):
        a = alarms.acknowledge(c.store, int(m["id"]), c.account.name)
        accounts.audit(c.store, c.account.name, "alarm.ack", str(a["id"]),
                       {"box": a["box"], "kind": a["kind"], "raised_at": a["raised_at"]})
        return 200, a

    def thresholds(self, c, m):
        return 200, {"items": alarms.list_thresholds(c.store)}

    def thresholds_set(self, c, m):
        b = c.json_body()
        if not isinstance(b, dict) or not b:
            raise HttpError(400, "bad_request", "body: {speed_min_ratio, weak_share, ...} (numbers or null)")
        row = alarms.set_thresholds(c.store, m["plan"], **b)
        accounts.audit(c.store, c.account.name, "alarm.thresholds", m["plan"], b)
        return 200, row

    def _known(self, store, box):
        if not store._q("SELECT 1 FROM boxes WHERE box=?", (box,)):
            raise HttpError(404, "not_found", f"no box {box!r}")

    def push_doc(self, c, m):
        section = m["section"]
        if section not in push.SECTIONS:
            raise HttpError(404, "not_found", f"no section {section!r}: one of {', '.join(push.SECTIONS)}")
        doc = c.json_body()
        if not isinstance(doc, dict):
            raise HttpError(400, "bad_request", "the body is the section's document, a JSON object")
        if self.broker is None:
            raise HttpError(503, "no_broker", "this server was started without --broker: it cannot push")
        try:
            wait = float(c.query.get("wait", self.push_timeout))
        except ValueError:
            raise HttpError(400, "bad_request", "wait: seconds") from None
        wait = min(max(wait, 0.0), 60.0)
        try:
            r = push.push(self._as(c.account.name, "push"), m["box"], section, doc, self.master, store=c.store,
                          tls_ca=self.tls_ca, timeout=wait, author=c.account.name)
        except DocumentInvalid as e:
            raise HttpError(422, "invalid_document", str(e),
                            {"violations": [{"field": f, "rule": r} for f, r in e.violations]}) from None
        except BrokerError as e:
            raise HttpError(502, "broker", str(e)) from None
        accounts.audit(c.store, c.account.name, "push", f"{m['box']}/{section}",
                       {"version": r.version, "result": r.status})
        return 200, {"box": r.box, "section": r.section, "version": r.version, "status": r.status,
                     "message": r.message, "signed": self.master is not None}

    def set_tags(self, c, m):
        body = c.json_body()
        add, rm = body.get("add", []) if isinstance(body, dict) else None, \
            body.get("remove", []) if isinstance(body, dict) else None
        ok = all(isinstance(x, list) and all(isinstance(t, str) and 0 < len(t) <= 64 for t in x)
                 for x in (add, rm))
        if not ok:
            raise HttpError(400, "bad_request", "body: {add: [tags], remove: [tags]}")
        self._known(c.store, m["box"])
        if add:
            campaign.tag(c.store, [m["box"]], add)
        if rm:
            campaign.tag(c.store, [m["box"]], rm, remove=True)
        accounts.audit(c.store, c.account.name, "tags", m["box"], {"add": add, "remove": rm})
        tags = [t for (t,) in c.store._q("SELECT tag FROM box_tags WHERE box=? ORDER BY tag", (m["box"],))]
        return 200, {"box": m["box"], "tags": tags}

    def set_place(self, c, m):
        b = c.json_body()
        if not isinstance(b, dict) or not all(isinstance(b.get(k, ""), str) for k in ("address", "building")) \
                or not ({"address", "building"} & set(b)):
            raise HttpError(400, "bad_request", "body: {address, building} (strings)")
        d = inventory.set_place(c.store, m["box"], address=b.get("address"), building=b.get("building"))
        accounts.audit(c.store, c.account.name, "place", m["box"],
                       {k: b[k] for k in ("address", "building") if k in b})
        return 200, d

    def campaigns(self, c, m):
        limit, offset = page(c.query)
        items = campaign.list_campaigns(c.store)
        return 200, {"total": len(items), "limit": limit, "offset": offset,
                     "items": items[offset:offset + limit]}

    def campaign_get(self, c, m):
        st = campaign.status(c.store, m["id"])
        limit, offset = page(c.query)
        st["boxes"] = st["boxes"][offset:offset + limit]
        return 200, st

    def campaign_create(self, c, m):
        b = c.json_body()
        if not isinstance(b, dict) or not isinstance(b.get("document"), dict) \
                or not isinstance(b.get("target"), dict) or not isinstance(b.get("section"), str):
            raise HttpError(400, "bad_request", "body: {section, document, target, ...}")
        opts = {k: b[k] for k in ("name", "canary", "waves", "success", "abort", "abort_min", "rate",
                                  "box_timeout", "max_in_flight") if k in b}
        try:
            cp = campaign.create(c.store, b["section"], b["document"], b["target"], author=c.account.name,
                                 **opts)
        except DocumentInvalid as e:
            raise HttpError(422, "invalid_document", str(e),
                            {"violations": [{"field": f, "rule": r} for f, r in e.violations]}) from None
        except TypeError as e:
            raise HttpError(400, "bad_request", str(e)) from None
        accounts.audit(c.store, c.account.name, "campaign.create", cp["id"],
                       {"section": cp["section"], "target": cp["target"]})
        cp["counts"] = campaign.counts(c.store, cp["id"])
        return 201, cp

    def campaign_action(self, c, m):
        cid, action = m["id"], m["action"]
        fn = {"start": campaign.start, "pause": campaign.pause, "resume": campaign.resume,
              "abort": campaign.abort}[action]
        cp = fn(c.store, cid)
        accounts.audit(c.store, c.account.name, f"campaign.{action}", cid, {"state": cp["state"]})
        if cp["state"] == "running" and self.broker is not None:
            self._drive(cid, c.account.name)
        cp["counts"] = campaign.counts(c.store, cid)
        cp["driven"] = cid in self.drivers and self.drivers[cid].is_alive()
        return 200, cp

    def _as(self, account: str, purpose: str):
        """The broker, logged in as the person (their own identity) when the server
        issues identities, else as its one account."""
        if self.identities is None:
            return self.broker
        try:
            return self.identities.broker_for(account, purpose)
        except OpsError as e:
            raise HttpError(502, "broker", str(e)) from None

    def _drive(self, cid: str, account: str) -> None:
        t = self.drivers.get(cid)
        if t is not None and t.is_alive():
            return
        broker = self._as(account, "campaign")

        def run():
            st = Store(self.db_url)
            try:
                campaign.run(st, [broker], cid, self.master, tls_ca=self.tls_ca)
            except OpsError:
                pass            # another driver holds it, or the broker is away: status tells
            finally:
                st.close()
        t = threading.Thread(target=run, name=f"campaign-{cid}", daemon=True)
        self.drivers[cid] = t
        t.start()

    def accounts_list(self, c, m):
        return 200, {"items": accounts.list_accounts(c.store)}

    def accounts_add(self, c, m):
        b = c.json_body()
        if not isinstance(b, dict) or not all(isinstance(b.get(k), str) for k in ("name", "role", "password")):
            raise HttpError(400, "bad_request", "body: {name, role, password}")
        a = accounts.add(c.store, b["name"], b["role"], b["password"], author=c.account.name)
        return 201, {"name": a.name, "role": a.role}

    def accounts_change(self, c, m):
        b = c.json_body()
        if not isinstance(b, dict):
            raise HttpError(400, "bad_request", "body: {role} or {disabled: true}")
        if b.get("disabled") is True:
            accounts.disable(c.store, m["name"], author=c.account.name)
        elif isinstance(b.get("role"), str):
            accounts.set_role(c.store, m["name"], b["role"], author=c.account.name)
        else:
            raise HttpError(400, "bad_request", "body: {role} or {disabled: true}")
        a = [x for x in accounts.list_accounts(c.store) if x["name"] == m["name"]][0]
        return 200, a

    def token_create(self, c, m):
        b = c.json_body(optional=True) or {}
        label = b.get("label", "") if isinstance(b, dict) else ""
        tok = accounts.new_token(c.store, c.account.name, str(label))
        return 201, {"token": tok, "account": c.account.name, "role": c.account.role}

    def audit(self, c, m):
        limit, offset = page(c.query)
        return 200, {"limit": limit, "offset": offset,
                     "items": accounts.audit_log(c.store, limit=limit, offset=offset,
                                                 author=c.query.get("author"))}

    def openapi(self, c, m):
        from backend.openapi import document
        return 200, document()


# (method, path template, handler name, least role); the OpenAPI document lists the same
ROUTES = [
    ("GET", "/api/v1/openapi.json", "openapi", "viewer"),
    ("GET", "/api/v1/me", "me", "viewer"),
    ("GET", "/api/v1/boxes", "boxes", "viewer"),
    ("GET", "/api/v1/boxes/{box}", "box", "viewer"),
    ("GET", "/api/v1/boxes/{box}/telemetry/{kind}", "telemetry", "viewer"),
    ("PUT", "/api/v1/boxes/{box}/desired/{section}", "push_doc", "operator"),
    ("PUT", "/api/v1/boxes/{box}/tags", "set_tags", "operator"),
    ("PUT", "/api/v1/boxes/{box}/place", "set_place", "operator"),
    ("GET", "/api/v1/alarms", "alarms", "viewer"),
    ("POST", "/api/v1/alarms/{id}/ack", "alarm_ack", "operator"),
    ("GET", "/api/v1/alarm-thresholds", "thresholds", "viewer"),
    ("PUT", "/api/v1/alarm-thresholds/{plan}", "thresholds_set", "operator"),
    ("GET", "/api/v1/campaigns", "campaigns", "viewer"),
    ("POST", "/api/v1/campaigns", "campaign_create", "operator"),
    ("GET", "/api/v1/campaigns/{id}", "campaign_get", "viewer"),
    ("POST", "/api/v1/campaigns/{id}/{action}", "campaign_action", "operator"),
    ("GET", "/api/v1/accounts", "accounts_list", "admin"),
    ("POST", "/api/v1/accounts", "accounts_add", "admin"),
    ("PATCH", "/api/v1/accounts/{name}", "accounts_change", "admin"),
    ("POST", "/api/v1/tokens", "token_create", "viewer"),
    ("GET", "/api/v1/audit", "audit", "admin"),
]
_PARAM = {"action": "(start|pause|resume|abort)"}
_ROUTE_PARAM = {("/api/v1/alarms/{id}/ack", "id"): "[0-9]{1,18}"}


def _compile(tmpl: str):
    rx = re.sub(r"\{(\w+)\}", lambda mm: f"(?P<{mm[1]}>"
                f"{_ROUTE_PARAM.get((tmpl, mm[1])) or _PARAM.get(mm[1], '[^/]+')})", tmpl)
    return re.compile("^" + rx + "$")


_COMPILED = [(meth, _compile(t), h, role) for meth, t, h, role in ROUTES]


class Ctx:
    def __init__(self, handler: BaseHTTPRequestHandler, store: Store, query: dict, account=None):
        self.h, self.store, self.query, self.account = handler, store, query, account

    def body(self) -> bytes:
        return self.h.raw_body

    def json_body(self, optional: bool = False):
        raw = self.body()
        if not raw and optional:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise HttpError(400, "bad_request", "the body is not JSON") from None


def bearer(handler) -> str | None:
    h = handler.headers.get("Authorization") or ""
    if h[:7].lower() == "bearer ":
        return h[7:].strip()
    return None


def basic(handler) -> tuple[str, str] | None:
    h = handler.headers.get("Authorization") or ""
    if h[:6].lower() != "basic ":
        return None
    try:
        name, _, pw = base64.b64decode(h[6:].strip()).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return name, pw


class Handler(BaseHTTPRequestHandler):
    server_version = "homebox-api"
    protocol_version = "HTTP/1.1"
    api: Api

    def log_message(self, fmt, *args):   # no access log on stderr (tokens never appear in URLs)
        pass

    def _send(self, code: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, code: int, obj, headers: dict | None = None) -> None:
        self._send(code, json.dumps(obj, default=_default).encode(), "application/json", headers)

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path == "/healthz":
            self._send(200, b"ok\n", "text/plain")
            return
        # the body is read here, whole, once: a request is never left half-read on a
        # kept-alive connection (its rest would be taken for the next request)
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = -1
        if n < 0 or n > MAX_BODY:
            self.close_connection = True
            self.send_json(413 if n > 0 else 400, {"error": "too_large" if n > 0 else "bad_request",
                                                   "message": f"body over {MAX_BODY} bytes" if n > 0
                                                   else "bad Content-Length"})
            return
        self.raw_body = self.rfile.read(n) if n else b""
        store = self.api.acquire()
        try:
            if url.path.startswith("/api/"):
                self._api(store, url.path, query)
            else:
                console.handle(self, store, url.path, query)
        except Exception as e:
            # a lost database connection: a fresh one next time
            print(f"api: {self.command} {url.path}: {type(e).__name__}: {e}", file=sys.stderr)
            try:
                store.reconnect()
            except Exception:
                pass
            self.send_json(500, {"error": "internal", "message": "internal error"})
        finally:
            self.api.release(store)

    def _api(self, store, path: str, query: dict) -> None:
        try:
            hit = next(((rx.match(path), h, r) for meth, rx, h, r in _COMPILED
                        if meth == self.command and rx.match(path)), None)
            if hit is None:
                if any(rx.match(path) for _, rx, _, _ in _COMPILED):
                    raise HttpError(405, "method_not_allowed", f"{self.command} not allowed here")
                raise HttpError(404, "not_found", f"no route {path}")
            m, name, role = hit
            acct = self.account(store, allow_basic=(name == "token_create"))
            if acct is None:
                raise HttpError(401, "unauthorized", "an account is needed: Authorization: Bearer TOKEN")
            if not acct.can(role):
                raise HttpError(403, "forbidden", f"{role} role needed (you are {acct.role})")
            ctx = Ctx(self, store, query, acct)
            code, body = getattr(self.api, name)(ctx, m.groupdict())
            self.send_json(code, body)
        except HttpError as e:
            hdr = {"WWW-Authenticate": 'Bearer realm="homebox"'} if e.code == 401 else None
            self.send_json(e.code, {"error": e.error, "message": e.message, **e.extra}, hdr)
        except alarms.AlarmError as e:
            err = {400: "bad_request", 404: "not_found", 409: "refused"}.get(e.code, "bad_request")
            self.send_json(e.code, {"error": err, "message": str(e)})
        except (campaign.NoSuchCampaign, inventory.InventoryError) as e:
            code = 404 if isinstance(e, campaign.NoSuchCampaign) or "not in the inventory" in str(e) else 400
            self.send_json(code, {"error": "not_found" if code == 404 else "bad_request", "message": str(e)})
        except OpsError as e:
            self.send_json(409, {"error": "refused", "message": str(e)})

    def account(self, store, allow_basic: bool = False):
        tok = bearer(self)
        if tok:
            return accounts.by_token(store, tok)
        if allow_basic:
            cred = basic(self)
            if cred:
                return accounts.login(store, *cred)
        return console.session_account(self, store)

    do_GET = do_POST = do_PUT = do_PATCH = do_HEAD = _dispatch  # type: ignore[assignment]


def _default(o):
    if isinstance(o, (bytes, bytearray, memoryview)):
        return bytes(o).decode("utf-8", "replace")
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


class Server(ThreadingHTTPServer):
    daemon_threads = True


def serve(api: Api, host: str = "127.0.0.1", port: int = 0, *, tls_cert: str | None = None,
          tls_key: str | None = None) -> Server:
    """Start the server on its own thread; returns it (shutdown() stops it)."""
    handler = type("BoundHandler", (Handler,), {"api": api})
    srv = Server((host, port), handler)
    if tls_cert:
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(tls_cert, tls_key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, name="homebox-api", daemon=True).start()
    return srv


def wait_ready(url: str, timeout: float = 10.0) -> bool:
    import urllib.request
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.05)
    return False
