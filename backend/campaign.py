"""Campaigns: one section document sent to many boxes, in waves, with a canary, a
rate limit and an abort threshold; each box's state follows the reported
documents that ingest stores (the driver never waits on a box).

    from backend import campaign
    c = campaign.create(store, "options", {"speed_tier": "10M", ...}, {"tag": "tower-B"},
                        canary=0.1, waves=[0.3, 1.0], success=0.9, abort=0.2, rate=50)
    campaign.start(store, c["id"])
    campaign.run(store, broker, c["id"], master)      # drives it until done, paused or aborted
    campaign.status(store, c["id"])                   # waves, per-box states, counts

Targets: {"boxes": [ids]}, {"tag": "tower-B"} (tags: `tag()`), {"plan": "10M"} (the
speed_tier of the box's options document in the store: the plan the operator set), {"all": true} (every box the store knows).
The target is resolved at creation and frozen, in its order.

Waves: `canary` then the cumulative shares in `waves` (the last is 1.0): with 20
boxes, canary 0.1 and waves [0.3, 1.0], the waves are boxes 1-2, 3-6, 7-20. A wave
starts only when the previous one is settled (no box left `sent`) and its applied
share reached `success`; below it, the campaign pauses (resume goes on anyway).

Per box: pending -> sent -> applied | rejected (the box's field and reason) |
timed_out (online, no report after `box_timeout`) | offline (the box was offline
when sent or at the timeout; the document stays retained and an offline box still
moves to applied or rejected when its report arrives while the campaign runs).

Pace: at most `rate` boxes a second, and at most `max_in_flight` boxes `sent` and
not settled at once (a window: a document is published when the box can act on
it, not queued behind a thousand others in the broker and the boxes' CPU).

Abort: once `abort_min` boxes (default: the canary's size) are decided (applied,
rejected or timed out), the campaign aborts when rejected + timed_out exceed
`abort` of them. Abort sends nothing more; what was sent stays sent.

Every state is in the store (tables campaigns, campaign_boxes, box_tags); the driver
keeps nothing that matters in memory. One driver at a time holds a lease on the
campaign (LEASE_S, renewed as it runs; taken over at once from a dead process of
the same host). A driver killed at any point is resumed by
`run()` again: the documents of boxes `sent` but not settled are published again
(the same bytes, so a box that had them ignores the replay).
"""
from __future__ import annotations

import json
import math
import os
import socket
import time
import uuid

from agent import topics
from backend import history, push
from backend import release as agent_release
from backend.errors import OpsError
from backend.store import ensure_tables

# The desired-document sections, and an agent release (backend/release.py): a box
# that rolled a release back reports it rejected, with why.
SECTIONS = tuple(push.SECTIONS) + (agent_release.SECTION,)
STATES = ("created", "running", "paused", "completed", "aborted")
BOX_STATES = ("pending", "sent", "applied", "rejected", "timed_out", "offline")
FAILED = ("rejected", "timed_out")
DECIDED = ("applied", "rejected", "timed_out")
BELOW = "below the success threshold"


class CampaignError(OpsError):
    """A campaign cannot be created or changed as asked."""


class NoSuchCampaign(CampaignError):
    pass


class CampaignBusy(CampaignError):
    """Another driver holds the campaign's lease (and is alive)."""


def _ddl(dialect: str) -> list[str]:
    return [
        """CREATE TABLE IF NOT EXISTS campaigns (
            id TEXT PRIMARY KEY, section TEXT NOT NULL, template TEXT NOT NULL, target TEXT NOT NULL,
            waves TEXT NOT NULL, success DOUBLE PRECISION NOT NULL, abort_share DOUBLE PRECISION NOT NULL,
            abort_min BIGINT NOT NULL, rate DOUBLE PRECISION NOT NULL, box_timeout DOUBLE PRECISION NOT NULL,
            max_in_flight BIGINT NOT NULL, driver TEXT, lease_until DOUBLE PRECISION,
            state TEXT NOT NULL, wave BIGINT NOT NULL, reason TEXT, author TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS campaign_boxes (
            campaign TEXT NOT NULL, box TEXT NOT NULL, pos BIGINT NOT NULL, wave BIGINT NOT NULL,
            state TEXT NOT NULL, version BIGINT, reason TEXT, sent_at DOUBLE PRECISION,
            done_at DOUBLE PRECISION, PRIMARY KEY (campaign, box))""",
        "CREATE INDEX IF NOT EXISTS campaign_boxes_state ON campaign_boxes (campaign, state, wave)",
        "CREATE TABLE IF NOT EXISTS box_tags (box TEXT NOT NULL, tag TEXT NOT NULL, PRIMARY KEY (box, tag))",
        "CREATE INDEX IF NOT EXISTS box_tags_tag ON box_tags (tag)",
    ]


