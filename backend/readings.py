"""Readings of telemetry, defensive and pure (no store): the values the alarms are
computed from, shared by `ops status` (backend/status.py), the console and the
alarm lifecycle of ingest (backend/alarms.py).

A missing or oddly shaped field means "no data", never a crash (the shapes are
listed in backend/status.py).
"""
from __future__ import annotations

SPEED_MIN_RATIO = 0.8
TIC_BAD_SHARE = 0.02
# A Linky may cut a frame short by design (EOT, Enedis-NOI-CPT_54E), and a UART
# opened or switched mid-frame loses one: a link fault is a share of bad frames
# that lasts, so a few cut frames alone raise nothing.
TIC_BAD_MIN = 3
LEAK_WINDOW_S = 24 * 3600


def _num(x):
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def station_weak_shares(data) -> list[tuple[str, float]]:
    """[(station id, weak + unusable share 0..1)] from a coverage report."""
    out = []
    stations = data.get("stations") if isinstance(data, dict) else None
    if not isinstance(stations, list):
        return out
    for i, st in enumerate(stations):
        if not isinstance(st, dict):
            continue
        bands = st.get("bands")
        if not isinstance(bands, dict):
            continue
        vals = {k: _num(v) for k, v in bands.items()}
        if not sum(v for v in vals.values() if v is not None):
            continue
        weak = sum(vals.get(k) or 0 for k in ("weak", "unusable"))
        sid = st.get("id") or f"#{i + 1}"
        out.append((str(sid)[:12], round(weak, 3)))
    return out


def band_shares(data, worst: bool = True) -> dict[str, float] | None:
    """Band shares (0..1) of the station with the most weak + unusable time in a
    coverage report (worst=True), or the mean over its stations; None without data."""
    stations = data.get("stations") if isinstance(data, dict) else None
    if not isinstance(stations, list):
        return None
    acc: dict[str, float] = {}
    n = 0
    pick, pick_weak = None, -1.0
    for st in stations:
        bands = st.get("bands") if isinstance(st, dict) else None
        if not isinstance(bands, dict):
            continue
        norm = {k: _num(v) or 0 for k, v in bands.items()}
        if not sum(norm.values()):
            continue
        weak = norm.get("weak", 0) + norm.get("unusable", 0)
        if weak > pick_weak:
            pick, pick_weak = norm, weak
        for k, v in norm.items():
            acc[k] = acc.get(k, 0) + v
        n += 1
    if not n:
        return None
    return pick if worst else {k: v / n for k, v in acc.items()}


def speed_ratio(data) -> float | None:
    if not isinstance(data, dict):
        return None
    r = _num(data.get("ratio_down"))
    if r is None:
        down = data.get("down") if isinstance(data.get("down"), dict) else {}
        g, p = _num(down.get("goodput_bps")), _num(data.get("plan_down_bps"))
        r = g / p if g and p else None
    return r


def tic_counts(elec: dict) -> tuple:
    """(good frames, bad frames, rejected groups) of a consumption report's elec part;
    implausible values are the meter's, not the link's."""
    errs = elec.get("errors") if isinstance(elec.get("errors"), dict) else {}
    return (_num(elec.get("frames_ok")) or 0, _num(elec.get("frames_bad")) or 0,
            sum(_num(v) or 0 for k, v in errs.items() if k != "implausible"))


def tic_error_detail(data) -> str | None:
    elec = data.get("elec") if isinstance(data, dict) else None
    if not isinstance(elec, dict):
        return None
    ok, bad, nerr = tic_counts(elec)
    errs = elec.get("errors") if isinstance(elec.get("errors"), dict) else {}
    if ok == 0 and (bad or nerr):
        return f"no valid frame since boot ({bad} bad frames, {nerr} rejected groups)"
    if bad >= TIC_BAD_MIN and bad / (ok + bad) >= TIC_BAD_SHARE:
        return f"{bad} of {ok + bad} frames bad since boot"
    if ok and nerr >= TIC_BAD_MIN and nerr / ok >= TIC_BAD_SHARE:
        detail = ", ".join(f"{k} {v}" for k, v in sorted(errs.items()) if _num(v))
        return f"rejected groups: {detail}"
    return None
