# The runtime's cold code (agent/runtime.py): what runs once per boot (the
# set-up of a Box, the start of its tasks), and for a
# desired document (rules, signature, effects). One connection attempt is
# agent/session_cold.py.
# Loaded when it runs, then released. The optional features are imported here
# only when the config enables them (on the unix port the speed-test schedule costs
# ~3 KB, its measurement ~11 KB while a test runs, the TIC decoder ~10 KB;
# docs/performance.md).
import asyncio

from agent import VERSION, fsutil
from agent.compat import cold
from agent.log import log
from agent.outbox import Outbox
from agent.twin import Twin


def init(box, cfg, hal, validators):
    # Every attribute set here is declared in Box (agent/runtime.py); those whose
    # first value is Box's class-level default are not set again.
    box.cfg = cfg
    box.hal = hal
    box.id = cfg["box_id"]
    # Topic strings are built once here (the layout is agent/topics.py, which
    # the backend uses); the box does not keep that module in RAM.
    box.t_base = "homebox/v1/" + box.id
    box.t_status = box.t_base + "/status"
    box.t_desired = box.t_base + "/desired/"
    box.t_reported = box.t_base + "/reported/"
    sd = cfg["state_dir"]
    fsutil.makedirs(sd)
    if fsutil.exists(sd + "/keys.json"):
        cold("agent.keys", "overlay", cfg)     # keys rotated over MQTT override /secrets.json
    box.outbox = Outbox(sd + "/outbox", cfg["outbox_max_bytes"], cfg["outbox_seg_bytes"])
    box.boot = next_boot(box, sd)
    if validators is None:
        # Rules are imported when a document must be checked and released
        # after: updates are rare, RAM is the scarcest resource.
        from agent.rules import SECTIONS
        validators = {}
        for sec in cfg.get("sections") or SECTIONS:
            validators[sec] = box.validator(sec)
    box.twin = Twin(sd + "/docs", validators, on_apply=box.on_apply, now=box.now_ts,
                    verify=box.verify)
    box.connected = asyncio.Event()
    box.wake = asyncio.Event()
    box.stop = asyncio.Event()
    box.producers = []
    box.boot_ts = hal.now()
    if cfg.get("ota_dir"):
        ota_boot(box, cfg["ota_dir"])


def ota_boot(box, od):
    # Over-the-air releases at boot: a release on trial waits for its confirmation
    # (agent/session_cold.py), a fall-back by the board's boot is reported, and the
    # release section's last report is published again (agent/ota_cold.py).
    p = fsutil.read_json(od + "/boot.json")
    t = box.twin
    rep = fsutil.read_json(t.rep_path("release"))
    if isinstance(rep, dict):
        t.reported["release"] = rep
        t.dirty.append("release")
    if isinstance(p, dict):
        if p.get("state") == "trial":
            box.trial = p
        if p.get("rolled_back"):
            cold("agent.ota_cold", "rolled_back", box, p)


def next_boot(box, sd):
    # The boot counter is persisted before anything of this boot is stored,
    # and is always above any boot still in the outbox: sequence numbers of
    # an earlier boot are never reused, even if the counter file was lost.
    # A HAL with NVS (the ESP32: agent/hal/__init__.py nvs_get/nvs_set) keeps
    # a copy there, which a filesystem re-flash does not erase; the highest wins.
    path = sd + "/boot.json"
    saved = fsutil.read_json(path, {}) or {}
    last = saved.get("boot", 0) if isinstance(saved, dict) else 0
    hal = box.hal
    get = getattr(hal, "nvs_get", None)
    nv = 0
    if get is not None:
        try:
            nv = get("boot") or 0
        except Exception as e:
            log("nvs_failed", "error", repr(e))
            get = None
    boot = max(last, nv, box.outbox.top_boot) + 1
    if get is not None:
        try:
            hal.nvs_set("boot", boot)
        except Exception as e:
            log("nvs_failed", "error", repr(e))
    fsutil.write_json(path, {"boot": boot})
    return boot