def ensure_schema(store) -> None:
    ensure_tables(store, "_campaign_ready", lambda: _ddl(store.dialect), then=history.ensure_schema)


# ---- tags and targets ------------------------------------------------------------

def tag(store, boxes: list[str], tags: list[str], remove: bool = False) -> None:
    """Give (or take away) tags such as a building or a tower to boxes."""
    ensure_schema(store)
    if remove:
        q = "DELETE FROM box_tags WHERE box=? AND tag=?"
    else:
        q = "INSERT INTO box_tags (box, tag) VALUES (?,?) ON CONFLICT (box, tag) DO NOTHING"
    store._tx(lambda cur: [cur.execute(store._sql(q), (b, t)) for b in boxes for t in tags])


def resolve(store, target: dict) -> list[str]:
    """The box ids a target names, in order (a list keeps its own order)."""
    ensure_schema(store)
    if not isinstance(target, dict) or len(target) != 1:
        raise CampaignError("a target is one of {boxes: [...]}, {tag: T}, {plan: P}, {all: true}")
    (kind, val), = target.items()
    if kind == "boxes":
        if not isinstance(val, list) or not all(isinstance(b, str) and b for b in val):
            raise CampaignError("target boxes: a list of box ids")
        seen: dict[str, None] = {}
        for b in val:
            seen.setdefault(b, None)
        return list(seen)
    if kind == "tag":
        return [b for (b,) in store._q("SELECT box FROM box_tags WHERE tag=? ORDER BY box", (str(val),))]
    if kind == "plan":
        out = []
        for b, p in store._q("SELECT box, payload FROM desired WHERE section='options' ORDER BY box"):
            try:
                if json.loads(bytes(p)).get("speed_tier") == val:
                    out.append(b)
            except (ValueError, AttributeError):
                continue
        return out
    if kind == "all" and val is True:
        return [b["box"] for b in store.boxes()]
    raise CampaignError(f"unknown target {kind!r}: use boxes, tag, plan or all")


def wave_sizes(n: int, canary: float, waves: list[float]) -> list[int]:
    """Cumulative box counts at the end of each wave."""
    shares = [canary] + [w for w in waves if w > canary]
    if not shares or shares[-1] < 1.0:
        shares.append(1.0)
    out: list[int] = []
    for s in shares:
        k = min(n, max(1, math.ceil(s * n - 1e-9)))
        if not out or k > out[-1]:
            out.append(k)
    return out


# ---- lifecycle ------------------------------------------------------------------------

