# A deterministic simulated home. Same seed, same home, on CPython and MicroPython.
# The core (clock, identity, enforcers) is always in RAM. The parts a scenario or
# the config enables (Wi-Fi stations and neighbours, a Linky meter, a water meter)
# are wired in at boot by agent/hal/sim_homes.py and give this HAL the optional
# methods of agent/hal/__init__.py; a plain box loads none of them.

from agent import fsutil
from agent.hal.sim_clock import DEFAULT_SIM_EPOCH, SimClock  # noqa: F401


class SimHal:
    name = "sim"

    def __init__(self, config):
        # config["scenario"]: a home's name (agent/hal/sim_homes.py) or a dict
        # with any of start, mac, stations, wifi, linky, water.
        self.config = config
        sc = config.get("scenario") or {}
        fsutil.makedirs(config["state_dir"])
        self.enforced = {}
        if isinstance(sc, str) or "wifi" in sc or config.get("tic_mode") or config.get("water_enabled"):
            from agent.compat import cold
            sc = cold("agent.hal.sim_homes", "attach", self, config, sc)
        else:
            self.clock = SimClock(config["state_dir"], config.get("speedup", 1), sc.get("start"))
        self.scenario = sc
        self._mac = sc.get("mac") or self._mac_from_id(config["box_id"])

    @staticmethod
    def _mac_from_id(box_id):
        h = 0
        for c in box_id.encode():
            h = (h * 31 + c) & 0xFFFFFFFF
        return "24:0a:c4:%02x:%02x:%02x" % ((h >> 16) & 255, (h >> 8) & 255, h & 255)

    def now(self):
        return self.clock.now()

    async def sleep(self, seconds):
        await self.clock.sleep(seconds)

    def mac(self):
        return self._mac

    def ap_info(self):
        # The tenant's access point as this HAL set it up (here: from the config).
        c = self.config
        return {"ssid": c.get("wifi_ssid"), "up": bool(c.get("wifi_ssid")),
                "security": "wpa2" if c.get("wifi_key") else "open"}

    def health(self):
        f = getattr(self, "stations", None)
        return {"wifi_clients": len(f() if f else self.scenario.get("stations") or ()), "flash_ok": True}

    def enforce(self, section, doc):
        self.enforced[section] = doc.get("version")

    def enforce_parental(self, state):
        self.enforced["parental_state"] = state

    def enforce_lineup(self, channels):
        self.enforced["lineup"] = len(channels)

    def leases(self):
        # IP -> MAC of the home's devices, for the DNS forwarder (agent/dns.py). A
        # host has no DHCP server of ours: a dnsmasq leases file if the config
        # names one ("leases_file": "expiry mac ip name id" lines), else the
        # kernel's neighbour table (/proc/net/arp), which holds the MAC of every
        # device that sent us a packet. None where neither can be read.
        path = self.config.get("leases_file")
        try:
            with open(path or "/proc/net/arp") as f:
                out = {}
                for line in f:
                    w = line.split()
                    if path and len(w) >= 3:
                        out[w[2]] = w[1].lower()
                    elif not path and len(w) >= 4 and w[3].count(":") == 5 and w[3] != "00:00:00:00:00:00":
                        out[w[0]] = w[3].lower()
                return out
        except OSError:
            return None