def _task(box, name, fn):
    return asyncio.create_task(box.guard(name, fn))


def start(box):
    """Start the box's tasks; returns them."""
    log("boot", "box", box.id, "boot", box.boot, "fw", VERSION, "hal", box.hal.name,
        "backlog", box.outbox.count)
    box.running = True
    # agent/backoff.py through cold(): imported here, it would stay resident
    box.phase = cold("agent.backoff", "phase", box.id, box.cfg["telemetry_interval"])
    tasks = [_task(box, "connection", box.connection_task),
             _task(box, "telemetry", box.telemetry_task)]
    box.start_fx_task()
    hs = getattr(box.hal, "start", None)
    if hs is not None:
        # The HAL's own task: on the ESP32 the network bring-up and the watchdog.
        tasks.append(_task(box, "hal", lambda: hs(box, tasks)))
    c = box.cfg
    # The optional features, each imported only when enabled.
    if c.get("coverage"):
        from agent import coverage
        tasks.append(_task(box, "coverage", lambda: coverage.task(box)))
    if c.get("speed_url"):
        from agent import speedsched
        tasks.append(_task(box, "speedtest", lambda: speedsched.task(box)))
    if c.get("tic_mode") or c.get("water_enabled"):
        from agent import consumption
        cons = consumption.start(box)
        if cons.task is not None:
            tasks.append(cons.task)
    if c.get("dns_port") is not None:
        from agent import dns
        tasks += dns.start(box)
        fx = box.sections
        box.dns.state = fx.parental if fx is not None else (box.fx_state or (None,))[0]
        if "parental" in box.twin.applied:
            box.effects_pass(False)      # the report now says what the forwarder does
    if c.get("playlist_port") is not None:
        from agent import playlist
        tasks += playlist.start(box)
    dur = c["duration"]
    if dur:
        tasks.append(asyncio.create_task(box.timer(dur)))
    return tasks


# ---- desired documents ------------------------------------------------------------

def on_desired(box, topic, payload, oversized=None):
    p = box.t_desired
    if not (topic.startswith(p) and len(topic) > len(p) and "/" not in topic[len(p):]):
        return
    s = topic[len(p):]
    if oversized is None:
        try:
            if s == "release":
                # handled a little later, as a task of its own (agent/ota_later.py),
                # unless an install is under way: then at once (a replay, or a newer one)
                if box.ota_task is None:
                    box.ota_task = asyncio.create_task(cold("agent.ota_later", "run", box, payload))
                    result = "later"
                else:
                    result = cold("agent.ota_cold", "handle", box, payload)
                    if result == "install":
                        box.ota_task = asyncio.create_task(cold("agent.ota_install", "run", box, box.ota_doc))
                        box.ota_doc = None
                log("release", "result", result)
                box.wake.set()
                return
            if s == "keys":
                result = cold("agent.keys", "handle", box, payload)
                log("keys", "result", result, "version", box.cfg.get("key_version") or 0)
                box.wake.set()
                return
            result = box.twin.handle(s, payload)
        except Exception as e:
            # Never let one document kill the MQTT reader: it would stay retained
            # and the box would reconnect, fail again, forever.
            log("desired_failed", "section", s, "error", repr(e))
            return
        log("desired", "section", s, "result", result, "version", box.twin.version(s))
    else:
        box.twin.reject_oversized(s, oversized)
        log("desired", "section", s, "result", "rejected", "oversized", oversized)
    box.wake.set()


def check(box, section, doc):
    # The section's rules, with the applied documents as context (options name
    # bouquets of the lineup in force), except for the re-check of stored
    # documents at boot (the twin does not exist yet).
    t = box.twin
    from agent.rules import release, sections
    try:
        sections.check(section, doc, ctx=t.applied if t else None)
    finally:
        release()


def verify(box, section, doc):
    from agent.rules import release, sign
    try:
        sign.Verifier(box.id, box.cfg.get("hmac_key"), box.cfg.get("prev_hmac_key"),
                      box.twin.version if box.twin else None)(section, doc)
    finally:
        release()
