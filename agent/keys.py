# Key rotation on the box (docs/decisions/0013-per-box-secrets.md). Cold code:
# loaded when a desired/keys document arrives or a session confirms new keys.
#
# The operator sends the box's next credentials in a desired/keys document signed
# with the box's current HMAC key, the secrets wrapped under that same key:
#     {"version": V, "box": ID, "nonce": hex16, "enc": hex, "sig": hex}
#     wrap key = HMAC(key, "homebox-key-wrap"); keystream block i =
#     HMAC(wrap key, nonce | i); enc = JSON {"p": mqtt password, "k": hmac key hex} XOR keystream
# The box persists them in NVS where the HAL has it (agent/secretstore.py), else
# atomically in STATE/keys.json (which overrides /secrets.json at boot), reports "applied", and keeps its current MQTT password as the fallback
# until a session with the new one succeeds; then it reports "confirmed".
import json
from binascii import hexlify, unhexlify

from agent import fsutil
from agent.compat import cold

WRAP = b"homebox-key-wrap"


def stream(key, nonce, n):
    from agent.rules.sign import hmac
    wk = hmac(key, WRAP)
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hmac(wk, nonce + bytes((i,)))
        i += 1
    return out[:n]


def wrap(key, nonce, data):
    # XOR with the keystream: wraps and unwraps (data: bytes)
    out = stream(key, nonce, len(data))
    for i in range(len(data)):
        out[i] ^= data[i]
    return bytes(out)


def path(box):
    return box.cfg["state_dir"] + "/keys.json"


def overlay(cfg):
    # At boot: rotated keys (STATE/keys.json) override the bench's /secrets.json.
    k = fsutil.read_json(cfg["state_dir"] + "/keys.json")
    if isinstance(k, dict) and k.get("key_version", 0) > (cfg.get("key_version") or 0):
        cfg.update(k)


def _report(box, rep):
    rep["section"] = "keys"
    box.twin.set_reported("keys", rep)


def handle(box, payload):
    # One desired/keys document; returns the outcome (applied, replay, rejected, ignored).
    from agent.rules import release, sign
    from agent.twin import Invalid
    cfg = box.cfg
    cur = cfg.get("key_version") or 0
    if not payload:
        return "ignored"                  # the operator cleared the retained document
    try:
        try:
            doc = json.loads(payload)
        except ValueError:
            raise Invalid("$", "not valid JSON")
        if not isinstance(doc, dict):
            raise Invalid("$", "must be a JSON object")
        v = doc.get("version")
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise Invalid("version", "must be an integer >= 1")
        if v <= cur:
            return "replay"           # changes nothing (signed with a key the box may have left)
        if not cfg.get("hmac_key"):
            raise Invalid("sig", "this box has no key to check a key update with")
        sign.Verifier(box.id, cfg["hmac_key"])("keys", doc)
        nonce, enc = doc.get("nonce"), doc.get("enc")
        try:
            data = wrap(unhexlify(cfg["hmac_key"]), unhexlify(nonce), unhexlify(enc))
            new = json.loads(data)
            p, k = new["p"], new["k"]
            if not isinstance(p, str) or len(p) < 16 or not isinstance(k, str) or len(unhexlify(k)) != 32:
                raise ValueError
        except (TypeError, ValueError, KeyError):
            raise Invalid("enc", "does not hold a password and a 32-byte key")
    except Invalid as e:
        _report(box, {"version": cur, "status": "rejected",
                      "rejected": {"field": e.field, "reason": e.rule}})
        return "rejected"
    finally:
        release()                     # the rules package (the HMAC) leaves RAM again
    keys = {"key_version": v, "mqtt_password": p, "hmac_key": k,
            "prev_mqtt_password": cfg.get("mqtt_password"), "prev_hmac_key": cfg.get("hmac_key")}
    if not cold("agent.secretstore", "save", box, keys):
        fsutil.write_json(path(box), keys)    # no NVS: atomic, old or new after a power cut
    cfg.update(keys)
    _report(box, {"version": v, "status": "applied"})
    return "applied"


def confirm(box):
    # A session with the new password succeeded: the old password is no longer
    # needed (the old HMAC key stays, to recognise replays of documents it signed).
    cfg = box.cfg
    cfg.pop("prev_mqtt_password", None)
    cold("agent.secretstore", "save", box, {}, ("prev_mqtt_password",))
    keys = fsutil.read_json(path(box))
    if isinstance(keys, dict):
        keys.pop("prev_mqtt_password", None)
        fsutil.write_json(path(box), keys)
    _report(box, {"version": cfg.get("key_version") or 0, "status": "confirmed"})


def salt(cfg):
    # The box's own random salt (hex), made once and kept in STATE/salt.json (the
    # same file as the coverage's station salt): hashes of a meter number or a MAC
    # cannot be brute-forced from the public box id.
    path = cfg["state_dir"] + "/salt.json"
    d = fsutil.read_json(path, {}) or {}
    if not isinstance(d, dict) or not d.get("salt"):
        from agent import compat
        fsutil.makedirs(cfg["state_dir"])
        d = {"salt": hexlify(compat.urandom(16)).decode()}
        fsutil.write_json(path, d)
    return d["salt"]
