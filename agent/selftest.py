# The self-test behind the console's `selftest` command (agent/console.py).
# Loaded for one run and dropped after. Each check says pass, fail or n/a (not
# testable with this HAL or configuration), with a plain detail; the result is
# ok when nothing failed. It never reports a secret's value, only whether the
# box has it.
import asyncio
import os

from agent import fsutil
from agent.compat import ticks_diff, ticks_ms

NEEDED_SECRETS = ("mqtt_password", "hmac_key", "wifi_key")


def _check(name, status, detail):
    return {"name": name, "status": status, "detail": detail}


def fs(box):
    sd = box.cfg["state_dir"]
    path = sd + "/selftest.tmp"
    data = "homebox selftest %d" % ticks_ms()
    try:
        fsutil.atomic_write(path, data)
        with open(path) as f:
            back = f.read()
        fsutil.remove(path)
    except OSError as e:
        return _check("filesystem", "fail", "cannot write %s: %s" % (sd, e))
    if back != data:
        return _check("filesystem", "fail", "read back differs from what was written")
    detail = "read/write ok"
    try:
        st = os.statvfs("/")
        detail += ", %d KiB free" % (st[0] * st[3] // 1024)
    except (AttributeError, OSError):
        pass
    return _check("filesystem", "pass", detail)


def identity(box):
    cfg = box.cfg
    problems = []
    want = cfg.get("mac")
    got = box.hal.mac()
    if want and want.lower() != str(got).lower():
        problems.append("image built for MAC %s but this box is %s" % (want, got))
    serial = cfg.get("serial")
    if serial and serial != box.id:
        problems.append("serial %s differs from box id %s" % (serial, box.id))
    missing = [k for k in NEEDED_SECRETS if not cfg.get(k)]
    if missing:
        problems.append("missing credentials: " + ", ".join(missing))
    if problems:
        return _check("identity", "fail", "; ".join(problems))
    return _check("identity", "pass", "box %s, MAC %s, credentials present" % (box.id, got))


def documents(box):
    # The twin loaded and validated every stored document at boot, falling back
    # to the last-known-good copy (or to none) when one did not parse: a stored
    # document that is not the one in force is the failure. Nothing is re-read.
    tw = box.twin
    bad = []
    n = 0
    for s in tw.validators:
        if not fsutil.exists(tw.doc_path(s)):
            continue
        n += 1
        if s not in tw.applied or (tw.reported.get(s) or {}).get("source") != "current":
            bad.append(s)
    d = __file__.rsplit("/", 1)[0] if "/" in __file__ else "agent"
    if fsutil.size(d + "/rules/channels_tnt.json") <= 0:
        bad.append("rules/channels_tnt.json")
    if bad:
        return _check("documents", "fail", "do not parse: " + ", ".join(bad))
    return _check("documents", "pass", "%d stored documents in force" % n)


def wifi(box):
    scan = getattr(box.hal, "scan", None)
    if scan is None:
        return _check("wifi_scan", "n/a", "this HAL has no radio scan")
    try:
        aps = scan()
    except Exception as e:
        return _check("wifi_scan", "fail", "radio scan failed: %r" % (e,))
    return _check("wifi_scan", "pass", "%d access points seen" % len(aps))


async def tic(box, seconds):
    cfg = box.cfg
    if not cfg.get("tic_mode"):
        return _check("tic_uart", "n/a", "no TIC input configured")
    cons = getattr(box, "consumption", None)
    reader = getattr(cons, "reader", None) if cons is not None else None
    own = reader is None
    read = getattr(box.hal, "tic_read", None)
    if own:
        if read is None:
            return _check("tic_uart", "n/a", "this HAL has no TIC UART")
        from agent import tic as ticmod
        reader = ticmod.Reader(None, ticmod.KEEP, False, False)
    buf = bytearray(256)
    t0 = ticks_ms()
    ok0, bytes0 = reader.frames_ok, reader.bytes
    try:
        while ticks_diff(ticks_ms(), t0) < seconds * 1000 and reader.frames_ok == ok0:
            if own:
                n = read(buf)
                if n:
                    reader.feed(buf, n)
            await asyncio.sleep(0.1)
    except Exception as e:
        return _check("tic_uart", "fail", "TIC UART error: %r" % (e,))
    got = reader.bytes - bytes0
    frames = reader.frames_ok - ok0
    if frames:
        return _check("tic_uart", "pass", "%d valid frames" % frames)
    if got:
        return _check("tic_uart", "fail", "%d bytes but no valid frame: check the TIC wiring and mode" % got)
    return _check("tic_uart", "pass", "UART open, no meter signal")


def pulse(box):
    if not box.cfg.get("water_enabled"):
        return _check("pulse_input", "n/a", "no water meter input configured")
    cons = getattr(box, "consumption", None)
    wm = getattr(cons, "wm", None) if cons is not None else None
    if wm is not None:
        return _check("pulse_input", "pass", "input running, index %s pulses" % wm.pulses)
    fn = getattr(box.hal, "water_edges", None)
    if fn is None:
        return _check("pulse_input", "n/a", "this HAL has no pulse input")
    try:
        _now, edges = fn()
    except Exception as e:
        return _check("pulse_input", "fail", "pulse input error: %r" % (e,))
    return _check("pulse_input", "pass", "input readable, %d edges" % len(edges))


async def mqtt(box, wait_s):
    cfg = box.cfg
    where = "%s:%s" % (cfg["broker_host"], cfg["broker_port"])
    t0 = ticks_ms()
    while not box.connected.is_set():
        if ticks_diff(ticks_ms(), t0) > wait_s * 1000:
            return _check("mqtt", "fail", "no connection to the broker %s" % where), None
        await asyncio.sleep(0.1)
    # One telemetry message, out of cycle; the bench checks it arrived.
    ob = box.outbox
    ahead = ob.count
    acked = [0]
    orig = ob.ack

    def ack():
        orig()
        acked[0] += 1

    ob.ack = ack
    try:
        box.emit("health", box.health())
        msg = {"boot": box.boot, "seq": box.seq}
        while acked[0] <= ahead:
            if ticks_diff(ticks_ms(), t0) > wait_s * 1000:
                return _check("mqtt", "fail", "connected to %s but the telemetry message was not acknowledged" % where), msg
            await asyncio.sleep(0.05)
    finally:
        del ob.ack
    return _check("mqtt", "pass", "telemetry boot %d seq %d acknowledged by %s" % (msg["boot"], msg["seq"], where)), msg


async def run(box):
    wait = box.cfg.get("selftest_wait_s", 20)
    checks = []
    import gc
    msg = None
    for fn in (fs, identity, documents, wifi, tic, pulse, mqtt):
        gc.collect()
        try:
            if fn is tic:
                r = await tic(box, box.cfg.get("selftest_tic_s", 3))
            elif fn is mqtt:
                r, msg = await mqtt(box, wait)
            else:
                r = fn(box)
        except MemoryError:
            r = _check(fn.__name__, "fail", "out of memory during the check")
        except Exception as e:
            r = _check(fn.__name__, "fail", "error: %r" % (e,))
        checks.append(r)
    gc.collect()
    failed = [c["name"] for c in checks if c["status"] == "fail"]
    return {"ok": not failed, "failed": failed, "checks": checks, "telemetry": msg}
