# The self-test behind the console's `selftest [BROKER]` command (agent/console.py).
# Loaded for one run and dropped after. Each check says pass, fail or n/a, with a
# plain detail; the result is ok when nothing failed. n/a only for a part the
# box's configuration does not enable: an enabled part (TIC, water, access point)
# that gives nothing is a fail that says what to check. BROKER (the bench's,
# mqtt://host:port or mqtts://host:port) is where the mqtt check connects, with
# the box's own credentials, in a session of its own: the box's configuration
# keeps its production broker. It never reports a secret's value, only whether
# the box has it.
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
            return _check("tic_uart", "fail", "TIC is on in the settings but this box has no TIC input")
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
    return _check("tic_uart", "fail", "no signal from the electricity meter in %d s: check that the TIC test "
                  "cable is plugged into the box's TIC input, then run again" % seconds)


def pulse(box):
    if not box.cfg.get("water_enabled"):
        return _check("pulse_input", "n/a", "no water meter input configured")
    cons = getattr(box, "consumption", None)
    wm = getattr(cons, "wm", None) if cons is not None else None
    if wm is not None:
        return _check("pulse_input", "pass", "input running, index %s pulses" % wm.pulses)
    fn = getattr(box.hal, "water_edges", None)
    if fn is None:
        return _check("pulse_input", "fail", "water meter is on in the settings but this box has no pulse input")
    try:
        _now, edges = fn()
    except Exception as e:
        return _check("pulse_input", "fail", "pulse input error: %r" % (e,))
    return _check("pulse_input", "pass", "input readable, %d edges" % len(edges))


def ap(box):
    # The tenant's access point: up, with the SSID on the label, WPA2 (the key
    # on the label is the one the box was given: it cannot be read back).
    cfg = box.cfg
    want = cfg.get("wifi_ssid")
    if not want or cfg.get("ap") is False:
        return _check("access_point", "n/a", "no access point in the settings")
    fn = getattr(box.hal, "ap_info", None)
    if fn is None:
        return _check("access_point", "fail", "this box cannot report its Wi-Fi access point")
    i = fn() or {}
    if not i.get("up"):
        return _check("access_point", "fail", "the Wi-Fi access point %s is not on" % want)
    if i.get("ssid") != want:
        return _check("access_point", "fail", "the Wi-Fi name is %s, the label says %s" % (i.get("ssid"), want))
    if i.get("security") != "wpa2" or not cfg.get("wifi_key"):
        return _check("access_point", "fail", "the Wi-Fi %s has no WPA2 key" % want)
    return _check("access_point", "pass", "Wi-Fi %s on, WPA2 with the label's key" % want)


def parse_url(url):
    # "mqtt://host:port", "mqtts://host:port" or "host:port" -> (host, port, tls)
    tls = url.startswith("mqtts://")
    if "://" in url:
        url = url.split("://", 1)[1]
    host, _, port = url.rstrip("/").rpartition(":")
    if not host:
        host, port = port, ""
    return host, int(port) if port else (8883 if tls else 1883), tls


def _other(box, url):
    # A broker that is not the box's own: a session of its own there. The box's
    # own broker (a lab bench that wrote itself into the box) is tested through
    # the box's session: a second one with the same client id would replace it.
    if not url:
        return False
    try:
        host, port, _tls = parse_url(url)
    except ValueError:
        return True
    return (host, port) != (box.cfg.get("broker_host"), box.cfg.get("broker_port"))


async def bench_mqtt(box, url, wait_s):
    # One telemetry message to the bench broker, in a session of its own with the
    # box's credentials; the box's own connection (production broker) is untouched.
    from agent.mqtt import Client
    cfg = box.cfg
    try:
        host, port, tls = parse_url(url)
    except ValueError:
        return _check("mqtt", "fail", "bad bench broker address %s" % url), None
    where = "%s:%s%s" % (host, port, " (TLS)" if tls else "")
    ctx = None
    if tls:
        from agent.compat import cold
        ctx = cold("agent.session_cold", "tls_context", box)
    c = Client(box.id, host, port, cfg.get("mqtt_user"), cfg.get("mqtt_password"), 30, ctx)
    msg = {"boot": box.boot, "seq": 0}
    try:
        try:
            await c.connect(timeout=wait_s)
        except Exception as e:
            if hasattr(e, "code"):          # ConnectRefused
                return _check("mqtt", "fail", "the bench broker %s refused this box's login (%s): are its "
                              "credentials on the bench broker?" % (where, e)), None
            return _check("mqtt", "fail", "no connection to the bench broker %s: %s" % (where, e)), None
        import json
        env = {"v": 1, "box": box.id, "boot": box.boot, "seq": 0, "ts": box.now_ts(), "kind": "health",
               "data": box.health(), "selftest": True}
        try:
            await asyncio.wait_for(c.publish("homebox/v1/%s/telemetry/health" % box.id, json.dumps(env)), wait_s)
        except Exception as e:
            return _check("mqtt", "fail", "connected to %s but the telemetry message was not acknowledged: %s"
                          % (where, e)), msg
        return _check("mqtt", "pass", "telemetry boot %d seq 0 acknowledged by %s, with the box's credentials"
                      % (box.boot, where)), msg
    finally:
        try:
            await c.disconnect()
        except Exception:
            await c.close()


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


async def run(box, broker=None):
    wait = box.cfg.get("selftest_wait_s", 20)
    checks = []
    import gc
    msg = None
    for fn in (fs, identity, documents, wifi, ap, tic, pulse, mqtt):
        gc.collect()
        try:
            if fn is tic:
                r = await tic(box, box.cfg.get("selftest_tic_s", 3))
            elif fn is mqtt:
                r, msg = await (bench_mqtt(box, broker, wait) if _other(box, broker) else mqtt(box, wait))
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
