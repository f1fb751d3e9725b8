# The serial console's commands (agent/console.py loads this for one line and
# drops it after). Answers: one line, "@<command> <JSON>". Never a secret: no
# answer has a secret field, and every answer is scrubbed of the values of the
# secret config keys before it goes out.
import json
import sys

SECRET_KEYS = ("mqtt_password", "hmac_key", "wifi_key")


def is_secret_key(k):
    return k in SECRET_KEYS or "password" in k or "secret" in k or k.endswith("_key")


def scrub(text, cfg):
    for k in cfg:
        v = cfg[k]
        if isinstance(v, str) and len(v) >= 4 and is_secret_key(k) and v in text:
            text = text.replace(v, "***")
    return text


def answer(con, cmd, obj):
    con.write(scrub("@" + cmd + " " + json.dumps(obj), con.box.cfg))


def info(con):
    from agent import VERSION
    box = con.box
    cfg = box.cfg
    c = box.client
    impl = sys.implementation
    return {
        "box": box.id,
        "serial": cfg.get("serial") or box.id,
        "mac": box.hal.mac(),
        "agent": VERSION,
        "agent_build": con.fw.get("agent_build"),
        "firmware": con.fw.get("firmware"),
        "interpreter": "%s %s" % (impl.name, ".".join(str(x) for x in impl.version[:3])),
        "hal": box.hal.name,
        "boot": box.boot,
        "uptime_s": box.uptime(),
        "broker": "%s:%s" % (cfg["broker_host"], cfg["broker_port"]),
        "connected": bool(c is not None and c.connected),
        "wifi_ssid": cfg.get("wifi_ssid"),
        # which credentials are present, never their values
        "secrets": sorted(k for k in cfg if is_secret_key(k) and cfg[k]),
    }


async def handle(con, line):
    words = line.split()
    cmd = words[0]
    try:
        if cmd == "info":
            answer(con, "info", info(con))
        elif cmd == "selftest":
            from agent.compat import cold
            # selftest [BROKER]: test MQTT against that broker (the bench's), not the box's own
            answer(con, "selftest", await cold("agent.selftest", "run", con.box, words[1] if len(words) > 1 else None))
        elif cmd == "log":
            from agent.log import RING
            n = len(RING)
            if len(words) > 1:
                try:
                    n = max(0, min(n, int(words[1])))
                except ValueError:
                    pass
            answer(con, "log", {"lines": RING[len(RING) - n:]})
        elif cmd == "help":
            answer(con, "help", {"commands": ["info", "selftest [BROKER]", "log [N]", "help"],
                                 "answers": "one line each: @<command> <JSON>"})
        else:
            answer(con, "error", {"cmd": cmd[:32], "reason": "unknown command: try help"})
    except Exception as e:
        answer(con, "error", {"cmd": cmd[:32], "reason": repr(e)[:120]})
