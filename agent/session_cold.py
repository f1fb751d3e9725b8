# One connection attempt of the runtime (Box.connection_task, agent/runtime.py):
# CONNECT with the last will, the retained online status, SUBSCRIBE to the desired
# documents; and the backoff before the next attempt. Cold code: loaded for an
# attempt and dropped after, apart from agent/runtime_cold.py so that the two are
# never in RAM together at the start of the tasks.
import asyncio
import json

from agent import VERSION
from agent.compat import cold, forget_asyncio_funcs
from agent.log import log
from agent.mqtt import Client, ConnectRefused


def status_doc(box, state):
    return json.dumps({"state": state, "box": box.id, "boot": box.boot, "fw": VERSION,
                       "ts": box.now_ts()})


async def open_session(box, attempt):
    # One connection attempt: CONNECT with the last will, the retained online
    # status, SUBSCRIBE to the desired documents. The connected Client, or None.
    cfg = box.cfg
    ready = getattr(box.hal, "ready", None)
    if ready is not None:
        await ready(cfg.get("tls"))      # an address (and for TLS a clock) first
    # After a key rotation (agent/keys.py) the new password first, the old one every
    # other attempt until the broker takes the new one.
    fallback = cfg.get("prev_mqtt_password") and attempt % 2 == 1
    pw = cfg["prev_mqtt_password"] if fallback else cfg.get("mqtt_password")
    c = Client(box.id, cfg["broker_host"], cfg["broker_port"], cfg.get("mqtt_user"), pw,
               cfg["keepalive"], tls_context(box) if cfg.get("tls") else None)
    c.on_message = box.on_message
    c.on_oversized = box.on_oversized
    c.on_close = box.wake.set      # the drain wakes when the session ends
    try:
        try:
            await c.connect(box.t_status, json.dumps({"state": "offline", "box": box.id, "boot": box.boot}))
        finally:
            forget_asyncio_funcs()
        await c.publish(box.t_status, status_doc(box, "online"), retain=True)
        if box.trial is not None:
            # connected and published: the release on trial is good (agent/ota_cold.py)
            cold("agent.ota_cold", "confirm", box)
        await c.subscribe(box.t_desired + "+")
    except ConnectRefused as e:
        log("refused", "reason", e)
    except Exception as e:
        log("connect_failed", "reason", e)
    else:
        if cfg.get("prev_mqtt_password") and not fallback:
            cold("agent.keys", "confirm", box)
        box.client = c
        box.connected.set()
        log("connected", "broker", "%s:%s" % (cfg["broker_host"], cfg["broker_port"]),
            "boot", box.boot, "attempt", attempt)
        return c
    await c.close()
    return None


async def backoff_wait(box, attempt):
    cfg = box.cfg
    delay = cold("agent.backoff", "full_jitter", attempt - 1, cfg["backoff_base"], cfg["backoff_cap"])
    log("reconnect", "attempt", attempt, "delay", "%.3f" % delay)
    await asyncio.sleep(delay)


def tls_context(box):
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca = box.cfg.get("tls_ca")
    if ca:
        ctx.load_verify_locations(cadata=ca_der(ca))
    return ctx


def ca_der(path):
    # The CA certificate as DER: MicroPython's mbedTLS build may not parse PEM
    # (ValueError 'invalid cert'), and CPython takes DER bytes as cadata too.
    # A PEM file gives its first certificate (the fleet CA).
    with open(path, "rb") as f:
        data = f.read()
    i = data.find(b"-----BEGIN CERTIFICATE-----")
    if i < 0:
        return data
    j = data.find(b"-----END", i + 27)
    import binascii
    return binascii.a2b_base64(b"".join(data[i + 27:j].split()))
