"""Alarms with a lifecycle, on SQLite and PostgreSQL: raised, cleared and raised
again by the real ingest as messages arrive through a real Mosquitto; thresholds
per plan; acknowledged through the real API server and the console (audited);
delivered to a local webhook receiver as Alertmanager payloads, retried after the
receiver fails; the time-based alarms (never_connected, silent, expiry) with an
injected clock."""
from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from backend import accounts, alarms, inventory
from backend.alarm_loop import deliver_once, outbox, sweep
from backend.api import Api, serve
from backend.fleetq import search_boxes
from backend.ingest import Ingest
from backend.openapi import document
from backend.store import Store
from tests.helpers import free_port, publish, wait_until
from tests.test_api import Client
from tests.test_ingest import env, tel
from tests.test_status_report import _cons, _speed


class Receiver:
    """A webhook receiver on loopback: answers 500 to the first `fail` POSTs."""

    def __init__(self, fail: int = 0):
        self.fail, self.bodies, self.codes = fail, [], []
        rec = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                code = 500 if len(rec.codes) < rec.fail else 200
                rec.codes.append(code)
                if code == 200:
                    rec.bodies.append(json.loads(body))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()
        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = "http://127.0.0.1:%d/hook" % self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def alerts(self) -> list[dict]:
        return [a for b in self.bodies for a in b["alerts"]]

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


def _active(s, box, kind):
    return [a for a in alarms.list_alarms(s, {"box": box, "kind": kind, "state": "all"})["items"]
            if a["cleared_at"] is None]


def _speed_msg(box, seq, ratio):
    return f"homebox/v1/{box}/telemetry/speed", env(box, 1, seq, kind="speed", data=_speed(ratio))


