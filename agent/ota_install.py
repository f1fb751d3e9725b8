# Over-the-air agent releases: the install (docs/ota.md). Started by
# agent/runtime_cold.py for a release document agent/ota_cold.py accepted; cold
# code, in RAM while the install runs.
#
# The manifest (text, one file a line, read line by line: no big structure in RAM):
#   homebox-release 1 0.2.0
#   <sha256 hex> <size> agent/__init__.mpy
#   ...
# The install writes the inactive slot (OTA_DIR/a or /b: the slot the boot pointer
# does not name), each file as PATH.part, resumed with an HTTP Range request after a
# cut, checked against the manifest, then renamed; files of an older release left
# in the slot are removed; then the boot pointer (OTA_DIR/boot.json, tmp + rename)
# names the new slot on trial, and the box restarts. firmware/otaboot.py counts the
# trial boots and falls back; agent/ota_cold.py confirm() ends the trial once the box
# has connected and published. The outbox and the state are outside the slots.
import asyncio
import hashlib
import os
from binascii import hexlify

from agent import fsutil
from agent.compat import cold, forget_asyncio_funcs, mem
from agent.log import log

CHUNK = 1024
MAX_FILES = 200
MAX_SIZE = 262144               # one file
IO_TIMEOUT = 20                 # s without a byte: the connection is dead
ATTEMPTS = 8                    # connections without progress before the install gives up
FLUSH = 8192                    # bytes between commits of a part file (littlefs commits on sync)


class Bad(Exception):
    """The release cannot be installed: (field, reason) for the reported document."""

    def __init__(self, field, reason):
        super().__init__("%s: %s" % (field, reason))
        self.field = field
        self.reason = reason


async def run(box, doc):
    v = doc["version"]
    try:
        await install(box, doc)
    except asyncio.CancelledError:
        raise
    except Bad as e:
        cold("agent.ota_cold", "failed", box, v, e.field, e.reason)
    except Exception as e:
        # a failure of the box itself (a full filesystem): refused too, the
        # operator sees why; the slot is the inactive one, nothing else changed
        cold("agent.ota_cold", "failed", box, v, "$", "install failed: %r" % e)
    finally:
        if box.ota_version == v:
            box.ota_task = None


# ---- the install -------------------------------------------------------------------

def _hex64(s):
    if not isinstance(s, str) or len(s) != 64:
        return False
    for c in s:
        if c not in "0123456789abcdef":
            return False
    return True


def parse_url(url):
    """'http://host[:port]/path' -> (host, port, path without a trailing /)."""
    if not url.startswith("http://"):
        raise Bad("url", "must be http://")
    url = url[7:]
    i = url.find("/")
    hp, path = (url, "") if i < 0 else (url[:i], url[i:])
    port = 80
    if ":" in hp:
        hp, p = hp.rsplit(":", 1)
        try:
            port = int(p)
        except ValueError:
            raise Bad("url", "bad port %s" % p)
    return hp, port, path.rstrip("/")


def manifest_entry(line):
    """One line of a manifest: (sha256 hex, size, path), checked."""
    parts = line.split()
    if len(parts) != 3 or not _hex64(parts[0]):
        raise Bad("manifest", "a line is not 'sha256 size path'")
    try:
        size = int(parts[1])
    except ValueError:
        raise Bad("manifest", "bad size %s" % parts[1][:16])
    path = parts[2]
    if not (0 <= size <= MAX_SIZE):
        raise Bad("manifest", "%s: size %d out of range" % (path[:64], size))
    if not path.startswith("agent/") or len(path) > 96 or ".." in path or "//" in path or path.endswith("/"):
        raise Bad("manifest", "%s: a release holds agent/ files only" % path[:64])
    for c in path:
        if not ("a" <= c <= "z" or "0" <= c <= "9" or c in "_./-"):
            raise Bad("manifest", "%s: bad character in a path" % path[:64])
    return parts[0], size, path