def create(store, section: str, template: dict, target: dict, *, name: str | None = None,
           canary: float = 0.1, waves: list[float] | None = None, success: float = 0.9,
           abort: float = 0.2, abort_min: int | None = None, rate: float = 50.0,
           box_timeout: float = 60.0, max_in_flight: int = 200, author: str | None = None) -> dict:
    """Record a campaign (state `created`) over the boxes the target names now."""
    ensure_schema(store)
    if section == agent_release.SECTION:
        agent_release.check({k: v for k, v in template.items() if k not in ("version", "box", "sig")})
    elif section not in push.SECTIONS:
        raise CampaignError(f"unknown section {section!r}: one of {', '.join(SECTIONS)}")
    else:
        push.check(section, template)             # DocumentInvalid: nothing is recorded
    waves = list(waves if waves is not None else [0.3, 1.0])
    for v, what in [(canary, "canary")] + [(w, "waves") for w in waves] + [(success, "success"),
                                                                              (abort, "abort")]:
        if not (isinstance(v, (int, float)) and 0 < v <= 1):
            raise CampaignError(f"{what}: a share in (0, 1], not {v!r}")
    if rate <= 0 or box_timeout <= 0 or max_in_flight < 1:
        raise CampaignError("rate, box_timeout and max_in_flight must be positive")
    boxes = resolve(store, target)
    if not boxes:
        raise CampaignError(f"the target {json.dumps(target)} names no box")
    sizes = wave_sizes(len(boxes), canary, sorted(waves))
    cid = name or f"c-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    if not cid.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise CampaignError(f"bad campaign name {cid!r}: letters, digits, - _ .")
    now = time.time()
    amin = abort_min if abort_min is not None else sizes[0]
    tmpl = {k: v for k, v in template.items() if k not in ("version", "box", "sig")}

    def tx(cur):
        cur.execute(store._sql("SELECT 1 FROM campaigns WHERE id=?"), (cid,))
        if cur.fetchone():
            raise CampaignError(f"a campaign named {cid!r} exists")
        cur.execute(store._sql(
            "INSERT INTO campaigns (id, section, template, target, waves, success, abort_share, abort_min, "
            "rate, box_timeout, max_in_flight, state, wave, reason, author, created_at, updated_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"),
            (cid, section, json.dumps(tmpl), json.dumps(target), json.dumps(sizes), success, abort,
             amin, rate, box_timeout, int(max_in_flight), "created", 0, None, author or history.default_author(),
             now, now))
        rows, w = [], 0
        for pos, b in enumerate(boxes):
            while pos >= sizes[w]:
                w += 1
            rows.append((cid, b, pos, w, "pending"))
        cur.executemany(store._sql(
            "INSERT INTO campaign_boxes (campaign, box, pos, wave, state) VALUES (?,?,?,?,?)"), rows)
    store._tx(tx)
    return get(store, cid)


def get(store, cid: str) -> dict:
    ensure_schema(store)
    rows = store._q("SELECT id, section, template, target, waves, success, abort_share, abort_min, rate, "
                    "box_timeout, max_in_flight, state, wave, reason, author, created_at, updated_at "
                    "FROM campaigns WHERE id=?", (cid,))
    if not rows:
        raise NoSuchCampaign(f"no campaign {cid!r}")
    (i, sec, tmpl, tgt, waves, succ, ab, amin, rate, bt, mif, state, wave, reason, author, cat, uat) = rows[0]
    return {"id": i, "section": sec, "template": json.loads(tmpl), "target": json.loads(tgt),
            "waves": json.loads(waves), "success": succ, "abort": ab, "abort_min": int(amin), "rate": rate,
            "box_timeout": bt, "max_in_flight": int(mif), "state": state, "wave": int(wave), "reason": reason,
            "author": author, "created_at": cat, "updated_at": uat}


def list_campaigns(store) -> list[dict]:
    ensure_schema(store)
    out = []
    for (cid,) in store._q("SELECT id FROM campaigns ORDER BY created_at, id"):
        c = get(store, cid)
        c["counts"] = counts(store, cid)
        out.append(c)
    return out


def _set_state(store, cid: str, state: str, allowed: tuple[str, ...], reason: str | None = None,
               wave: int | None = None) -> dict:
    def tx(cur):
        cur.execute(store._sql("SELECT state FROM campaigns WHERE id=?"), (cid,))
        row = cur.fetchone()
        if not row:
            raise NoSuchCampaign(f"no campaign {cid!r}")
        if row[0] not in allowed:
            raise CampaignError(f"campaign {cid} is {row[0]}: cannot make it {state}")
        sets, args = "state=?, reason=?, updated_at=?", [state, reason, time.time()]
        if wave is not None:
            sets += ", wave=?"
            args.append(wave)
        cur.execute(store._sql(f"UPDATE campaigns SET {sets} WHERE id=?"), args + [cid])
    ensure_schema(store)
    store._tx(tx)
    return get(store, cid)


