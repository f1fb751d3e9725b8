"""The fleet at a glance: one row per box, with alarms.

Fields of telemetry produced by other parts of the agent are read defensively: a
missing or oddly shaped field means "no data", never a crash. The shapes used:

- coverage: data.stations[] with an `id` and per-station band shares `bands`
  {excellent, good, fair, weak, unusable}, fractions 0..1 (or "unsupported").
- speed: data.ratio_down (goodput / plan), data.client_limited, data.plan_down_bps,
  data.down.goodput_bps; data.skipped / data.error when no test ran.
- consumption: data.elec.frames_ok, frames_bad, errors{checksum, malformed,
  interrupted, implausible} (since boot); data.water.l.
- events: data.type == "water_leak".
- reported documents: status "rejected" with rejected{field, reason}.
- desired documents (the store's, recorded by `ops push` and by ingest): a
  section whose desired version is above the version the box reports in force
  is listed in `pending`.
"""
from __future__ import annotations

import time

from backend.readings import (  # noqa: F401
    LEAK_WINDOW_S,
    SPEED_MIN_RATIO,
    TIC_BAD_SHARE,
    _num,
    band_shares,
    speed_ratio,
    station_weak_shares,
    tic_error_detail,
)
from backend.store import EPOCH_STRIDE, Store

ALARMS = {
    "weak_coverage": "a station spends too much time in weak/unusable signal",
    "slow_line": "line speed below 80% of the plan",
    "tic_errors": "the Linky TIC link shows errors",
    "water_leak": "the water meter reported a leak",
    "silent": "no message for more than 3 telemetry intervals",
    "update_rejected": "the box rejected a desired document",
}
def fleet(store: Store, interval: float = 300, weak_share: float = 0.25,
          now: float | None = None) -> list[dict]:
    now = time.time() if now is None else now
    latest = store.latest()
    reported = store.reported()
    desired = store.desired_versions()
    gaps = store.gap_summary()
    raised = store.alarms()
    by_box: dict[str, dict[str, dict]] = {}
    for (box, kind), v in latest.items():
        by_box.setdefault(box, {})[kind] = v
    rows = []
    for b in store.boxes():
        box = b["box"]
        lt = by_box.get(box, {})
        alarms = []
        health = (lt.get("health") or {}).get("data") or {}
        sb = b["state_boot"]
        # the stored boot holds the box's epoch (store.EPOCH_STRIDE): shown apart
        row = {"box": box, "state": b["state"] or "unknown",
               "boot": None if sb is None else sb % EPOCH_STRIDE,
               "epoch": None if sb is None else sb // EPOCH_STRIDE,
               "fw": b["fw"] or health.get("fw"), "last_seen": b["last_seen"],
               "silent_s": None if b["last_seen"] is None else round(now - b["last_seen"], 1),
               "versions": {}, "desired": desired.get(box, {}), "pending": [],
               "backlog": _num(health.get("outbox_backlog")),
               "outbox_dropped": _num(health.get("outbox_dropped")),
               "missing": gaps.get(box, {}).get("missing", 0),
               "declared_dropped": gaps.get(box, {}).get("dropped", 0),
               "speed_ratio": None, "weak_share": None, "alarms": alarms}
        # raised by ingest (e.g. retained_cleared)
        for a in raised.get(box, []):
            alarms.append({"code": a["code"], "detail": f"{a['detail']} ({a['n']}x, last "
                                                         f"{_ago(now - a['last_at'])} ago)"})
        # silence
        if b["last_seen"] is None:
            alarms.append({"code": "silent", "detail": "never seen live since ingest started"})
        elif now - b["last_seen"] > 3 * interval:
            alarms.append({"code": "silent", "detail": f"last message {_ago(now - b['last_seen'])} ago"})
        # updates
        for section, rep in sorted(reported.get(box, {}).items()):
            v = rep.get("version")
            row["versions"][section] = v
            if rep.get("status") == "rejected":
                rj = rep.get("rejected") if isinstance(rep.get("rejected"), dict) else {}
                alarms.append({"code": "update_rejected",
                               "detail": f"{section} v{rj.get('version', '?')}: {rj.get('field', '$')}: "
                                         f"{rj.get('reason', '')}"[:120]})
        for section, want in sorted(row["desired"].items()):
            have = row["versions"].get(section)
            if not isinstance(have, int) or have < want:
                row["pending"].append(section)
        # coverage
        cov = (lt.get("coverage") or {}).get("data")
        if cov is not None:
            shares = station_weak_shares(cov)
            if shares:
                worst = max(shares, key=lambda x: x[1])
                row["weak_share"] = worst[1]
                if worst[1] > weak_share:
                    alarms.append({"code": "weak_coverage",
                                   "detail": f"station {worst[0]} weak {worst[1]:.0%} of the time"})
        # speed
        sp = (lt.get("speed") or {}).get("data")
        r = speed_ratio(sp)
        if r is not None:
            row["speed_ratio"] = round(r, 3)
            if r < SPEED_MIN_RATIO:
                if sp.get("client_limited"):
                    row["speed_note"] = "client-limited: the box could not measure the full plan"
                else:
                    alarms.append({"code": "slow_line", "detail": f"{r:.0%} of the plan"})
        # consumption
        cons = (lt.get("consumption") or {}).get("data")
        tic = tic_error_detail(cons)
        if tic:
            alarms.append({"code": "tic_errors", "detail": tic})
        leak = lt.get("event:water_leak")
        if leak and now - leak["received_at"] <= LEAK_WINDOW_S:
            d = leak.get("data") or {}
            what = ", ".join(f"{k} {v}" for k, v in d.items() if k != "type")[:80]
            alarms.append({"code": "water_leak", "detail": f"{_ago(now - leak['received_at'])} ago"
                                                           + (f": {what}" if what else "")})
        rows.append(row)
    return rows


