# The box's secrets in NVS (agent/secretstore.py) on a HAL with NVS blobs, both
# interpreters: the bench's /secrets.json is copied, read back, then removed; the
# next boot reads NVS; a failing NVS keeps the file; rotated keys go to NVS.
import json

from agent import fsutil, secretstore

SECRETS = {"mqtt_user": "HB-000001", "mqtt_password": "p" * 26, "hmac_key": "ab" * 32, "key_version": 1}


class NvsHal:
    def __init__(self, fail=False):
        self.blobs = {}
        self.fail = fail

    def nvs_get_blob(self, key):
        return self.blobs.get(key)

    def nvs_set_blob(self, key, value):
        if self.fail:
            raise OSError(-0x1105)        # ESP_ERR_NVS_NOT_ENOUGH_SPACE
        self.blobs[key] = bytes(value)


class Box:
    def __init__(self, hal, cfg):
        self.hal, self.cfg = hal, cfg


def _bench_file(tmp):
    path = tmp + "/secrets.json"
    fsutil.write_json(path, SECRETS)
    return path


def test_first_boot_moves_the_file_into_nvs_and_the_next_reads_it(tmp):
    hal = NvsHal()
    path = _bench_file(tmp)
    cfg = dict(SECRETS)                       # agent/config.py merged the file
    secretstore.boot(cfg, hal, path)
    assert not fsutil.exists(path)
    assert json.loads(hal.blobs["secrets"]) == SECRETS and cfg["secrets_nvs"]
    cfg2 = {"box_id": "HB-000001"}            # the next boot: no file
    secretstore.boot(cfg2, hal, None)
    assert cfg2["mqtt_password"] == SECRETS["mqtt_password"] and cfg2["hmac_key"] == SECRETS["hmac_key"]


def test_a_new_bench_file_wins_over_nvs(tmp):
    hal = NvsHal()
    secretstore.boot(dict(SECRETS), hal, _bench_file(tmp))
    new = dict(SECRETS, mqtt_password="q" * 26, key_version=2)
    path = tmp + "/secrets.json"
    fsutil.write_json(path, new)              # the box came back to the bench
    secretstore.boot(dict(new), hal, path)
    assert json.loads(hal.blobs["secrets"])["mqtt_password"] == "q" * 26 and not fsutil.exists(path)


def test_a_failing_nvs_keeps_the_file_and_rotations_go_to_the_file(tmp):
    hal = NvsHal(fail=True)
    path = _bench_file(tmp)
    cfg = dict(SECRETS)
    secretstore.boot(cfg, hal, path)
    assert fsutil.exists(path) and "secrets" not in hal.blobs and not cfg.get("secrets_nvs")
    assert not secretstore.save(Box(hal, cfg), {"key_version": 2})


def test_rotated_keys_go_to_nvs_and_prev_password_is_dropped(tmp):
    hal = NvsHal()
    cfg = dict(SECRETS)
    secretstore.boot(cfg, hal, _bench_file(tmp))
    box = Box(hal, cfg)
    assert secretstore.save(box, {"key_version": 2, "mqtt_password": "r" * 26,
                                  "prev_mqtt_password": SECRETS["mqtt_password"]})
    d = json.loads(hal.blobs["secrets"])
    assert d["key_version"] == 2 and d["prev_mqtt_password"] == SECRETS["mqtt_password"]
    assert d["hmac_key"] == SECRETS["hmac_key"]          # what the rotation did not change stays
    assert secretstore.save(box, {}, ("prev_mqtt_password",))
    assert "prev_mqtt_password" not in json.loads(hal.blobs["secrets"])


def test_no_nvs_no_change(tmp):
    class Sim:
        pass
    assert not secretstore.has_nvs(Sim())
    assert not secretstore.save(Box(Sim(), {"secrets_nvs": True}), {"key_version": 2})
