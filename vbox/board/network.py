# network for the emulated ESP32 board (vbox/board/): WLAN (STA and AP) and LAN
# as MicroPython's esp32 port gives them, with their quirks: scan() gives
# (ssid, bssid, channel, RSSI, security, hidden) tuples and works on an active
# STA only; status('stations') on the AP gives MACs only, no RSSI;
# status('rssi') works on a connected STA only. The radio's world (neighbours,
# stations, the uplink) is the vbox host's (vbox/boardhost.py), through _board.
import _board

STA_IF = 0
AP_IF = 1
AUTH_OPEN = 0
AUTH_WEP = 1
AUTH_WPA_PSK = 2
AUTH_WPA2_PSK = 3
AUTH_WPA_WPA2_PSK = 4
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_BEACON_TIMEOUT = 200
ETH_INITIALIZED = 0
ETH_STARTED = 1
ETH_STOPPED = 2
ETH_CONNECTED = 3
ETH_DISCONNECTED = 4
ETH_GOT_IP = 5
PHY_LAN8720 = 1
PHY_IP101 = 2
PHY_RTL8201 = 3
PHY_DP83848 = 4
PHY_KSZ8041 = 5

_ifs = {}
_NOIP = ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")


def _up():
    _board.pump()
    if _board.state.get("hang"):
        # a stuck driver: the call never returns and the event loop stops with it
        import time
        while True:
            time.sleep_ms(200)
    return bool(_board.state.get("uplink"))


def hostname(name=None):
    return "homebox" if name is None else None


def country(code=None):
    return "FR" if code is None else None


def ipconfig(*args, **kwargs):
    return None


class WLAN:
    def __new__(cls, interface_id=STA_IF):
        w = _ifs.get(interface_id)
        if w is None:
            w = object.__new__(cls)
            w.i = interface_id
            w.on = False
            w.ssid = None
            w.cfg = {"channel": 1, "security": AUTH_OPEN}
            _ifs[interface_id] = w
        return w

    def __init__(self, interface_id=STA_IF):
        pass

    def active(self, is_active=None):
        if is_active is None:
            return self.on
        self.on = bool(is_active)
        if self.i == AP_IF:
            self._ap()

    def connect(self, ssid=None, key=None, *, bssid=None):
        if self.i != STA_IF or not self.on:
            raise OSError("STA must be active")
        self.ssid = ssid
        _board.send(b"C" + str(ssid).encode())

    def disconnect(self):
        self.ssid = None

    def isconnected(self):
        if self.i == AP_IF:
            return self.on and bool(self.status("stations"))
        return self.on and self.ssid is not None and _up()

    def status(self, param=None):
        if param is None:
            if self.ssid is None:
                return STAT_IDLE
            return STAT_GOT_IP if _up() else STAT_NO_AP_FOUND
        if param == "stations":
            if self.i != AP_IF:
                raise ValueError("AP required")
            _board.pump()
            # MicroPython's esp32 port: MACs only, no RSSI (micropython#3818).
            return [(_mac(m),) for m in _board.state.get("stations") or ()] if self.on else []
        if param == "rssi":
            if self.i != STA_IF or not self.isconnected():
                raise OSError("STA must be connected")
            return int(_board.state.get("rssi", -60))
        raise ValueError("unknown status param")

    def scan(self):
        if self.i != STA_IF or not self.on:
            raise OSError("STA must be active")
        _board.pump()
        return [(a[0].encode(), _mac(a[1]), a[2], a[3], a[4] if len(a) > 4 else AUTH_WPA2_PSK,
                 a[5] if len(a) > 5 else 0) for a in _board.state.get("scan") or ()]

    def config(self, *args, **kwargs):
        if args:
            k = args[0]
            if k == "mac":
                return bytes(_mac(_board.vboxenv.mac)[:5]) + bytes([(_mac(_board.vboxenv.mac)[5] + self.i) & 255])
            if k == "ssid":
                return self.cfg.get("ssid", "")
            if k == "hostname":
                return "homebox"
            if k in self.cfg:
                return self.cfg[k]
            raise ValueError("unknown config param")
        self.cfg.update(kwargs)
        if self.i == AP_IF:
            self._ap()

    def _ap(self):
        import json
        c = self.cfg
        _board.send(b"A" + json.dumps({"active": self.on, "ssid": c.get("ssid"), "key": c.get("key"),
                                       "security": c.get("security"), "channel": c.get("channel")}).encode())

    def ifconfig(self, configtuple=None):
        if self.i == AP_IF:
            return ("192.168.4.1", "255.255.255.0", "192.168.4.1", "192.168.4.1")
        return ("192.168.1.50", "255.255.255.0", "192.168.1.1", "192.168.1.1") if self.isconnected() else _NOIP

    def ipconfig(self, *args, **kwargs):
        return None


class LAN:
    def __init__(self, id=0, *, phy_type=0, phy_addr=0, ref_clk_mode=0, **kwargs):
        self.on = False

    def active(self, is_active=None):
        if is_active is None:
            return self.on
        self.on = bool(is_active)

    def isconnected(self):
        return self.on and _up()

    def status(self):
        if not self.on:
            return ETH_STOPPED
        return ETH_GOT_IP if _up() else ETH_DISCONNECTED

    def ifconfig(self, configtuple=None):
        return ("192.168.1.51", "255.255.255.0", "192.168.1.1", "192.168.1.1") if self.isconnected() else _NOIP

    def config(self, *args, **kwargs):
        return None


def _mac(s):
    return bytes(int(x, 16) for x in s.split(":"))