def start(store, cid: str) -> dict:
    return _set_state(store, cid, "running", ("created",))


def pause(store, cid: str, reason: str = "paused by the operator") -> dict:
    return _set_state(store, cid, "paused", ("running", "created"), reason)


def resume(store, cid: str) -> dict:
    """Make a paused (or created) campaign run again; a wave that stopped below its
    success threshold is passed over (the operator's decision)."""
    c = get(store, cid)
    wave = c["wave"]
    if c["state"] == "paused" and (c["reason"] or "").startswith(BELOW):
        wave = c["wave"] + 1
        if wave >= len(c["waves"]):
            return _set_state(store, cid, "completed", ("paused",), "completed (resumed after the last wave)")
    return _set_state(store, cid, "running", ("paused", "created", "running"), None, wave)


def abort(store, cid: str, reason: str = "aborted by the operator") -> dict:
    return _set_state(store, cid, "aborted", ("created", "running", "paused"), reason)


# ---- per-box states -------------------------------------------------------------------

def counts(store, cid: str) -> dict[str, int]:
    out = dict.fromkeys(BOX_STATES, 0)
    for s, n in store._q("SELECT state, COUNT(*) FROM campaign_boxes WHERE campaign=? GROUP BY state", (cid,)):
        out[s] = int(n)
    return out


def boxes(store, cid: str) -> list[dict]:
    cols = ("box", "pos", "wave", "state", "version", "reason", "sent_at", "done_at")
    return [dict(zip(cols, r)) for r in store._q(
        "SELECT " + ", ".join(cols) + " FROM campaign_boxes WHERE campaign=? ORDER BY pos", (cid,))]


def status(store, cid: str) -> dict:
    """The campaign, its counts, each wave's counts and every box's state."""
    c = get(store, cid)
    bx = boxes(store, cid)
    waves = []
    for w, end in enumerate(c["waves"]):
        mine = [b for b in bx if b["wave"] == w]
        waves.append({"wave": w, "name": "canary" if w == 0 else f"wave {w}", "boxes": len(mine),
                      "through": end, "counts": {s: sum(1 for b in mine if b["state"] == s)
                                                 for s in BOX_STATES}})
    c["counts"] = {s: sum(1 for b in bx if b["state"] == s) for s in BOX_STATES}
    c["wave_stats"] = waves
    c["boxes"] = bx
    return c


def _chunks(xs: list, n: int = 400):
    for i in range(0, len(xs), n):
        yield xs[i:i + n]


def _in(store, q: str, keys: list, pre: tuple = ()) -> list[tuple]:
    out: list[tuple] = []
    for ch in _chunks(keys):
        out += store._q(q.replace("(?*)", "(" + ",".join("?" * len(ch)) + ")"), pre + tuple(ch))
    return out


def refresh(store, cid: str, now: float | None = None) -> int:
    """Settle the boxes `sent` or `offline` from what ingest stored (their reported
    documents and status); time out the silent ones. Returns how many changed."""
    c = get(store, cid)
    now = now or time.time()
    open_ = store._q("SELECT box, state, version, sent_at FROM campaign_boxes WHERE campaign=? "
                     "AND state IN ('sent', 'offline')", (cid,))
    if not open_:
        return 0
    ids = [r[0] for r in open_]
    reps = {b: json.loads(d) for b, d in _in(
        store, "SELECT box, doc FROM reported WHERE section=? AND box IN (?*)", ids, (c["section"],))}
    online = {b: s for b, s in _in(store, "SELECT box, state FROM boxes WHERE box IN (?*)", ids)}
    changes = []
    for box, state, version, sent_at in open_:
        o = push.outcome(reps.get(box), int(version))
        if o:
            st, text = o
            changes.append((st, None if st == "applied" else text.removeprefix("rejected: "), now, box))
        elif state == "sent" and now - float(sent_at) > c["box_timeout"]:
            if online.get(box) == "online":
                changes.append(("timed_out", f"no report after {c['box_timeout']:g} s", now, box))
            else:
                changes.append(("offline", "offline at the timeout (the document stays retained)", None, box))
    if changes:
        store._tx(lambda cur: [cur.execute(store._sql(
            "UPDATE campaign_boxes SET state=?, reason=?, done_at=? WHERE campaign=? AND box=?"),
            (st, r, t, cid, b)) for st, r, t, b in changes])
    return len(changes)


