"""An over-the-air agent update on the path a box runs, within its heap: the
firmware a bench flashes, on the emulated ESP32 board (vbox/board/) in good_home
with every feature on (as footprint.py's day_esp32_all_features), updated to a
release served over HTTP; at each heap, whether the install, the switch, the
restart and the confirmation went through without a MemoryError, and the live
heap at the switch (after a collection, the install's code still loaded).

    python -m benchmarks.ota [--heaps 116,112]
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time

from benchmarks.agentrun import Broker, publish, workdir
from benchmarks.footprint import ALL_FEATURES

# Box time at 10x: the download's timeouts are in box time (20 s), which the
# emulated board runs at its speedup; at a footprint day's 2,880x they would be 7 ms.
SPEEDUP = 10


def update_ok(work, port: int, kb: int, root, srv, name: str, features: dict = ALL_FEATURES) -> dict:
    from backend import push, release, speedtest_server
    from tests.otafleet import KEY
    from vbox import boardrun
    box_id = f"ota-esp32-{kb}k-{int(time.time() * 1000) % 100000}"
    st = speedtest_server.start()
    cfg = {"box_id": box_id, "broker_host": "127.0.0.1", "broker_port": port, "state_dir": "/state",
           "speedup": SPEEDUP, "drain_rate": 5000,
           "speed_url": "http://127.0.0.1:%d" % st.server_address[1], **features}
    sc = work / (box_id + ".home.json")
    sc.write_text(json.dumps("good_home"))
    t0 = time.time()
    box = boardrun.boot_firmware(work / box_id, cfg, {"mqtt_user": box_id, "mqtt_password": "pw",
                                                      "wifi_key": "abcd-efgh-jkmn-pqrs", "hmac_key": KEY.hex()},
                                 heap=f"{kb}k", board="esp32", scenario=sc)
    try:
        deadline = time.time() + 60
        while "[hb] connected" not in box.console() and time.time() < deadline:
            time.sleep(0.2)
        doc = release.template(root / name, f"{srv.url}/{name}", 120)
        publish(port, f"homebox/v1/{box_id}/desired/release", push.wire(push.prepare(doc, box_id, 1, None, key=KEY)))
        deadline = time.time() + 180
        while time.time() < deadline:
            con = box.console()
            if "release_confirmed" in con or "release_rejected" in con or "MemoryError" in con:
                break
            time.sleep(0.2)
        con = box.console()
    finally:
        box.stop()
        st.shutdown()
    m = re.search(r"release_switch .*heap_alloc=(\d+) heap_free=(\d+)", con)
    ok = "release_confirmed" in con and "MemoryError" not in con and "Traceback" not in con and "hal esp32" in con
    why = None if ok else next((ln.strip() for ln in con.splitlines() if "Error" in ln or "rejected" in ln),
                               "did not confirm")
    lines = con.splitlines()
    at = next((i for i, ln in enumerate(lines) if "Error" in ln), None)
    context = None if ok or at is None else [ln.strip() for ln in lines[max(0, at - 6):at + 1]]
    return {"ok": ok, "wall_s": round(time.time() - t0, 1), "why": why, "context": context,
            "heap_alloc_at_switch": int(m.group(1)) if m else None,
            "heap_free_at_switch": int(m.group(2)) if m else None}


# The same box with only what a box always runs: the console, the LAN uplink.
BASIC = {"console": True, "uplink": "lan", "wifi_ssid": "homebox-000001", "speed_window": [0, 0]}


def run(heaps=(116, 128), basic_heaps=(116,)) -> dict:
    from backend import release
    from tests.otafleet import make_release
    work = workdir("ota")
    try:
        root = work / "releases"
        info = make_release(work, root, "0.2.0-bench")
        srv = release.serve(root)
        out = {"what": "an agent release installed, switched, restarted into and confirmed on the ESP32 path, "
                       "every feature on (footprint.ALL_FEATURES), box time 10x",
               "release_files": len(info["files"]), "release_bytes": info["bytes"], "heaps": {}}
        try:
            with Broker(work) as broker:
                for kb in heaps:
                    out["heaps"][f"{kb}k"] = update_ok(work, broker.port, kb, root, srv, "0.2.0-bench")
                out["basic_box"] = {f"{kb}k": update_ok(work, broker.port, kb, root, srv, "0.2.0-bench", BASIC)
                                    for kb in basic_heaps}
        finally:
            srv.shutdown()
        held = [int(k[:-1]) for k, v in out["heaps"].items() if v["ok"]]
        out["smallest_tried_kb_that_holds"] = min(held) if held else None
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--heaps", default="116,128", help="KiB, comma-separated: every feature on")
    ap.add_argument("--basic-heaps", default="116", help="KiB: console and uplink only")
    a = ap.parse_args(argv)
    print(json.dumps(run(tuple(int(x) for x in a.heaps.split(",") if x),
                         tuple(int(x) for x in a.basic_heaps.split(",") if x)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
