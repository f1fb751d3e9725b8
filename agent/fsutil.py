# Small filesystem helpers that work on littlefs (MicroPython) and POSIX.
# Every persistent write goes through atomic_write: write a temporary file,
# then rename it over the old one, so a power cut leaves old or new, never half.
import json
import os

from agent.compat import fsync


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def makedirs(path):
    cur = ""
    for part in path.split("/"):
        if not part:
            cur = "/" if not cur else cur
            continue
        cur = part if cur == "" else (cur + part if cur.endswith("/") else cur + "/" + part)
        if not exists(cur):
            try:
                os.mkdir(cur)
            except OSError:
                if not exists(cur):
                    raise


def remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def atomic_write(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb" if isinstance(data, (bytes, bytearray)) else "w") as f:
        f.write(data)
        fsync(f)
    os.rename(tmp, path)


def write_json(path, obj):
    atomic_write(path, json.dumps(obj))


def read_json(path, default=None):
    # A missing or unparsable file gives `default`; the caller decides whether
    # that is normal (first boot) or a fallback to a last-known-good copy.
    try:
        with open(path) as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return default


def listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []


def size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return 0