def _next_versions(store, section: str, ids: list[str]) -> dict[str, int]:
    top = dict.fromkeys(ids, 0)
    for b, v in _in(store, "SELECT box, version FROM desired WHERE section=? AND box IN (?*)", ids, (section,)):
        top[b] = max(top[b], int(v))
    for b, d in _in(store, "SELECT box, doc FROM reported WHERE section=? AND box IN (?*)", ids, (section,)):
        rep = json.loads(d)
        vs = [push._int(rep.get("version"))]
        for k in ("rejected", "ignored"):
            if isinstance(rep.get(k), dict):
                vs.append(push._int(rep[k].get("version")))
        top[b] = max([top[b]] + vs)
    return {b: v + 1 for b, v in top.items()}


def send(store, publisher, cid: str, ids: list[str], master: bytes | None) -> int:
    """Sign the template for each box, record it (desired, history, the box `sent`
    or `offline`) in one transaction, then publish it retained."""
    if not ids:
        return 0
    c = get(store, cid)
    section, tmpl = c["section"], c["template"]
    versions = _next_versions(store, section, ids)
    online = {b: s for b, s in _in(store, "SELECT box, state FROM boxes WHERE box IN (?*)", ids)}
    now = time.time()
    items = []
    for box in ids:
        d = push.prepare(tmpl, box, versions[box], master)
        items.append((box, versions[box], push.wire(d)))

    def tx(cur):
        for box, v, payload in items:
            store._put_desired(cur, box, section, v, payload, f"campaign:{cid}", False)
            history._insert(store, cur, box, section, v, payload, c["author"], cid)
            st = "sent" if online.get(box) == "online" else "offline"
            cur.execute(store._sql(
                "UPDATE campaign_boxes SET state=?, version=?, sent_at=?, reason=? WHERE campaign=? AND box=?"),
                (st, v, now, None if st == "sent" else "offline when sent (the document stays retained)",
                 cid, box))
    store._tx(tx)
    return publisher.publish([(topics.desired(b, section), p) for b, _v, p in items])


def _republish_open(store, publisher, cid: str) -> int:
    """After a restart: the documents of boxes not settled go out again, byte for byte."""
    c = get(store, cid)
    rows = store._q("SELECT cb.box, d.payload FROM campaign_boxes cb JOIN desired d ON d.box = cb.box "
                    "AND d.section = ? AND d.version = cb.version WHERE cb.campaign = ? "
                    "AND cb.state IN ('sent', 'offline')", (c["section"], cid))
    if not rows:
        return 0
    return publisher.publish([(topics.desired(b, c["section"]), bytes(p)) for b, p in rows])


