# A stand-in Box for the over-the-air release tests (tests/onbox/test_ota.py,
# tests/onbox/ota_net.py): the attributes agent/ota_cold.py uses, on a scratch dir.
import asyncio
import sys

from agent import fsutil
from agent.rules import sign
from agent.twin import Twin

if "firmware" not in sys.path:
    sys.path.append("firmware")       # firmware/otaboot.py (the tests run from the checkout)

KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"


class Box:
    trial = reboot = ota_task = ota_version = None

    def __init__(self, d, key=KEY):
        self.cfg = {"state_dir": d + "/state", "ota_dir": d + "/ota", "box_id": "b1", "hmac_key": key}
        self.id = "b1"
        fsutil.makedirs(d + "/state")
        fsutil.makedirs(d + "/ota")
        self.twin = Twin(d + "/state/docs", {})
        self.stop = asyncio.Event()
        self.wake = asyncio.Event()

    def now_ts(self):
        return 1000


def signed(doc, key=KEY):
    from binascii import unhexlify
    d = dict(doc)
    d["box"] = "b1"
    d["sig"] = sign.sign(d, unhexlify(key))
    return d


def sha(data):
    import hashlib
    from binascii import hexlify
    return hexlify(hashlib.sha256(data).digest()).decode()


def release_files(tag):
    # a tiny release: an agent package that says which release it is
    body = b"VERSION = '%s'\n" % tag.encode()
    return {"agent/__init__.py": body, "agent/hal/x.py": b"X = 1\n" * 300}


def manifest(name, files):
    lines = ["homebox-release 1 " + name]
    for p in sorted(files):
        lines.append("%s %d %s" % (sha(files[p]), len(files[p]), p))
    return ("\n".join(lines) + "\n").encode()
