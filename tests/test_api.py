"""The operator's HTTP API against a real server, on SQLite and PostgreSQL: roles,
tokens, the audit log, searches, a box's detail, a push through backend/push.py
to a real Mosquitto, a campaign; every response checked against the OpenAPI
document the server serves, and every documented operation exercised."""
from __future__ import annotations

import base64
import json
import socket
import time
import urllib.error
import urllib.request

import pytest
from jsonschema import Draft202012Validator

from backend import accounts, inventory
from backend.api import ROUTES, Api, serve
from backend.openapi import document
from backend.store import Store
from common.broker import parse_broker
from flashing.ledger import Ledger
from tests.test_status_report import PROFILES, populate

PW = {"ada": "ada-admin-pass-1", "oscar": "oscar-operator-1", "vic": "vic-viewer-pass1"}


class Client:
    def __init__(self, url: str, doc: dict):
        self.url, self.doc, self.seen = url, doc, set()

    def call(self, method, path, token=None, body=None, basic=None, raw=False):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        if basic:
            req.add_header("Authorization", "Basic " + base64.b64encode(":".join(basic).encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                code, out = r.status, r.read()
        except urllib.error.HTTPError as e:
            code, out = e.code, e.read()
        obj = json.loads(out)
        self._check(method, path, code, obj)
        return code, obj

    def _check(self, method, path, code, obj):
        """The response matches the operation's documented schema for that code."""
        p = path.split("?")[0]
        for tmpl, item in self.doc["paths"].items():
            parts, got = tmpl.split("/"), p.split("/")
            if len(parts) == len(got) and all(a == b or a.startswith("{") for a, b in zip(parts, got)) \
                    and method.lower() in item:
                op = item[method.lower()]
                break
        else:
            raise AssertionError(f"{method} {p}: not in the OpenAPI document")
        assert str(code) in op["responses"], f"{method} {p}: {code} not documented ({obj})"
        schema = op["responses"][str(code)]["content"]["application/json"]["schema"]
        Draft202012Validator({**schema, "components": self.doc["components"]}).validate(obj)
        self.seen.add(op["operationId"])


@pytest.fixture
def server(db_url, broker, tmp_path):
    st = Store(db_url)
    populate(st, now=int(time.time()) // 3600 * 3600)
    for name, role in (("ada", "admin"), ("oscar", "operator"), ("vic", "viewer")):
        accounts.add(st, name, role, PW[name], author="test")
    # the bench provisioned one more box, which never connected, and one that did
    with Ledger(tmp_path / "ledger.db") as led:
        fresh = led.allocate("a4:5e:60:00:00:01", {"chip": "ESP32"}).serial
    assert inventory.import_ledger(st, tmp_path / "ledger.db") == 1
    inventory.import_rows(st, [{"box": "nantes-001", "verdict": "pass", "tested_at": time.time() - 86400}])
    st.close()
    api = Api(db_url, broker=parse_broker(f"127.0.0.1:{broker.port}"), push_timeout=0.5, grace=0.0)
    api.fresh = fresh
    srv = serve(api, "127.0.0.1", 0)
    host, port = srv.server_address[:2]
    yield api, f"http://{host}:{port}"
    srv.shutdown()
    srv.server_close()
    for t in list(api.drivers.values()):
        t.join(30)
    api.close()


def test_openapi_document_is_valid_and_matches_the_routes():
    doc = document()
    assert doc["openapi"].startswith("3.1")
    ops = {(m.upper(), p): o for p, item in doc["paths"].items() for m, o in item.items()}
    assert set(ops) == {(m, p) for m, p, _, _ in ROUTES}
    assert {o["operationId"] for o in ops.values()} == {h for _, _, h, _ in ROUTES}
    for (m, p), o in ops.items():
        role = {(mm, pp): r for mm, pp, _, r in ROUTES}[(m, p)]
        assert o["x-role"] == role
        declared = {x["name"] for x in o.get("parameters", []) if x["in"] == "path"}
        assert declared == {seg[1:-1] for seg in p.split("/") if seg.startswith("{")}, p
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    text = json.dumps(doc)
    for ref in {r.split('"')[0] for r in text.split('"$ref": "#/components/schemas/')[1:]}:
        assert ref in doc["components"]["schemas"], ref


def test_api_roles_audit_push_and_campaign(server):
    api, url = server
    c = Client(url, document())
    # no anonymous access
    assert c.call("GET", "/api/v1/boxes")[0] == 401
    assert c.call("POST", "/api/v1/tokens", basic=("vic", "wrong password!"))[0] == 401
    tok = {}
    for n in PW:
        code, t = c.call("POST", "/api/v1/tokens", basic=(n, PW[n]), body={"label": "test"})
        assert code == 201 and t["account"] == n
        tok[n] = t["token"]
    code, doc = c.call("GET", "/api/v1/openapi.json", tok["vic"])
    assert code == 200 and doc == json.loads(json.dumps(document()))
    assert c.call("GET", "/api/v1/me", tok["oscar"])[1] == {"name": "oscar", "role": "operator"}

    # search: paging, text, alarms, online
    code, page = c.call("GET", "/api/v1/boxes?limit=3", tok["vic"])
    assert page["total"] == len(PROFILES) + 1 and len(page["items"]) == 3
    code, page2 = c.call("GET", "/api/v1/boxes?limit=3&offset=3", tok["vic"])
    assert not {b["box"] for b in page["items"]} & {b["box"] for b in page2["items"]}
    # keyset: `after` the previous page's `next` gives the same page as the offset did
    code, page3 = c.call("GET", f"/api/v1/boxes?limit=3&after={page['next']}", tok["vic"])
    assert [b["box"] for b in page3["items"]] == [b["box"] for b in page2["items"]]
    assert page3["total"] == page["total"] and page["total_capped"] is False
    code, brest = c.call("GET", "/api/v1/boxes?q=brest&limit=2", tok["vic"])
    code, brest2 = c.call("GET", f"/api/v1/boxes?q=brest&limit=2&after={brest['next']}", tok["vic"])
    assert brest2["total"] == brest["total"] == 4 and brest2["items"][0]["box"] > brest["items"][-1]["box"]
    assert [b["box"] for b in c.call("GET", "/api/v1/boxes?q=brest", tok["vic"])[1]["items"]] == \
        sorted(b for b in PROFILES if b.startswith("brest"))
    assert "brest-004" not in [b["box"] for b in c.call("GET", "/api/v1/boxes?online=true&limit=500",
                                                         tok["vic"])[1]["items"]]
    assert c.call("GET", "/api/v1/boxes?limit=0", tok["vic"])[0] == 400

    # the inventory: a box provisioned but never connected is listed, with its alarm
    code, nc = c.call("GET", "/api/v1/boxes?alarm=never_connected", tok["vic"])
    assert [(b["box"], b["state"]) for b in nc["items"]] == [(api.fresh, "never_connected")]
    code, d = c.call("GET", f"/api/v1/boxes/{api.fresh}", tok["vic"])
    assert [a["code"] for a in d["alarms"]] == ["never_connected"] and d["inventory"]["chip"] == "ESP32"
    assert c.call("PUT", f"/api/v1/boxes/{api.fresh}/place", tok["vic"], {"building": "tower-A"})[0] == 403
    code, p = c.call("PUT", f"/api/v1/boxes/{api.fresh}/place", tok["oscar"],
                     {"building": "tower-A", "address": "12 rue de la Paix, Brest"})
    assert code == 200 and p["building"] == "tower-A"
    assert [b["box"] for b in c.call("GET", "/api/v1/boxes?q=Paix", tok["vic"])[1]["items"]] == [api.fresh]
    assert c.call("GET", "/api/v1/boxes?building=tower-A", tok["vic"])[1]["total"] == 1
    assert c.call("PUT", "/api/v1/boxes/nope/place", tok["oscar"], {"building": "x"})[0] == 404
    assert c.call("GET", "/api/v1/boxes/nantes-001", tok["vic"])[1]["inventory"]["verdict"] == "pass"

    # one box: the alarms status computes, its latest telemetry, its history
    code, d = c.call("GET", "/api/v1/boxes/nantes-002", tok["vic"])
    assert code == 200 and "slow_line" in {a["code"] for a in d["alarms"]}
    assert d["latest"]["speed"]["data"]["ratio_down"] < 0.8
    assert c.call("GET", "/api/v1/boxes/nope", tok["vic"])[0] == 404
    code, tel = c.call("GET", "/api/v1/boxes/nantes-001/telemetry/speed?limit=5", tok["vic"])
    assert len(tel["items"]) == 5
    # the alarms ingest raised while the fixture's data came in, a page from alarm_log
    code, al = c.call("GET", "/api/v1/alarms?kind=slow_line", tok["vic"])
    assert code == 200 and [a["box"] for a in al["items"]] == ["nantes-002"]
    assert c.call("POST", f"/api/v1/alarms/{al['items'][0]['id']}/ack", tok["vic"])[0] == 403
    code, a = c.call("POST", f"/api/v1/alarms/{al['items'][0]['id']}/ack", tok["oscar"])
    assert code == 200 and a["acknowledged_by"] == "oscar"
    # thresholds per plan: operator sets, viewer reads
    assert c.call("PUT", "/api/v1/alarm-thresholds/10M", tok["vic"], {"speed_min_ratio": 0.5})[0] == 403
    code, t = c.call("PUT", "/api/v1/alarm-thresholds/10M", tok["oscar"], {"speed_min_ratio": 0.5})
    assert code == 200 and t["effective"]["speed_min_ratio"] == 0.5 and t["effective"]["weak_share"] == 0.25
    assert c.call("PUT", "/api/v1/alarm-thresholds/10M", tok["oscar"], {"nope": 1})[0] == 400
    assert {x["plan"] for x in c.call("GET", "/api/v1/alarm-thresholds", tok["vic"])[1]["items"]} == {"*", "10M"}

    # roles: a viewer cannot push nor tag; an operator can
    opts = {"speed_tier": "10M", "bouquets": [], "phone": {"enabled": False},
            "consent": {"detailed_consumption": True}}
    assert c.call("PUT", "/api/v1/boxes/nantes-001/desired/options", tok["vic"], opts)[0] == 403
    code, r = c.call("PUT", "/api/v1/boxes/nantes-001/desired/options?wait=0.3", tok["oscar"], opts)
    assert code == 200 and r["status"] == "timeout" and r["version"] == 1     # no box on this broker
    code, bad = c.call("PUT", "/api/v1/boxes/nantes-001/desired/options", tok["oscar"], {"speed_tier": 5})
    assert code == 422 and bad["violations"]
    code, d = c.call("GET", "/api/v1/boxes/nantes-001", tok["vic"])
    assert [x["version"] for x in d["desired_documents"] if x["section"] == "options"] == [1]
    assert [b["box"] for b in c.call("GET", "/api/v1/boxes?plan=10M", tok["vic"])[1]["items"]] == ["nantes-001"]
    assert c.call("PUT", "/api/v1/boxes/nantes-001/tags", tok["vic"], {"add": ["tower-B"]})[0] == 403
    for b in ("nantes-001", "nantes-002"):
        assert c.call("PUT", f"/api/v1/boxes/{b}/tags", tok["oscar"], {"add": ["tower-B"]})[1]["tags"] == ["tower-B"]
    assert c.call("GET", "/api/v1/boxes?tag=tower-B", tok["vic"])[1]["total"] == 2

    # a campaign over the tag, started (driven by the server) then aborted
    code, cp = c.call("POST", "/api/v1/campaigns", tok["oscar"],
                      {"section": "options", "document": opts, "target": {"tag": "tower-B"},
                       "name": "tier-b", "box_timeout": 30})
    assert code == 201 and cp["author"] == "oscar" and cp["counts"]["pending"] == 2
    assert c.call("POST", "/api/v1/campaigns", tok["oscar"], {"section": "options", "document": opts,
                                                             "target": {"tag": "tower-B"}, "name": "tier-b"})[0] == 409
    assert c.call("POST", "/api/v1/campaigns/tier-b/start", tok["vic"])[0] == 403
    code, cp = c.call("POST", "/api/v1/campaigns/tier-b/start", tok["oscar"])
    assert code == 200 and cp["state"] == "running"
    deadline = time.time() + 30
    while time.time() < deadline:
        st = c.call("GET", "/api/v1/campaigns/tier-b", tok["vic"])[1]
        if st["counts"]["sent"] + st["counts"]["offline"] >= 1:
            break
        time.sleep(0.05)
    assert st["counts"]["pending"] < 2, st["counts"]
    assert c.call("POST", "/api/v1/campaigns/tier-b/abort", tok["oscar"])[1]["state"] == "aborted"
    api.drivers["tier-b"].join(30)
    assert not api.drivers["tier-b"].is_alive()
    assert c.call("GET", "/api/v1/campaigns", tok["vic"])[1]["items"][0]["state"] == "aborted"
    assert c.call("GET", "/api/v1/campaigns/none", tok["vic"])[0] == 404

    # accounts: admin only; a disabled account's tokens stop working
    assert c.call("GET", "/api/v1/accounts", tok["oscar"])[0] == 403
    assert {a["name"] for a in c.call("GET", "/api/v1/accounts", tok["ada"])[1]["items"]} == set(PW)
    code, _ = c.call("POST", "/api/v1/accounts", tok["ada"], {"name": "sam", "role": "viewer",
                                                             "password": "sam-support-42"})
    assert code == 201
    assert c.call("POST", "/api/v1/accounts", tok["ada"], {"name": "sam", "role": "viewer",
                                                          "password": "sam-support-42"})[0] == 409
    assert c.call("PATCH", "/api/v1/accounts/vic", tok["ada"], {"disabled": True})[1]["disabled"] is True
    assert c.call("GET", "/api/v1/me", tok["vic"])[0] == 401
    assert c.call("PATCH", "/api/v1/accounts/sam", tok["ada"], {"role": "operator"})[1]["role"] == "operator"

    # the audit log: who did what
    assert c.call("GET", "/api/v1/audit", tok["oscar"])[0] == 403
    code, log = c.call("GET", "/api/v1/audit?limit=500", tok["ada"])
    did = {(e["author"], e["action"], e["target"]) for e in log["items"]}
    assert {("oscar", "push", "nantes-001/options"), ("oscar", "tags", "nantes-001"),
            ("oscar", "campaign.create", "tier-b"), ("oscar", "campaign.start", "tier-b"),
            ("oscar", "campaign.abort", "tier-b"), ("ada", "account.add", "sam"),
            ("ada", "account.disable", "vic"), ("ada", "account.role", "sam"),
            ("oscar", "place", api.fresh), ("oscar", "alarm.ack", str(a["id"])),
            ("oscar", "alarm.thresholds", "10M")} <= did
    assert not any(PW[n] in json.dumps(log) for n in PW)
    # a body over the limit is refused unread, and the connection closed
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sk:
        sk.sendall(b"PUT /api/v1/boxes/x/tags HTTP/1.1\r\nHost: h\r\nContent-Length: 9999999\r\n\r\n")
        head = sk.recv(200)
    assert head.startswith(b"HTTP/1.1 413")
    assert c.seen == {h for _, _, h, _ in ROUTES}, {h for _, _, h, _ in ROUTES} - c.seen