def step(store, publisher, cid: str, master: bytes | None, budget: int) -> tuple[str, int]:
    """One turn of the driver: settle, check the abort threshold, send up to
    `budget` boxes of the current wave, or move to the next wave. Returns the
    campaign's state and how many were sent."""
    refresh(store, cid)
    c = get(store, cid)
    if c["state"] != "running":
        return c["state"], 0
    n = counts(store, cid)
    decided = sum(n[s] for s in DECIDED)
    failed = sum(n[s] for s in FAILED)
    if decided >= c["abort_min"] and decided and failed / decided > c["abort"]:
        _set_state(store, cid, "aborted", ("running",),
                   f"{failed} of {decided} decided boxes failed (rejected or timed out): "
                   f"above the abort threshold {c['abort']:g}, in {'the canary' if c['wave'] == 0 else 'wave %d' % c['wave']}")
        return "aborted", 0
    w = c["wave"]
    # a window: at most max_in_flight boxes sent and not settled, so that a box's
    # document waits in no queue (the fleet's CPU and the broker set the pace)
    budget = min(budget, c["max_in_flight"] - n["sent"])
    pend = [b for (b,) in store._q("SELECT box FROM campaign_boxes WHERE campaign=? AND wave=? AND state='pending' "
                                   "ORDER BY pos LIMIT ?", (cid, w, max(0, budget)))]
    if pend:
        return "running", send(store, publisher, cid, pend, master)
    wave = [(s, int(k)) for s, k in store._q(
        "SELECT state, COUNT(*) FROM campaign_boxes WHERE campaign=? AND wave=? GROUP BY state", (cid, w))]
    wn = dict(wave)
    if wn.get("pending") or wn.get("sent"):
        return "running", 0                         # waiting for reports
    size = sum(wn.values())
    share = wn.get("applied", 0) / size if size else 1.0
    name = "the canary" if w == 0 else f"wave {w}"
    if share < c["success"]:
        _set_state(store, cid, "paused", ("running",),
                   f"{BELOW} in {name}: {wn.get('applied', 0)} of {size} applied, under "
                   f"{c['success']:g} (resume goes on with the next wave, abort stops)")
        return "paused", 0
    if w + 1 >= len(c["waves"]):
        _set_state(store, cid, "completed", ("running",), f"every wave passed ({n['applied']} applied)")
        return "completed", 0
    _set_state(store, cid, "running", ("running",), None, w + 1)
    return "running", 0


LEASE_S = 15.0


def _me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _gone(driver: str) -> bool:
    """A driver of this host whose process is no more."""
    host, _, rest = driver.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def claim(store, cid: str, me: str, ttl: float = LEASE_S) -> None:
    """Take (or renew) the campaign's lease: one driver at a time. A lease is free
    when released, expired, or held by a dead process of this host (kill -9)."""
    def tx(cur):
        cur.execute(store._sql("SELECT driver, lease_until FROM campaigns WHERE id=?"), (cid,))
        row = cur.fetchone()
        if not row:
            raise NoSuchCampaign(f"no campaign {cid!r}")
        drv, until = row
        now = time.time()
        if drv and drv != me and until and float(until) > now and not _gone(drv):
            raise CampaignBusy(f"campaign {cid} is driven by {drv} (lease for {float(until) - now:.0f} s more)")
        cur.execute(store._sql("UPDATE campaigns SET driver=?, lease_until=? WHERE id=?"), (me, now + ttl, cid))
    store._tx(tx)


def release(store, cid: str, me: str) -> None:
    store._tx(lambda cur: cur.execute(store._sql(
        "UPDATE campaigns SET driver=NULL, lease_until=NULL WHERE id=? AND driver=?"), (cid, me)))


def run(store, broker, cid: str, master: bytes | None, *, tls_ca: str | None = None,
        poll: float = 0.2, connections: int = 2, log=None, until: float | None = None) -> dict:
    """Drive a running campaign until it is completed, paused or aborted (or until
    the time `until`). One driver at a time: CampaignBusy when another one, alive,
    holds the lease. Returns status()."""
    from backend.fanout import Publisher
    c = get(store, cid)
    me = _me()
    claim(store, cid, me)
    if c["state"] == "created":
        start(store, cid)
    try:
        pub = Publisher(broker, f"homebox-campaign-{cid}"[:40], connections=connections, tls_ca=tls_ca)
    except Exception:
        release(store, cid, me)
        raise
    renewed = time.time()
    try:
        _republish_open(store, pub, cid)
        last = time.time()
        tokens = 1.0
        prev = None
        while until is None or time.time() < until:
            now = time.time()
            if now - renewed > LEASE_S / 3:
                claim(store, cid, me)
                renewed = now
            rate = get(store, cid)["rate"]
            tokens = min(max(rate, 1.0), tokens + (now - last) * rate)
            last = now
            state, sent = step(store, pub, cid, master, int(tokens))
            tokens -= sent
            cur = (state, get(store, cid)["wave"])
            if log and cur != prev:
                log(f"campaign {cid}: {state}, wave {cur[1]}: " + json.dumps(counts(store, cid)))
            prev = cur
            if state != "running":
                break
            if not sent:
                time.sleep(poll)
    finally:
        pub.close()
        release(store, cid, me)
    return status(store, cid)