def entries(path):
    """The manifest's files, one at a time: (sha256, size, path). Its first line
    is the header 'homebox-release 1 NAME'."""
    with open(path) as f:
        head = f.readline().split()
        if len(head) < 3 or head[0] != "homebox-release" or head[1] != "1":
            raise Bad("manifest", "not a homebox release manifest (format 1)")
        n = 0
        while True:
            line = f.readline()
            if not line:
                break
            if not line.strip():
                continue
            n += 1
            if n > MAX_FILES:
                raise Bad("manifest", "more than %d files" % MAX_FILES)
            yield manifest_entry(line)


def file_sha(path, h=None):
    h = h or hashlib.sha256()
    buf = bytearray(CHUNK)
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(buf if n == CHUNK else buf[:n])
    return h


def _hex(h):
    return hexlify(h.digest()).decode()


async def _request(host, port, path, start):
    # One GET, from byte `start` on: (reader, writer, status, first byte, bytes to come).
    r, w = await asyncio.wait_for(asyncio.open_connection(host, port), IO_TIMEOUT)
    try:
        w.write(b"GET %s HTTP/1.0\r\nHost: %s\r\nRange: bytes=%d-\r\n\r\n" % (path.encode(), host.encode(), start))
        await w.drain()
        line = await asyncio.wait_for(r.readline(), IO_TIMEOUT)
        parts = line.split()
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise OSError("not an HTTP response")
        code = int(parts[1])
        got = 0
        n = -1
        while True:
            h = await asyncio.wait_for(r.readline(), IO_TIMEOUT)
            if not h or h in (b"\r\n", b"\n"):
                break
            k = h[:15].lower()
            if k.startswith(b"content-range:"):
                # Content-Range: bytes START-END/TOTAL
                v = h[14:].strip()
                if v.startswith(b"bytes "):
                    got = int(v[6:].split(b"-")[0])
            elif k.startswith(b"content-length:"):
                n = int(h[15:].strip())
    except BaseException:
        w.close()
        raise
    return r, w, code, got, n


async def fetch(host, port, path, dest, size, sha):
    """Download `path` to `dest` (sha256 `sha`), resuming DEST.part; a part that
    does not add up (left by another release) is fetched again from the start."""
    if not await _fetch(host, port, path, dest, size, sha, True):
        await _fetch(host, port, path, dest, size, sha, False)


async def _fetch(host, port, path, dest, size, sha, resume, limit=32768):
    # `size` None: the server's length (the manifest), at most `limit` bytes.
    # False when a resumed part did not match (the caller starts again).
    part = dest + ".part"
    have = fsutil.size(part) if resume else 0
    if size is not None and have > size:
        have = 0
    resumed = have > 0
    # one buffer for the whole file (MicroPython's streams read into it)
    into = hasattr(asyncio.StreamReader, "readinto")
    mv = memoryview(bytearray(CHUNK)) if into else None
    if not have:
        fsutil.remove(part)
    h = file_sha(part) if have else hashlib.sha256()
    if size == 0:
        open(part, "wb").close()
    fails = 0
    while size is None or have < size:
        try:
            r, w, code, got, n = await _request(host, port, path, have)
        except (OSError, ValueError, asyncio.TimeoutError) as e:
            fails += 1
            if fails >= ATTEMPTS:
                raise Bad("url", "%s: %d failed connections: %r" % (path[-64:], fails, e))
            await asyncio.sleep(min(60, 2 ** fails))
            continue
        try:
            if code == 200 and have:
                have, h = 0, hashlib.sha256()      # no Range support: from the start
                fsutil.remove(part)
            elif code == 206 and got != have:
                raise Bad("url", "%s: resumed at %d, not %d" % (path[-64:], got, have))
            elif code not in (200, 206):
                raise Bad("url", "HTTP %d for %s" % (code, path[-64:]))
            if size is None:
                if n < 0 or have + n > limit:
                    raise Bad("url", "%s: no length, or over %d bytes" % (path[-64:], limit))
                size = have + n
            before = have
            f = open(part, "ab")
            try:
                since = 0
                while have < size:
                    k = min(CHUNK, size - have)
                    try:
                        if into:
                            k = await asyncio.wait_for(r.readinto(mv[:k]), IO_TIMEOUT)
                            b = mv[:k]
                        else:
                            b = await asyncio.wait_for(r.read(k), IO_TIMEOUT)
                            k = len(b)
                    except (OSError, asyncio.TimeoutError):
                        k = 0
                    if not k:
                        break                       # cut: resume with a Range request
                    f.write(b)
                    h.update(b)
                    have += k
                    since += k
                    if since >= FLUSH:
                        f.flush()                   # committed: a power cut resumes from here
                        since = 0
            finally:
                f.close()
            fails = 0 if have > before else fails + 1
        finally:
            w.close()
        if have < size:
            if fails >= ATTEMPTS:
                raise Bad("url", "%s: cut %d times without progress" % (path[-64:], fails))
            await asyncio.sleep(min(60, 2 ** fails) if fails else 0)
    if _hex(h) != sha:
        fsutil.remove(part)
        if resumed:
            return False
        raise Bad("manifest", "%s: sha256 does not match" % dest.rsplit("/", 1)[-1])
    os.rename(part, dest)
    return True


