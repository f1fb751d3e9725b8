"""`homebox ops report`: PNG plots and one HTML page, for people.

- fleet.png: how lines compare with their plans (distribution of speed ratios) and
  which alarms are raised how often.
- box-<id>.png per box: Wi-Fi coverage bands over time, speed against the plan,
  electricity and water consumption.
- index.html: the fleet summary, the boxes with alarms, and the per-box plots.
"""
from __future__ import annotations

import datetime as dt
import html
import re
import time
from pathlib import Path

from backend import status
from backend.store import Store

BANDS = [("excellent", "≥ -50 dBm", "#1a9641"), ("good", "≥ -67", "#a6d96a"),
         ("fair", "≥ -75", "#ffd966"), ("weak", "≥ -85", "#fdae61"), ("unusable", "< -85", "#d7191c")]
DOWN_C, UP_C, PLAN_C = "#2c7bb6", "#7b3294", "#555555"


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({"font.size": 11, "axes.titlesize": 13, "axes.titleweight": "bold",
                         "axes.spines.top": False, "axes.spines.right": False,
                         "axes.grid": True, "grid.alpha": 0.3, "figure.dpi": 100})
    return plt


def _when(m: dict) -> dt.datetime:
    t = m.get("ts") or m.get("received_at")
    return dt.datetime.fromtimestamp(t, dt.timezone.utc)


def _safe(box: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", box)


def _time_axis(ax, plt):
    import matplotlib.dates as mdates
    loc = mdates.AutoDateLocator(minticks=4, maxticks=8)
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))


def _empty(ax, what: str):
    ax.text(0.5, 0.5, f"no {what} data yet", transform=ax.transAxes, ha="center", va="center",
            color="#888888", fontsize=12)
    ax.set_yticks([])
    ax.grid(False)


