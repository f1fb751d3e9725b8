"""Update fan-out: one options document to each of N real agents, the latency from
its publish to the box's applied report (as a subscriber sees it), p50/p99.

Three ways, on the same fleet, one after the other:
- `single`: the old way, one client publishing every box's topic (the 2026 figure:
  p99 4.29 s over 1,000 boxes, 4.8 s to have them all PUBACKed);
- `fanout`: backend.fanout.Publisher, what campaigns and reconcile use: several
  connections with their own client ids, all published at once;
- `campaign`: a one-wave campaign (backend.campaign) over the fleet: the same
  publisher, paced by a window of `max_in_flight` boxes sent and not settled
  (the states read from the store, as ingest writes them).

`cpu_s_per_box`: the agents' CPU during the run, per box (validate, persist,
report): on a small machine the boxes' own work sets the pace of the whole fleet.

    python -m benchmarks.fanout [--boxes 1000]     # spawns the fleet, fan-out only

`benchmarks/fleet.py` calls `measure()` for its fan-out figures in `make bench`.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time

from agent import topics
from backend.fanout import Publisher
from benchmarks.fleet import _cpu_ticks, _pct
from common.broker import parse_broker

OPTIONS = {"speed_tier": "10M", "bouquets": [], "phone": {"enabled": True, "number": "+33299000000"}}
OLD_P99_S = 4.29


def measure(port: int, ids: list[str], version: int, how: str = "campaign", connections: int = 4,
            wait: float = 120.0, store=None, max_in_flight: int = 100, pids: list[int] | None = None) -> dict:
    """Push options `version` (at least) to every box in `ids`, one of three ways
    (`single`, `fanout`, `campaign`); time each box's applied report from its publish."""
    import paho.mqtt.client as mqtt
    ack_at: dict[str, float] = {}
    lock = threading.Lock()
    want = set(ids)

    def on_report(client, userdata, msg):
        now = time.time()                       # as each report lands, in paho's thread
        try:
            rep = json.loads(msg.payload)
        except ValueError:
            return
        box = msg.topic.split("/")[2]
        v = rep.get("version")
        if box in want and isinstance(v, int) and v >= version and rep.get("status") == "applied":
            with lock:
                ack_at.setdefault(box, now)
    subscribed = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-acks-{os.getpid()}-{version}")
    sub.on_message = on_report
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("homebox/v1/+/reported/options", qos=1)
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    subscribed.wait(10)
    time.sleep(2.0)                              # the retained reports of earlier versions come first
    body = json.dumps(dict(OPTIONS, version=version), separators=(",", ":")).encode()
    sent: dict[str, float] = {}
    cpu0 = {p: _cpu_ticks(p) for p in pids or []}
    t0 = time.time()
    extra: dict = {}
    if how == "single":
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-push-{os.getpid()}-{version}")
        pub.max_inflight_messages_set(1000)
        pub.connect("127.0.0.1", port)
        pub.loop_start()
        infos = []
        for box in ids:
            sent[box] = time.time()
            infos.append(pub.publish(topics.desired(box, "options"), body, qos=1, retain=True))
        for i in infos:
            i.wait_for_publish(60)
        pub.loop_stop()
        pub.disconnect()
    elif how == "fanout":
        with Publisher(parse_broker(f"127.0.0.1:{port}"), f"bench-fanout-{os.getpid()}",
                       connections=connections) as p:
            p.publish([(topics.desired(b, "options"), body) for b in ids],
                      on_sent=lambda t, at: sent.__setitem__(t.split("/")[2], at))
    else:
        from backend import campaign
        c = campaign.create(store, "options", OPTIONS, {"boxes": ids}, canary=1.0, waves=[1.0], rate=10000,
                            max_in_flight=max_in_flight, box_timeout=60, author="bench")
        st = campaign.run(store, parse_broker(f"127.0.0.1:{port}"), c["id"], None, poll=0.02,
                          connections=connections, until=time.time() + wait)
        for b in st["boxes"]:
            if b["sent_at"]:
                sent[b["box"]] = b["sent_at"]
        extra = {"campaign_state": st["state"], "campaign_counts": st["counts"], "max_in_flight": max_in_flight}
    t_pushed = time.time()
    deadline = time.time() + wait
    while time.time() < deadline and len(ack_at) < len(ids):
        time.sleep(0.05)
    dt = time.time() - t0
    sub.loop_stop()
    sub.disconnect()
    lat = [ack_at[b] - sent[b] for b in ack_at if b in sent]
    out = {"how": how, "connections": 1 if how == "single" else connections, "pushed": len(sent),
           "publish_all_s": round(t_pushed - t0, 2), "acked": len(ack_at),
           "ack_latency_s": {"p50": _pct(lat, 50), "p99": _pct(lat, 99), "max": _pct(lat, 100)},
           "all_acked_after_s": round(max(ack_at.values()) - t0, 2) if ack_at else None}
    if pids:
        hz = os.sysconf("SC_CLK_TCK")
        out["cpu_s_per_box"] = round(sum(_cpu_ticks(p) - cpu0[p] for p in pids) / hz / len(ids), 4)
        out["window_s"] = round(dt, 1)
    out.update(extra)
    return out


def run(boxes: int | None = None) -> dict:
    from benchmarks.agentrun import workdir
    from benchmarks.fleet import Fleet, limits, start_backend, wait_online
    n = boxes or int(os.environ.get("HB_FLEET_BOXES", "1000"))
    lim = limits(n)
    out: dict = {"boxes": n, "old_p99_s": OLD_P99_S, "target_p99_s": 2.0}
    if not lim["ok"]:
        out["skipped"] = f"limits too low for {n} agents: {lim}"
        return out
    work = workdir("fanout")
    fleet = Fleet(work, n, 300)
    t_start = time.time()
    try:
        store = start_backend(fleet)
        fleet.spawn()
        out["online"] = wait_online(store, n, 180)
        time.sleep(5)
        port = fleet.broker.port
        agents = [p.pid for p in fleet.procs.values()]
        out["single"] = measure(port, fleet.ids, 2, "single", pids=agents)
        out["fanout"] = measure(port, fleet.ids, 3, "fanout", pids=agents)
        out["campaign"] = measure(port, fleet.ids, 4, "campaign", store=store, pids=agents)
        out["agents_alive"] = fleet.alive()
        store.close()
    finally:
        fleet.stop()
        out["seconds"] = round(time.time() - t_start, 1)
        shutil.rmtree(work, ignore_errors=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--boxes", type=int, default=None)
    a = ap.parse_args(argv)
    print(json.dumps(run(a.boxes), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
