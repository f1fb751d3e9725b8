"""Fleet status (alarms) and the report (PNG + HTML), from a store filled with a week
of synthetic telemetry for a handful of boxes, each with one known problem."""
from __future__ import annotations

import json
import struct
import subprocess
import sys

from backend import status
from backend.ingest import classify
from backend.store import Store
from tests.helpers import ROOT

NOW = 1767225600 + 7 * 86400          # the synthetic week ends here
HOUR = 3600
GOOD = {"excellent": 0.55, "good": 0.3, "fair": 0.1, "weak": 0.05, "unusable": 0.0}
WEAK = {"excellent": 0.05, "good": 0.15, "fair": 0.25, "weak": 0.35, "unusable": 0.2}


def _msg(box, seq, kind, data, ts, boot=1):
    env = {"v": 1, "box": box, "boot": boot, "seq": seq, "ts": ts, "kind": kind, "data": data}
    topic = f"homebox/v1/{box}/event" if kind == "event" else f"homebox/v1/{box}/telemetry/{kind}"
    r = classify(topic, json.dumps(env).encode(), received_at=ts)
    assert r.what == "msg", r.errors
    return r


def _health(seq, backlog=0, dropped=0):
    return {"fw": "0.1.0", "uptime_s": seq * 300, "outbox_backlog": backlog, "outbox_bytes": backlog * 200,
            "outbox_dropped": dropped, "reconnects": 0}


def _cons(start, wh, litres, bad=0, ok=3000, checksum=0):
    return {"scope": "hour", "start": start, "end": start + HOUR, "detailed": False,
            "elec": {"mode": "historic", "meter": "0123456789abcdef", "wh": {"BASE": wh}, "wh_total": wh,
                     "va_max": 2400, "frames_ok": ok, "frames_bad": bad,
                     "errors": {"checksum": checksum, "malformed": 0, "interrupted": 0, "implausible": 0}},
            "water": {"l": litres, "index_l": 1000.0}}


def _dir(g, limited):
    return {"goodput_bps": g, "mean_bps": int(g * 0.9), "bytes": g // 2, "payload": g // 2, "ms": 8000,
            "stop": "time", "samples": 28, "window_ms": 7000, "streams_ok": 6, "client_limited": limited}


