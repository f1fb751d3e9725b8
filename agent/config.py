# Agent configuration: defaults, then /config.json (written by the bench), then
# /secrets.json (credentials; never logged). Unknown keys are kept for modules.
from agent import fsutil

DEFAULTS = {
    "box_id": None,
    "hal": "sim",
    "broker_host": "127.0.0.1",
    "broker_port": 1883,
    "tls": False,
    "tls_ca": None,
    "keepalive": 30,
    # Seconds between health reports; each telemetry kind may add its own.
    "telemetry_interval": 300,
    "backoff_base": 1.0,
    "backoff_cap": 300.0,
    # 256 KiB holds well over 24 h of default-cadence telemetry (docs/contract/README.md).
    "outbox_max_bytes": 262144,
    "outbox_seg_bytes": 16384,
    # Records per second when draining a backlog after a reconnect.
    "drain_rate": 20,
    "state_dir": "state",
    "speedup": 1,
    "seed": 1,
    "scenario": {},
    # Stop conditions for host runs: 0 means run forever.
    "max_cycles": 0,
    "duration": 0,
}



def load(path=None, secrets_path=None, overrides=None):
    cfg = dict(DEFAULTS)
    if path:
        data = fsutil.read_json(path)
        if not isinstance(data, dict):
            raise ValueError("config %s: missing or not a JSON object" % path)
        cfg.update(data)
    if secrets_path:
        data = fsutil.read_json(secrets_path)
        if isinstance(data, dict):
            cfg.update(data)
    if overrides:
        cfg.update(overrides)
    if not cfg.get("box_id"):
        raise ValueError("config: box_id is required")
    return cfg