def summary(rows: list[dict]) -> dict:
    by_alarm: dict[str, int] = {}
    for r in rows:
        for a in {a["code"] for a in r["alarms"]}:
            by_alarm[a] = by_alarm.get(a, 0) + 1
    ratios = sorted(r["speed_ratio"] for r in rows if r["speed_ratio"] is not None)
    return {
        "boxes": len(rows),
        "online": sum(1 for r in rows if r["state"] == "online"),
        "offline": sum(1 for r in rows if r["state"] == "offline"),
        "with_alarms": sum(1 for r in rows if r["alarms"]),
        "pending_updates": sum(len(r.get("pending") or ()) for r in rows),
        "alarms": by_alarm,
        "speed_ratio_median": ratios[len(ratios) // 2] if ratios else None,
        "missing_messages": sum(r["missing"] for r in rows),
        "declared_dropped": sum(r["declared_dropped"] for r in rows),
    }


def _ago(s: float) -> str:
    s = max(0, int(s))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}min"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def print_table(rows: list[dict], counters: dict | None = None) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table
    con = Console() if sys.stdout.isatty() else Console(width=160)
    t = Table(title="homebox fleet", show_lines=False)
    for col in ("box", "state", "last seen", "versions", "backlog", "dropped", "missing", "speed", "alarms"):
        t.add_column(col, overflow="fold")
    for r in rows:
        state = {"online": "[green]online[/]", "offline": "[red]offline[/]"}.get(r["state"], r["state"])
        vers = " ".join(_version(r, k) for k in sorted(set(r["versions"]) | set(r.get("desired") or {}))) or "-"
        alarms = "\n".join(f"[bold red]{a['code']}[/] {a['detail']}" for a in r["alarms"]) or "[green]ok[/]"
        t.add_row(r["box"], state, "-" if r["silent_s"] is None else _ago(r["silent_s"]) + " ago", vers,
                  _s(r["backlog"]), _s(r["outbox_dropped"]), _s(r["missing"]),
                  "-" if r["speed_ratio"] is None else f"{r['speed_ratio']:.0%}", alarms)
    con.print(t)
    s = summary(rows)
    line = (f"{s['boxes']} boxes: {s['online']} online, {s['offline']} offline, "
            f"{s['with_alarms']} with alarms")
    if s["alarms"]:
        line += " (" + ", ".join(f"{k} {v}" for k, v in sorted(s["alarms"].items())) + ")"
    if s["pending_updates"]:
        line += f"; {s['pending_updates']} updates not applied yet (versions have→wanted)"
    con.print(line)
    if counters:
        con.print("ingest totals: " + ", ".join(f"{k} {v}" for k, v in counters.items()))


def _version(r: dict, section: str) -> str:
    """`options=3`, or `options=3→4` while the box has not applied what the store wants."""
    have = r["versions"].get(section)
    text = f"{section}={'-' if have is None else have}"
    if section in (r.get("pending") or ()):
        text += f"→{r['desired'][section]}"
    return text


def _s(x) -> str:
    return "-" if x is None else str(x)
