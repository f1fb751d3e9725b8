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
    # MQTT keepalive, s: a ping only after this long without sending; the broker
    # sees a dead box after 1.5x (270 s), the box a dead broker after 1.5x too
    # (docs/performance.md, wire cost).
    "keepalive": 180,
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
    # Sim HAL: a home's name (agent/hal/sim_homes.py: good_home, weak_bedroom,
    # leaking_tap), which also turns on its features, or a scenario dict.
    "scenario": {},
    # Optional features, off by default: each is imported only when enabled.
    "coverage": False,          # Wi-Fi coverage telemetry (agent/coverage.py)
    "speed_url": None,          # scheduled speed tests against this URL (agent/speedtest.py)
    "tic_mode": None,           # "auto" | "historic" | "standard": Linky TIC (agent/consumption.py)
    "water_enabled": False,     # water pulse meter (agent/consumption.py)
    # The home network's services (issue 15, docs/parental-dns.md), off unless the
    # config sets a port; not listed here, since every key costs the box's heap:
    #   "dns_port" (53 on a box), "dns_upstreams", "dns_blocklist", "dns_cache",
    #   "leases_file" (agent/dns.py); "playlist_port" (agent/playlist.py).
    # Stop conditions for host runs: 0 means run forever.
    "max_cycles": 0,
    "duration": 0,
}



def load(path=None, secrets_path=None, overrides=None):
    given = {}
    if path:
        data = fsutil.read_json(path)
        if not isinstance(data, dict):
            raise ValueError("config %s: missing or not a JSON object" % path)
        given.update(data)
    if secrets_path:
        data = fsutil.read_json(secrets_path)
        if isinstance(data, dict):
            given.update(data)
    if overrides:
        given.update(overrides)
    cfg = dict(DEFAULTS)
    sc = given.get("scenario")
    if isinstance(sc, str) and given.get("hal", "sim") == "sim":
        # A named sim home turns on what it simulates, unless the config says otherwise.
        from agent.compat import cold
        cfg.update(cold("agent.hal.sim_homes", "config_defaults", sc))
    cfg.update(given)
    if not cfg.get("box_id"):
        raise ValueError("config: box_id is required")
    return cfg