def _speed(ratio, plan=10_000_000, limited=False):
    g = int(plan * ratio)
    return {"server": "speed.example", "streams": 6, "latency_ms": 20, "client_limited": limited,
            "ceiling_bps": g if limited else 14_000_000, "window": 5744, "budget": 20_000_000,
            "plan_down_bps": plan, "plan_up_bps": plan // 10, "ratio_down": round(ratio, 3),
            "ratio_up": 0.95, "down": _dir(g, limited), "up": _dir(int(plan // 10 * 0.95), False),
            "bytes": 1000}


PROFILES = {
    "nantes-001": {},                                  # healthy
    "nantes-002": {"slow": 0.6},                       # line at 60% of plan
    "nantes-003": {"weak": True},                      # a bedroom with poor Wi-Fi
    "brest-001": {"tic": True},                        # TIC link full of checksum errors
    "brest-002": {"leak": True},                       # water leak
    "brest-003": {"rejected": True},                   # rejected a parental update
    "brest-004": {"silent": True, "limited": True},    # gone quiet two hours ago; client-limited speed
}


def populate(store: Store, now: float = NOW) -> None:
    recs = []
    for i, (box, p) in enumerate(PROFILES.items()):
        seq = 0
        end = now - 2 * HOUR if p.get("silent") else now
        t = now - 7 * 86400
        recs.append(classify(f"homebox/v1/{box}/status",
                             json.dumps({"state": "offline" if p.get("silent") else "online",
                                         "box": box, "boot": 1, "fw": "0.1.0"}).encode(), received_at=end))
        h = 0
        while t < end:
            seq += 1
            recs.append(_msg(box, seq, "health", _health(seq, backlog=3 if i == 1 else 0), t))
            seq += 1
            hour = (t // HOUR) % 24
            bands = dict(WEAK if p.get("weak") and 18 <= hour or p.get("weak") and hour < 8 else GOOD)
            bands = {k: v + (0.01 * ((h + i) % 3) if k == "excellent" else 0) for k, v in bands.items()}
            stations = [{"id": f"{j + 1:016x}", "assoc_s": 3600, "seen_s": 3600,
                         "signal_strength": {"min": -82, "avg": -60, "max": -45},
                         "bands": bands if j == 0 else GOOD} for j in range(3)]
            recs.append(_msg(box, seq, "coverage", {"interval_s": 3600, "samples": 60, "rssi": "ok",
                                                    "stations": stations, "scan": "unsupported",
                                                    "channel": "unsupported"}, t))
            seq += 1
            base_wh = 300 + 500 * (1 if 7 <= hour <= 9 or 18 <= hour <= 22 else 0) + 37 * ((h * 7 + i) % 5)
            litres = (40 if hour in (7, 8, 20) else 3) + (25 if p.get("leak") and h > 120 else 0)
            bad = 400 if p.get("tic") else 2
            recs.append(_msg(box, seq, "consumption", _cons(int(t), base_wh, litres, bad=bad,
                                                             checksum=bad * 3), t))
            if hour == 3:
                seq += 1
                ratio = p.get("slow", 0.93) + 0.03 * ((h + i) % 3)
                if p.get("limited"):
                    ratio = 0.55
                recs.append(_msg(box, seq, "speed", _speed(ratio, limited=p.get("limited", False)), t))
            if p.get("leak") and h == 150:
                seq += 1
                recs.append(_msg(box, seq, "event", {"type": "water_leak", "rule": "duration",
                                                     "duration_s": 7200}, t))
            t += HOUR
            h += 1
        rep = {"box": box, "section": "parental", "version": 3, "status": "applied"}
        if p.get("rejected"):
            rep = {"box": box, "section": "parental", "version": 3, "status": "rejected",
                   "rejected": {"version": 4, "field": "profiles[0].schedule", "reason": "bad time"}}
        recs.append(classify(f"homebox/v1/{box}/reported/parental", json.dumps(rep).encode(),
                             received_at=end))
    for i in range(0, len(recs), 1000):
        store.write_batch(recs[i:i + 1000])


def test_status_raises_each_alarm_on_the_right_box(tmp_path):
    s = Store(f"sqlite:///{tmp_path}/b.db")
    populate(s)
    rows = {r["box"]: r for r in status.fleet(s, interval=300, now=NOW)}
    codes = {b: sorted({a["code"] for a in r["alarms"]}) for b, r in rows.items()}
    assert codes == {
        "nantes-001": [], "nantes-002": ["slow_line"], "nantes-003": ["weak_coverage"],
        "brest-001": ["tic_errors"], "brest-002": ["water_leak"], "brest-003": ["update_rejected"],
        "brest-004": ["silent"],
    }
    assert rows["brest-004"]["state"] == "offline" and rows["nantes-001"]["state"] == "online"
    assert rows["brest-004"]["speed_note"].startswith("client-limited")   # not a slow_line alarm
    assert rows["nantes-002"]["backlog"] == 3
    assert rows["brest-003"]["versions"] == {"parental": 3}
    assert "profiles[0].schedule" in rows["brest-003"]["alarms"][0]["detail"]
    assert 0.5 < rows["nantes-002"]["speed_ratio"] < 0.7
    # thresholds are parameters: a looser weak-share threshold clears the alarm
    rows2 = {r["box"]: r for r in status.fleet(s, interval=300, weak_share=0.9, now=NOW)}
    assert rows2["nantes-003"]["alarms"] == []
    # a longer interval makes two hours of silence normal
    rows3 = {r["box"]: r for r in status.fleet(s, interval=3600, now=NOW)}
    assert rows3["brest-004"]["alarms"] == []
    sm = status.summary(list(rows.values()))
    assert sm["boxes"] == 7 and sm["with_alarms"] == 6 and sm["offline"] == 1


def test_defensive_reading_of_odd_payloads():
    assert status.station_weak_shares({"stations": [{"bands": {"weak": 0.3, "unusable": 0.1, "good": 0.6}}]}) \
        == [("#1", 0.4)]
    assert status.station_weak_shares({"stations": "n/a"}) == []
    assert status.station_weak_shares({"stations": [None, {"bands": {}}]}) == []
    assert status.speed_ratio({"skipped": "budget"}) is None
    assert status.speed_ratio({"down": {"goodput_bps": 5}, "plan_down_bps": 10}) == 0.5
    assert status.tic_error_detail({"elec": {"frames_ok": 0, "frames_bad": 4}}).startswith("no valid frame")
    assert status.tic_error_detail({"elec": "x"}) is None
    assert status.tic_error_detail({"elec": {"frames_ok": 1000, "frames_bad": 1}}) is None
    # one cut frame early after boot is no link fault; three at that share are
    assert status.tic_error_detail({"elec": {"frames_ok": 47, "frames_bad": 1}}) is None
    assert status.tic_error_detail({"elec": {"frames_ok": 97, "frames_bad": 3}}) == "3 of 100 frames bad since boot"


def _png_size(path):
    b = path.read_bytes()
    assert b[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", b[16:24])


def test_report_writes_pngs_and_html_via_cli(tmp_path):
    db = f"sqlite:///{tmp_path}/b.db"
    s = Store(db)
    populate(s, now=NOW)
    s.close()
    out = tmp_path / "report"
    r = subprocess.run([sys.executable, "-m", "homebox.cli", "ops", "report", "--db", db, "--out", str(out),
                        "--max-boxes", "3"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    index = (out / "index.html").read_text()
    assert "fleet.png" in index and index.count("<img") == 4
    assert "nantes-002" in index and "slow_line" in index
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) == 4 and "fleet.png" in pngs
    # boxes with alarms come first
    assert "box-nantes-001.png" not in pngs
    w, h = _png_size(out / "fleet.png")
    assert w >= 1000 and h >= 400
    for p in out.glob("box-*.png"):
        w, h = _png_size(p)
        assert w >= 1000 and h >= 1000
        assert p.stat().st_size > 40_000          # real plots, not "no data" placeholders


def test_status_cli_json(tmp_path):
    db = f"sqlite:///{tmp_path}/b.db"
    s = Store(db)
    populate(s, now=NOW)
    s.close()
    r = subprocess.run([sys.executable, "-m", "homebox.cli", "ops", "status", "--db", db, "--json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert {b["box"] for b in doc["boxes"]} == set(PROFILES)
    # real time is far past the synthetic week: every box is silent now
    assert all(any(a["code"] == "silent" for a in b["alarms"]) for b in doc["boxes"])
    assert doc["counters"]["stored"] > 1000
    r = subprocess.run([sys.executable, "-m", "homebox.cli", "ops", "status", "--db", db],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "nantes-002" in r.stdout and "slow_line" in r.stdout