def plot_box(store: Store, box: str, out: Path, row: dict | None = None,
             weak_share: float = 0.25) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(4, 1, figsize=(11, 12.5), sharex=False,
                             gridspec_kw={"height_ratios": [1.1, 1, 1, 0.8]})
    title = f"Box {box}"
    if row:
        title += f" — {row['state']}"
        if row["alarms"]:
            title += " — alarms: " + ", ".join(sorted({a["code"] for a in row["alarms"]}))
    fig.suptitle(title, fontsize=15, fontweight="bold", x=0.01, ha="left",
                 color="#b2182b" if row and row["alarms"] else "black")

    # 1. coverage bands over time
    ax = axes[0]
    cov = [(m, status.band_shares(m["data"])) for m in store.series(box, "coverage")]
    cov = [(m, b) for m, b in cov if b]
    if cov:
        xs = [_when(m) for m, _b in cov]
        ys = [[100 * b.get(name, 0) for _m, b in cov] for name, _l, _c in BANDS]
        ax.stackplot(xs, ys, labels=[f"{n} ({lab})" for n, lab, _c in BANDS],
                     colors=[c for _n, _l, c in BANDS], alpha=0.9, step="post" if len(xs) < 3 else None)
        ax.axhline(100 * (1 - weak_share), color="black", ls="--", lw=1.2)
        ax.annotate(f"alarm when weak + unusable > {weak_share:.0%}", (0.995, 100 * (1 - weak_share)),
                    xycoords=("axes fraction", "data"), xytext=(0, -4), textcoords="offset points",
                    ha="right", va="top", fontsize=9, bbox={"fc": "white", "ec": "none", "alpha": 0.8})
        ax.set_ylim(0, 100)
        ax.set_ylabel("% of time")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9, frameon=False,
                  title="signal band", title_fontsize=9)
        _time_axis(ax, plt)
    else:
        _empty(ax, "coverage")
    ax.set_title("Wi-Fi coverage: share of time per signal band (worst station in each report)",
                 loc="left")

    # 2. speed against the plan
    ax = axes[1]
    sp = [m for m in store.series(box, "speed") if isinstance(m["data"].get("down"), dict)
          or isinstance(m["data"].get("up"), dict)]
    if sp:
        xs = [_when(m) for m in sp]

        def mbps(m, k):
            d = m["data"].get(k)
            g = d.get("goodput_bps") if isinstance(d, dict) else None
            return g / 1e6 if isinstance(g, (int, float)) else None

        def plan(m, k):
            p = m["data"].get(f"plan_{k}_bps")
            return p / 1e6 if isinstance(p, (int, float)) else None

        for k, c, label in (("down", DOWN_C, "download"), ("up", UP_C, "upload")):
            pts = [(x, mbps(m, k)) for x, m in zip(xs, sp) if mbps(m, k) is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=c, ms=5, lw=1.2,
                        label=f"{label} measured")
            pl = [(x, plan(m, k)) for x, m in zip(xs, sp) if plan(m, k)]
            if len(pl) == 1:          # one test knew the plan: a step would have no width
                ax.plot([pl[0][0]], [pl[0][1]], "_", color=c, ms=28, mew=2, label=f"{label} plan")
                ax.plot([pl[0][0]] * 2, [0.8 * pl[0][1], pl[0][1]], color=c, lw=6, alpha=0.12)
            elif pl:
                ax.step([p[0] for p in pl], [p[1] for p in pl], where="post", color=c, lw=1.5,
                        ls="--", alpha=0.8, label=f"{label} plan")
                ax.fill_between([p[0] for p in pl], [0.8 * p[1] for p in pl], [p[1] for p in pl],
                                step="post", color=c, alpha=0.08)
            lim = [x for x, m in zip(xs, sp) if isinstance(m["data"].get(k), dict)
                   and m["data"][k].get("client_limited") and mbps(m, k) is not None]
            if lim:
                ax.plot(lim, [mbps(m, k) for x, m in zip(xs, sp) if x in lim], "x", color="black",
                        ms=9, label="client-limited" if k == "down" else None)
        ax.set_ylim(bottom=0)
        ax.set_ylabel("Mbit/s")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9, frameon=False)
        _time_axis(ax, plt)
        ax.text(0.005, 0.02, "shaded: 80–100% of plan; below is an alarm", transform=ax.transAxes,
                fontsize=8, color="#666666")
    else:
        _empty(ax, "speed test")
    ax.set_title("Line speed against the plan", loc="left")

    # 3. electricity, 4. water
    cons = [m for m in store.series(box, "consumption") if m["data"].get("scope") == "hour"]
    if not cons:
        cons = [m for m in store.series(box, "consumption") if m["data"].get("scope") == "day"]
    ax, axw = axes[2], axes[3]
    scope = cons[0]["data"].get("scope") if cons else "hour"
    width = (1 / 24 if scope == "hour" else 1) * 0.9

    def start(m):
        s = m["data"].get("start")
        return dt.datetime.fromtimestamp(s, dt.timezone.utc) if isinstance(s, (int, float)) else _when(m)

    el = [(start(m), m["data"]["elec"].get("wh_total")) for m in cons
          if isinstance(m["data"].get("elec"), dict)
          and isinstance(m["data"]["elec"].get("wh_total"), (int, float))]
    if el:
        ax.bar([e[0] for e in el], [e[1] / 1000 for e in el], width=width, align="edge", color="#e66101")
        ax.set_ylabel(f"kWh per {scope}")
        _time_axis(ax, plt)
    else:
        _empty(ax, "electricity")
    ax.set_title("Electricity (Linky TIC)", loc="left")
    wa = [(start(m), m["data"]["water"].get("l")) for m in cons if isinstance(m["data"].get("water"), dict)
          and isinstance(m["data"]["water"].get("l"), (int, float))]
    if wa:
        axw.bar([w[0] for w in wa], [w[1] for w in wa], width=width, align="edge", color="#0571b0")
        axw.set_ylabel(f"litres per {scope}")
        _time_axis(axw, plt)
        leaks = store.events(box, "water_leak", 20)
        for leak in leaks:
            axw.axvline(_when(leak), color="#d7191c", lw=2)
        if leaks:
            # one label, on the latest: labels on close lines would overprint each other
            text = "leak reported" if len(leaks) == 1 else f"leak reported ({len(leaks)}x)"
            axw.annotate(text, (_when(leaks[-1]), axw.get_ylim()[1] * 0.92), xytext=(6, 0),
                         textcoords="offset points", ha="left", va="center", color="#d7191c",
                         fontweight="bold", bbox={"fc": "white", "ec": "none", "alpha": 0.85})
    else:
        _empty(axw, "water")
    axw.set_title("Water (pulse meter)", loc="left")
    fig.tight_layout(rect=(0, 0, 1, 0.975))
    path = out / f"box-{_safe(box)}.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_fleet(rows: list[dict], out: Path) -> Path:
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [1.3, 1]})
    ratios = [100 * r["speed_ratio"] for r in rows if r["speed_ratio"] is not None]
    if ratios:
        top = max(130, max(ratios) + 10)
        bins = list(range(0, int(top) + 10, 10))
        n, edges, patches = a1.hist(ratios, bins=bins, color=DOWN_C, edgecolor="white")
        for p, left in zip(patches, edges[:-1]):
            if left < 80:
                p.set_facecolor("#d7191c")
        a1.axvline(80, color="black", ls="--", lw=1.2)
        a1.annotate("alarm below 80% of plan", (80, max(n) * 1.02), xytext=(-6, 0),
                    textcoords="offset points", ha="right", fontsize=10,
                    bbox={"fc": "white", "ec": "none", "alpha": 0.85})
        a1.set_ylim(0, max(n) * 1.12)
        slow = sum(1 for x in ratios if x < 80)
        a1.set_title(f"Download speed vs plan: {slow} of {len(ratios)} boxes below 80%", loc="left")
        a1.set_xlabel("measured / subscribed (%)")
        a1.set_ylabel("boxes")
    else:
        _empty(a1, "speed")
        a1.set_title("Download speed vs plan", loc="left")
    counts = status.summary(rows)["alarms"]
    names = list(status.ALARMS)
    vals = [counts.get(k, 0) for k in names]
    bars = a2.barh(names[::-1], vals[::-1], color=["#d7191c" if v else "#bbbbbb" for v in vals[::-1]])
    for b, v in zip(bars, vals[::-1]):
        a2.text(b.get_width() + 0.1, b.get_y() + b.get_height() / 2, str(v), va="center")
    a2.set_title(f"Boxes with each alarm ({len(rows)} boxes)", loc="left")
    a2.set_xlabel("boxes")
    a2.set_xlim(0, max(vals + [1]) * 1.15 + 0.5)
    a2.grid(axis="y", visible=False)
    fig.tight_layout()
    path = out / "fleet.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(store: Store, out: Path, boxes: list[str] | None = None, max_boxes: int = 12,
                 interval: float = 300, now: float | None = None, weak_share: float = 0.25) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = status.fleet(store, interval=interval, weak_share=weak_share, now=now)
    by_box = {r["box"]: r for r in rows}
    if boxes:
        chosen = [b for b in boxes if b in by_box]
    else:
        chosen = [r["box"] for r in rows if r["alarms"]] + [r["box"] for r in rows if not r["alarms"]]
        chosen = chosen[:max_boxes]
    fleet_png = plot_fleet(rows, out)
    pngs = [(b, plot_box(store, b, out, by_box[b], weak_share)) for b in chosen]
    s = status.summary(rows)
    e = html.escape
    when = dt.datetime.fromtimestamp(now or time.time(), dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    alarm_rows = "".join(
        f"<tr><td>{e(r['box'])}</td><td>{e(r['state'])}</td><td>"
        + "<br>".join(f"<b>{e(a['code'])}</b> {e(a['detail'])}" for a in r["alarms"])
        + "</td></tr>" for r in rows if r["alarms"])
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>homebox fleet report</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
        "img{max-width:100%}.n{font-size:1.6em;font-weight:bold}</style></head><body>",
        f"<h1>homebox fleet report</h1><p>{e(when)}</p>",
        f"<p><span class='n'>{s['boxes']}</span> boxes · <span class='n'>{s['online']}</span> online · "
        f"<span class='n'>{s['offline']}</span> offline · <span class='n'>{s['with_alarms']}</span> with alarms</p>",
        f"<img src='{fleet_png.name}' alt='fleet summary'>",
        "<h2>Boxes with alarms</h2>",
        f"<table><tr><th>box</th><th>state</th><th>alarms</th></tr>{alarm_rows}</table>" if alarm_rows
        else "<p>None.</p>",
        "<h2>Per box</h2>",
    ]
    for b, p in pngs:
        parts.append(f"<h3 id='{e(_safe(b))}'>{e(b)}</h3><img src='{p.name}' alt='plots for {e(b)}'>")
    if len(rows) > len(pngs):
        parts.append(f"<p>{len(rows) - len(pngs)} more boxes not plotted (use --box or --max-boxes).</p>")
    parts.append("</body></html>")
    index = out / "index.html"
    index.write_text("\n".join(parts), encoding="utf-8")
    return index
