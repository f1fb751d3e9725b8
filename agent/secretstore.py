# The box's secrets (MQTT password, HMAC key, their version, the AP key) in NVS on
# a HAL that has it (the ESP32) rather than in a clear file on the filesystem
# (docs/hardware.md "Secrets at rest"). Cold code: it runs at boot and when keys
# are rotated (agent/keys.py), then leaves RAM.
#
# The bench writes /secrets.json into the box's filesystem image. At the first
# boot the box copies it into NVS (one blob, "secrets"), reads it back, and only
# then removes the file; later boots read NVS. A /secrets.json present at boot is
# always newer than NVS (the bench wrote it, the box removes it once copied), so a
# box re-provisioned at the bench takes its new secrets; a power cut between the
# copy and the removal copies again. Nothing here logs a secret.
import json

from agent import fsutil
from agent.log import log

BLOB = "secrets"


def has_nvs(hal):
    return getattr(hal, "nvs_set_blob", None) is not None


def boot(cfg, hal, path):
    # path: the bench's /secrets.json if there is one (agent/config.py has
    # already merged it into cfg), else None: then NVS's secrets go into cfg.
    # cfg["secrets_nvs"]: NVS holds this boot's secrets (rotations go there too).
    if path:
        data = fsutil.read_json(path)
        if isinstance(data, dict) and put(hal, data):
            fsutil.remove(path)
            cfg["secrets_nvs"] = True
            log("secrets_moved", "to", "nvs", "keys", len(data))
        return
    d = get(hal)
    if d:
        cfg.update(d)
        cfg["secrets_nvs"] = True


def get(hal):
    try:
        b = hal.nvs_get_blob(BLOB)
        d = json.loads(b) if b else None
    except Exception as e:              # an unreadable blob: the filesystem's copy, if any
        log("nvs_failed", "error", type(e).__name__)
        return None
    return d if isinstance(d, dict) else None


def put(hal, d):
    # True once NVS holds exactly d (read back).
    b = json.dumps(d).encode()
    try:
        hal.nvs_set_blob(BLOB, b)
        ok = hal.nvs_get_blob(BLOB) == b
    except Exception as e:
        log("nvs_failed", "error", type(e).__name__)
        return False
    if not ok:
        log("nvs_failed", "error", "read back differs")
    return ok


def save(box, keys, drop=()):
    # Rotated keys (agent/keys.py) into NVS with the rest of the secrets, `drop`
    # removed. False where the HAL has no NVS, the secrets are not there yet, or it
    # failed: the caller keeps them in STATE/keys.json instead.
    hal = getattr(box, "hal", None)
    if not has_nvs(hal) or not box.cfg.get("secrets_nvs"):
        return False            # the bench's file is still the copy in force
    d = get(hal) or {}
    d.update(keys)
    for k in drop:
        d.pop(k, None)
    return put(hal, d)