def test_lifecycle_through_ingest_webhook_and_api(broker, db_url):
    s = Store(db_url)
    # thresholds per plan: a 6M line alarms below 50 % of its plan, the others below 80 %
    alarms.set_thresholds(s, "6M", speed_min_ratio=0.5)
    s.put_desired("P", "options", {"version": 1, "speed_tier": "6M"})
    rx = Receiver(fail=2)
    ing = Ingest(f"mqtt://127.0.0.1:{broker.port}", s, client_id="ing-alarms", batch_wait=0.05,
                 log=lambda *a: None, alarm_webhook=rx.url)
    th = threading.Thread(target=ing.run, daemon=True)
    th.start()
    try:
        assert ing.subscribed.wait(10)
        for box, ratio in (("S", 0.6), ("P", 0.6)):
            publish(broker.port, *_speed_msg(box, 1, ratio), retain=False)
        raised = wait_until(lambda: _active(s, "S", "slow_line"), 20, "slow_line raised")
        assert raised[0]["severity"] == "warning" and raised[0]["detail"] == "60% of the plan"
        wait_until(lambda: s.latest().get(("P", "speed")), 20, "P's speed stored")
        assert _active(s, "P", "slow_line") == []                   # 60 % is fine on its plan
        # cleared by a good test, raised again by a bad one: a new row, the history kept
        publish(broker.port, *_speed_msg("S", 2, 0.95), retain=False)
        wait_until(lambda: not _active(s, "S", "slow_line"), 20, "slow_line cleared")
        publish(broker.port, *_speed_msg("S", 3, 0.55), retain=False)
        again = wait_until(lambda: _active(s, "S", "slow_line"), 20, "slow_line raised again")
        hist = alarms.list_alarms(s, {"box": "S", "kind": "slow_line", "state": "all"})["items"]
        assert len(hist) == 2 and hist[0]["id"] == again[0]["id"] and hist[1]["cleared_at"] is not None
        # tic_errors from the frames since the last report: over once good frames follow
        publish(broker.port, "homebox/v1/S/telemetry/consumption",
                env("S", 1, 4, kind="consumption", data=_cons(0, 100, 1, bad=200, ok=1000)), retain=False)
        wait_until(lambda: _active(s, "S", "tic_errors"), 20, "tic_errors raised")
        publish(broker.port, "homebox/v1/S/telemetry/consumption",
                env("S", 1, 5, kind="consumption", data=_cons(0, 100, 1, bad=200, ok=3000)), retain=False)
        wait_until(lambda: not _active(s, "S", "tic_errors"), 20, "tic_errors cleared (no reboot)")
        # the last will: offline raises, online clears
        publish(broker.port, "homebox/v1/S/status", {"state": "offline", "box": "S", "boot": 1})
        wait_until(lambda: _active(s, "S", "offline"), 20, "offline raised")
        publish(broker.port, "homebox/v1/S/status", {"state": "online", "box": "S", "boot": 1})
        wait_until(lambda: not _active(s, "S", "offline"), 20, "offline cleared")

        # the webhook: the receiver failed twice, the loop retried with backoff
        def delivered():
            got = {(a["labels"]["alertname"], a["status"]) for a in rx.alerts() if a["labels"]["box"] == "S"}
            return got >= {("slow_line", "firing"), ("slow_line", "resolved"), ("offline", "resolved")}
        wait_until(delivered, 30, "alerts delivered to the webhook")
        assert rx.codes[:2] == [500, 500]
        body = rx.bodies[0]
        assert body["version"] == "4" and body["status"] in ("firing", "resolved") and body["receiver"]
        for a in rx.alerts():
            assert set(a) >= {"status", "labels", "annotations", "startsAt", "endsAt", "fingerprint"}
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", a["startsAt"])
            assert (a["endsAt"] == "0001-01-01T00:00:00Z") == (a["status"] == "firing")
            assert a["labels"]["severity"] in ("info", "warning", "critical")
        assert ing.alarms.totals["failed"] >= 1
    finally:
        ing.stop()
        th.join(20)
        rx.stop()
    wait_until(lambda: not outbox(s), 5, "outbox drained")

    # acknowledgement through the real server: operator only, audited, once
    for name, role in (("oscar", "operator"), ("vic", "viewer")):
        accounts.add(s, name, role, f"{name}-password-1", author="test")
    tok = {n: accounts.new_token(s, n, "t") for n in ("oscar", "vic")}
    sess = accounts.new_token(s, "oscar", "console", kind="session", ttl=600)
    s.close()
    api = Api(db_url)
    srv = serve(api, "127.0.0.1", 0)
    url = "http://%s:%d" % srv.server_address[:2]
    c = Client(url, document())
    try:
        code, page = c.call("GET", "/api/v1/alarms?box=S", tok["vic"])
        assert code == 200 and [a["kind"] for a in page["items"]] == ["slow_line"]
        aid = page["items"][0]["id"]
        assert c.call("POST", f"/api/v1/alarms/{aid}/ack", tok["vic"])[0] == 403
        code, a = c.call("POST", f"/api/v1/alarms/{aid}/ack", tok["oscar"])
        assert code == 200 and a["acknowledged_by"] == "oscar" and a["active"]     # acked, still active
        assert c.call("POST", f"/api/v1/alarms/{aid}/ack", tok["oscar"])[0] == 409
        assert c.call("POST", "/api/v1/alarms/999999/ack", tok["oscar"])[0] == 404
        assert c.call("GET", "/api/v1/alarms?acknowledged=false&box=S", tok["vic"])[1]["items"] == []
        code, d = c.call("GET", "/api/v1/boxes/S", tok["vic"])
        assert {x["code"] for x in d["alarms"]} >= {"slow_line"} and len(d["alarm_history"]) >= 4
        # keyset paging over the whole history
        code, p1 = c.call("GET", "/api/v1/alarms?state=all&limit=2", tok["vic"])
        code, p2 = c.call("GET", "/api/v1/alarms?state=all&limit=2&cursor=" + urllib.parse.quote(p1["next"]),
                          tok["vic"])
        assert not {a["id"] for a in p1["items"]} & {a["id"] for a in p2["items"]} and p2["items"]
        assert c.call("GET", "/api/v1/alarms?state=nope", tok["vic"])[0] == 400
        # bad input: a clear error, nothing changed
        for bad in ("cursor=nan:1", "cursor=1:99999999999999999999", "cursor=x", "box=a%00b", "severity=loud",
                    "acknowledged=maybe", "limit=0"):
            assert c.call("GET", "/api/v1/alarms?" + bad, tok["vic"])[0] == 400, bad
        assert c.call("POST", "/api/v1/alarms/99999999999999999999/ack", tok["oscar"])[0] == 404
        for body in ({"backlog_max": 1e30}, {"weak_share": -1}, {"speed_min_ratio": [1]}, {"x": 1}, {}):
            assert c.call("PUT", "/api/v1/alarm-thresholds/6M", tok["oscar"], body)[0] == 400, body
        assert c.call("GET", "/api/v1/alarm-thresholds", tok["vic"])[1]["items"][0]["effective"][
            "speed_min_ratio"] == 0.8
        # the console: the other alarm (offline was cleared; raise tic_errors again) acked by a form
        st = Store(db_url)
        st.write_batch([tel("S", 1, 6, kind="consumption", data=_cons(0, 1, 1, bad=900, ok=3100))])
        tic = _active(st, "S", "tic_errors")[0]
        st.close()
        page_html = _get(url + "/alarms", sess)
        assert f'action="/alarms/{tic["id"]}/ack"' in page_html
        token = re.search(r'name="csrf" value="([0-9a-f]+)"', page_html).group(1)
        assert _post(url + f"/alarms/{tic['id']}/ack", sess, {"csrf": "bad", "back": "/alarms"}) == 403
        assert _post(url + f"/alarms/{tic['id']}/ack", sess, {"csrf": token, "back": "/alarms"}) == 303
        st = Store(db_url)
        log = accounts.audit_log(st, limit=50)
        st.close()
        acks = [(e["author"], e["target"], e["detail"].get("via")) for e in log if e["action"] == "alarm.ack"]
        assert ("oscar", str(aid), None) in acks and ("oscar", str(tic["id"]), "console") in acks
    finally:
        srv.shutdown()
        srv.server_close()
        api.close()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k):
        return None


