# esp32 for the emulated ESP32 board: NVS, kept in the flash's nvs partition
# (0x9000, 0x6000) so that it survives a filesystem re-flash and an erase_flash
# wipes it, as on the chip. Stored as one JSON map (not the IDF's page format).
import vboxenv

_OFF = 0x9000
_SIZE = 0x6000


def _load():
    import json
    f = vboxenv.flash
    f.seek(_OFF)
    n = int.from_bytes(f.read(4), "little")
    if n == 0xFFFFFFFF or n == 0 or n > _SIZE - 4:
        return {}
    try:
        return json.loads(f.read(n))
    except ValueError:
        return {}


class NVS:
    def __init__(self, namespace):
        self.ns = namespace
        self.pend = None

    def _get(self, key):
        d = self.pend if self.pend is not None else _load().get(self.ns, {})
        if key not in d:
            raise OSError(-0x1102)          # ESP_ERR_NVS_NOT_FOUND
        return d[key]

    def _set(self, key, v):
        if self.pend is None:
            self.pend = _load().get(self.ns, {})
        self.pend[key] = v

    def get_i32(self, key):
        return int(self._get(key))

    def set_i32(self, key, value):
        self._set(key, int(value))

    def set_blob(self, key, value):
        self._set(key, "".join("%02x" % b for b in value))

    def get_blob(self, key, buffer):
        v = self._get(key)
        if not isinstance(v, str):
            raise OSError(-0x1102)
        b = bytes(int(v[i:i + 2], 16) for i in range(0, len(v), 2))
        buffer[:len(b)] = b
        return len(b)

    def erase_key(self, key):
        self._get(key)
        if self.pend is None:
            self.pend = _load().get(self.ns, {})
        del self.pend[key]

    def commit(self):
        if self.pend is None:
            return
        import json
        d = _load()
        d[self.ns] = self.pend
        b = json.dumps(d).encode()
        if len(b) > _SIZE - 4:
            raise OSError(-0x1105)          # ESP_ERR_NVS_NOT_ENOUGH_SPACE
        f = vboxenv.flash
        f.seek(_OFF)
        f.write(len(b).to_bytes(4, "little") + b)
        f.flush()