def _listed(man, rel):
    # is `rel` a path of the manifest? (a scan: no set of every path in RAM)
    tail = " " + rel
    with open(man) as f:
        while True:
            line = f.readline()
            if not line:
                return False
            if line.rstrip().endswith(tail):
                return True


def _stale(man, sd, d, out):
    # the files under d that the manifest does not list (an older release's, parts)
    for n in fsutil.listdir(d):
        p = d + "/" + n
        if os.stat(p)[0] & 0x4000:
            _stale(man, sd, p, out)
        elif not _listed(man, p[len(sd) + 1:]):
            out.append(p)


async def install(box, doc):
    od = box.cfg["ota_dir"]
    v = doc["version"]
    p = fsutil.read_json(od + "/boot.json") or {}
    cur = p.get("slot") or ""
    slot = "b" if cur == "a" else "a"
    sd = "%s/%s" % (od, slot)
    log("release_install", "version", v, "release", doc["release"], "slot", slot)
    host, port, base = parse_url(doc["url"])
    fsutil.makedirs(sd)
    # The manifest first: its hash is in the signed document.
    man = sd + "/manifest"
    if fsutil.exists(man) and _hex(file_sha(man)) != doc["manifest"]:
        fsutil.remove(man)          # an older release's
    if not fsutil.exists(man):
        await fetch(host, port, base + "/manifest", man, None, doc["manifest"])
    for sha, size, path in entries(man):
        dest = sd + "/" + path
        if fsutil.exists(dest):
            if fsutil.size(dest) == size and _hex(file_sha(dest)) == sha:
                continue
            fsutil.remove(dest)
        fsutil.makedirs(dest.rsplit("/", 1)[0])
        await fetch(host, port, base + "/" + path, dest, size, sha)
    if not (fsutil.exists(sd + "/agent/__init__.mpy") or fsutil.exists(sd + "/agent/__init__.py")):
        raise Bad("manifest", "the release has no agent/__init__")
    # What the slot holds beyond the manifest (an older release's files, parts) goes.
    stale = []
    _stale(man, sd, sd + "/agent", stale)
    for q in stale:
        fsutil.remove(q)
    forget_asyncio_funcs()
    # The switch: one rename of the boot pointer. A cut before it boots the old slot
    # (which finds this slot complete and switches again); after it, the new one.
    new = {"slot": slot, "state": "trial", "tries": 0, "version": v, "release": doc["release"],
           "prev": cur, "prev_version": p.get("version") or 0, "prev_release": p.get("release"),
           "confirm_s": doc.get("confirm_s", 300)}
    fsutil.write_json(od + "/boot.json", new)
    free, alloc, _peak = mem()
    log("release_switch", "version", v, "slot", slot, "heap_alloc", alloc, "heap_free", free)
    box.reboot = doc["release"]
    box.stop.set()