def _get(url, sess) -> str:
    req = urllib.request.Request(url, headers={"Cookie": f"hb_session={sess}", "Accept-Language": "fr"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read().decode()


def _post(url, sess, form) -> int:
    req = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode(), method="POST",
                                 headers={"Cookie": f"hb_session={sess}"})
    try:
        with urllib.request.build_opener(_NoRedirect).open(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_time_based_alarms_with_an_injected_clock(db_url):
    s = Store(db_url)
    t0 = 1_800_000_000.0
    inventory.import_rows(s, [{"box": "HB-NEVER", "verdict": "pass", "tested_at": t0},
                              {"box": "HB-LATER", "verdict": "pass", "tested_at": t0}])
    grace = 7 * 86400
    assert sweep(s, now=t0 + 6 * 86400, grace=grace)["raised"] == 0
    assert alarms.list_alarms(s, {"kind": "never_connected"})["items"] == []
    done = sweep(s, now=t0 + 8 * 86400, grace=grace)
    assert done["raised"] == 2
    nc = alarms.list_alarms(s, {"kind": "never_connected"})["items"]
    assert {a["box"] for a in nc} == {"HB-NEVER", "HB-LATER"} and "8 days ago" in nc[0]["detail"]
    assert sweep(s, now=t0 + 9 * 86400, grace=grace)["raised"] == 0                 # once, not every sweep
    listed = search_boxes(s, {"alarm": "never_connected"}, grace=grace, now=t0 + 8 * 86400)
    assert [(b["box"], b["state"], b["alarms"]) for b in listed["items"]] == [
        ("HB-LATER", "never_connected", 1), ("HB-NEVER", "never_connected", 1)]
    # one of them connects at last: its first live message clears the alarm
    s.write_batch([tel("HB-LATER", 1, 1)])
    assert [a["box"] for a in alarms.list_alarms(s, {"kind": "never_connected"})["items"]] == ["HB-NEVER"]
    # silent: raised by the sweep after 3 intervals, cleared by the next message
    now = time.time()
    assert sweep(s, now=now + 60, interval=300)["raised"] == 0
    sweep(s, now=now + 3 * 300 + 5, interval=300)
    assert [a["box"] for a in alarms.list_alarms(s, {"kind": "silent"})["items"]] == ["HB-LATER"]
    s.write_batch([tel("HB-LATER", 1, 2)])
    assert alarms.list_alarms(s, {"kind": "silent"})["items"] == []
    # a leak event raises water_leak; it ends a day after the last event
    s.write_batch([tel("HB-LATER", 1, 3, kind="event", data={"type": "water_leak", "rule": "duration", "duration_s": 7200})])
    assert alarms.list_alarms(s, {"kind": "water_leak"})["items"][0]["severity"] == "critical"
    sweep(s, now=time.time() + 3600)
    assert len(alarms.list_alarms(s, {"kind": "water_leak"})["items"]) == 1
    sweep(s, now=time.time() + alarms.EXPIRE_S + 60)
    assert alarms.list_alarms(s, {"kind": "water_leak"})["items"] == []
    assert alarms.list_alarms(s, {"kind": "water_leak", "state": "cleared"})["items"][0]["box"] == "HB-LATER"
    s.close()


def test_new_alarm_kinds_from_the_data(db_url):
    s = Store(db_url)
    # outbox backlog over the default threshold, then back to normal
    h = env("B", 1, 1)
    h["data"]["outbox_backlog"] = 400
    s.write_batch([tel("B", 1, 1, data=h["data"])])
    assert alarms.list_alarms(s, {"kind": "outbox_backlog"})["items"][0]["box"] == "B"
    s.write_batch([tel("B", 1, 2)])
    assert alarms.list_alarms(s, {"kind": "outbox_backlog"})["items"] == []
    # a sequence gap (6 missing), then filled by the late arrivals
    s.write_batch([tel("B", 1, 9)])
    assert alarms.list_alarms(s, {"kind": "sequence_gap"})["items"][0]["detail"] == "6 messages missing"
    s.write_batch([tel("B", 1, i) for i in range(3, 9)])
    assert alarms.list_alarms(s, {"kind": "sequence_gap"})["items"] == []
    # declared drops
    s.write_batch([tel("B", 1, 10, kind="event", data={"type": "outbox_dropped", "count": 3, "dropped_total": 3,
                                                        "ranges": [[1, 20, 22]]})])
    assert "3 messages" in alarms.list_alarms(s, {"kind": "declared_drops"})["items"][0]["detail"]
    # a rejected signature is its own, critical kind
    from backend.ingest import classify
    rep = {"section": "parental", "box": "B", "version": 0, "status": "rejected",
           "rejected": {"field": "sig", "reason": "does not match", "version": 2}}
    s.write_batch([classify("homebox/v1/B/reported/parental", json.dumps(rep).encode(), retained=True)])
    sig = alarms.list_alarms(s, {"kind": "signature_rejected"})["items"]
    assert sig and sig[0]["severity"] == "critical" and "parental v2" in sig[0]["detail"]
    # an alarm of a thing that happened clears when acknowledged
    s.note_alarm("B", "retained_cleared", "retained message on homebox/v1/B/telemetry/health")
    rc = alarms.list_alarms(s, {"kind": "retained_cleared"})["items"][0]
    a = alarms.acknowledge(s, rc["id"], "oscar")
    assert a["acknowledged_by"] == "oscar" and a["cleared_at"] is not None
    with pytest.raises(alarms.AlarmError):
        alarms.set_thresholds(s, "10M", speed_min_ratio="fast")
    s.close()


def test_webhook_retries_with_backoff_when_the_receiver_is_down(db_url):
    s = Store(db_url)
    s.write_batch([tel("W", 1, 1, kind="speed", data=_speed(0.3))])
    assert [r["status"] for r in outbox(s)] == ["firing"]
    down = f"http://127.0.0.1:{free_port()}/hook"          # nobody listens there
    t = time.time()
    r = deliver_once(s, down, now=t, backoff=2.0)
    assert r["failed"] == 1 and r["retry_in_s"] == 2.0
    assert outbox(s)[0]["attempts"] == 1 and outbox(s)[0]["last_error"]
    rx = Receiver()
    try:
        assert deliver_once(s, rx.url, now=t + 1)["sent"] == 0          # not due yet
        r = deliver_once(s, down, now=t + 2.5, backoff=2.0)
        assert r["retry_in_s"] == 4.0                                    # doubled
        assert deliver_once(s, rx.url, now=t + 7, external_url="https://ops.example")["sent"] == 1
        assert outbox(s) == []
        a = rx.alerts()[0]
        assert a["labels"] == {"alertname": "slow_line", "box": "W", "severity": "warning", "source": "homebox"}
        assert a["annotations"]["description"] == "30% of the plan"
        assert a["generatorURL"] == "https://ops.example/boxes/W" and rx.bodies[0]["status"] == "firing"
    finally:
        rx.stop()
    s.close()
