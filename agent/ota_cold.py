# Over-the-air agent releases, the box's side (docs/ota.md,
# docs/decisions/0017-ota-releases.md). Cold code: loaded when a desired
# `release` document arrives, while an install runs, and at the confirmation or
# the report of a fall-back; never resident.
#
# The desired document (signed as every desired document, agent/rules/sign.py):
#   {"version": 7, "box": "HB-1", "release": "0.2.0", "url": "http://ops:8070/r/0.2.0",
#    "manifest": "<sha256 hex of URL/manifest>", "confirm_s": 300, "sig": "..."}
# The manifest (text, one file a line, read line by line: no big structure in RAM):
#   homebox-release 1 0.2.0
#   <sha256 hex> <size> agent/__init__.mpy
#   ...
# The install writes the inactive slot (OTA_DIR/a or /b: the slot the boot pointer
# does not name), each file as PATH.part, resumed with an HTTP Range request after a
# cut, checked against the manifest, then renamed; files of an older release left
# in the slot are removed; then the boot pointer (OTA_DIR/boot.json, tmp + rename)
# names the new slot on trial, and the box restarts. firmware/otaboot.py counts the
# trial boots and falls back; confirm() below ends the trial once the box has
# connected and published. The outbox and the state are outside the slots.
import asyncio
import hashlib
import json
import os
from binascii import hexlify

from agent import fsutil
from agent.compat import mem
from agent.log import log

SECTION = "release"
MAX_DOC = 1024
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


# ---- state ---------------------------------------------------------------------

def _state(box):
    return fsutil.read_json(box.cfg["state_dir"] + "/ota.json", {}) or {}


def _handled(box, v):
    # The highest release version acted on (installed, refused or rolled back):
    # a retained document of that version or lower changes nothing any more.
    st = _state(box)
    if v > (st.get("handled") or 0):
        st["handled"] = v
        fsutil.write_json(box.cfg["state_dir"] + "/ota.json", st)


def pointer(box):
    return fsutil.read_json(box.cfg["ota_dir"] + "/boot.json") or {}


def _report(box, rep):
    rep["section"] = SECTION
    box.twin.set_reported(SECTION, rep)


def _running(p):
    rep = {"version": p.get("version") or 0, "status": "applied" if p.get("version") else "none"}
    if p.get("release"):
        rep["release"] = p["release"]
        rep["slot"] = p.get("slot") or "factory"
    return rep


def reject(box, version, field, reason):
    rep = _running(pointer(box))
    rep["status"] = "rejected"
    rep["rejected"] = {"field": field, "reason": reason[:300]}
    if isinstance(version, int):
        rep["rejected"]["version"] = version
    _report(box, rep)
    log("release_rejected", "version", version, "field", field, "reason", reason)


# ---- the desired document --------------------------------------------------------

def _hex64(s):
    if not isinstance(s, str) or len(s) != 64:
        return False
    for c in s:
        if c not in "0123456789abcdef":
            return False
    return True


def validate(doc):
    from agent.twin import Invalid
    for k in doc:
        if k not in ("version", "box", "sig", "release", "url", "manifest", "confirm_s"):
            raise Invalid(str(k)[:32], "is not a known field")
    r = doc.get("release")
    if not isinstance(r, str) or not 1 <= len(r) <= 32:
        raise Invalid("release", "must be the release name, 1-32 characters")
    u = doc.get("url")
    if not isinstance(u, str) or not u.startswith("http://") or len(u) > 200:
        raise Invalid("url", "must be an http:// URL of at most 200 characters")
    if not _hex64(doc.get("manifest")):
        raise Invalid("manifest", "must be the SHA-256 of the manifest, 64 lowercase hex digits")
    c = doc.get("confirm_s", 300)
    if not isinstance(c, int) or isinstance(c, bool) or not 10 <= c <= 86400:
        raise Invalid("confirm_s", "must be an integer of seconds, 10-86400")


def handle(box, payload):
    """A desired release document: applied (this release already runs), installing,
    rejected or replay."""
    from agent.twin import Invalid, check_envelope
    v = None
    try:
        if len(payload) > MAX_DOC:
            raise Invalid("$", "document is %d bytes, the limit is %d" % (len(payload), MAX_DOC))
        try:
            doc = json.loads(payload.decode() if isinstance(payload, (bytes, bytearray)) else payload)
        except ValueError:
            raise Invalid("$", "not valid JSON")
        check_envelope(doc)
        v = doc["version"]
        box.verify(SECTION, doc)
        validate(doc)
    except Invalid as e:
        if box.cfg.get("ota_dir"):
            reject(box, v, e.field, e.rule)
        return "rejected"
    if not box.cfg.get("ota_dir"):
        reject(box, v, "$", "this box has no release slots (not a board)")
        return "rejected"
    if v <= (_state(box).get("handled") or 0):
        return "replay"
    p = pointer(box)
    if p.get("version") == v and p.get("state") == "ok":
        _handled(box, v)
        _report(box, _running(p))
        return "applied"
    if box.trial is not None:
        return "busy"                # the release on trial first
    t = box.ota_task
    if t is not None:
        if box.ota_version == v:
            return "installing"
        t.cancel()
    box.ota_version = v
    box.ota_task = asyncio.create_task(_install_task(box, doc))
    return "installing"


async def _install_task(box, doc):
    v = doc["version"]
    try:
        await install(box, doc)
    except asyncio.CancelledError:
        raise
    except Bad as e:
        _handled(box, v)
        reject(box, v, e.field, e.reason)
    except Exception as e:
        # a failure of the box itself (a full filesystem): refused too, the
        # operator sees why; the slot is the inactive one, nothing else changed
        _handled(box, v)
        reject(box, v, "$", "install failed: %r" % e)
    finally:
        if box.ota_version == v:
            box.ota_task = None


# ---- the install -------------------------------------------------------------------

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
    # One GET, from byte `start` on: (reader, writer, status, content-range start).
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
        while True:
            h = await asyncio.wait_for(r.readline(), IO_TIMEOUT)
            if not h or h in (b"\r\n", b"\n"):
                break
            if h[:14].lower() == b"content-range:":
                # Content-Range: bytes START-END/TOTAL
                v = h[14:].strip()
                if v.startswith(b"bytes "):
                    got = int(v[6:].split(b"-")[0])
    except BaseException:
        w.close()
        raise
    return r, w, code, got


async def fetch(box, host, port, path, dest, size, sha):
    """Download `path` to `dest` (size bytes, sha256 `sha`), resuming DEST.part."""
    part = dest + ".part"
    have = fsutil.size(part)
    if have > size:
        fsutil.remove(part)
        have = 0
    h = file_sha(part) if have else hashlib.sha256()
    if size == 0:
        open(part, "wb").close()
    fails = 0
    while have < size:
        try:
            r, w, code, got = await _request(host, port, path, have)
        except (OSError, ValueError, asyncio.TimeoutError) as e:
            fails += 1
            if fails >= ATTEMPTS:
                raise Bad("url", "download of %s failed %d times: %r" % (path[-64:], fails, e))
            await asyncio.sleep(min(60, 2 ** fails))
            continue
        try:
            if code == 200 and have:
                have, h = 0, hashlib.sha256()      # no Range support: from the start
                fsutil.remove(part)
            elif code == 206 and got != have:
                raise Bad("url", "the server resumed %s at %d, not %d" % (path[-64:], got, have))
            elif code not in (200, 206):
                raise Bad("url", "HTTP %d for %s" % (code, path[-64:]))
            before = have
            f = open(part, "ab")
            try:
                since = 0
                while have < size:
                    try:
                        b = await asyncio.wait_for(r.read(min(CHUNK, size - have)), IO_TIMEOUT)
                    except (OSError, asyncio.TimeoutError):
                        b = b""
                    if not b:
                        break                       # cut: resume with a Range request
                    f.write(b)
                    h.update(b)
                    have += len(b)
                    since += len(b)
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
                raise Bad("url", "download of %s cut %d times without progress" % (path[-64:], fails))
            await asyncio.sleep(min(60, 2 ** fails) if fails else 0)
    if _hex(h) != sha:
        fsutil.remove(part)
        raise Bad("manifest", "%s: sha256 does not match the manifest" % dest.rsplit("/", 1)[-1])
    os.rename(part, dest)


async def fetch_whole(host, port, path, dest, sha, limit=32768):
    """A small file (the manifest) whose size is not known: read to the end, at
    most `limit` bytes, checked against `sha`, then renamed to `dest`."""
    fails = 0
    while True:
        h = hashlib.sha256()
        n = 0
        try:
            r, w, code, _got = await _request(host, port, path, 0)
            try:
                if code not in (200, 206):
                    raise Bad("url", "HTTP %d for %s" % (code, path[-64:]))
                with open(dest + ".part", "wb") as f:
                    while True:
                        b = await asyncio.wait_for(r.read(CHUNK), IO_TIMEOUT)
                        if not b:
                            break
                        n += len(b)
                        if n > limit:
                            raise Bad("manifest", "larger than %d bytes" % limit)
                        f.write(b)
                        h.update(b)
            finally:
                w.close()
        except (OSError, ValueError, asyncio.TimeoutError) as e:
            fails += 1
            if fails >= ATTEMPTS:
                raise Bad("url", "download of %s failed %d times: %r" % (path[-64:], fails, e))
            await asyncio.sleep(min(60, 2 ** fails))
            continue
        if _hex(h) == sha:
            os.rename(dest + ".part", dest)
            return
        fsutil.remove(dest + ".part")
        fails += 1
        if fails >= 3:
            # a cut connection gives a short file once; always wrong bytes is the release
            raise Bad("manifest", "its sha256 does not match the signed document")
        await asyncio.sleep(fails)


def _walk(d, out):
    for n in fsutil.listdir(d):
        p = d + "/" + n
        if os.stat(p)[0] & 0x4000:
            _walk(p, out)
            out.append(p + "/")
        else:
            out.append(p)


def _rmtree(d):
    items = []
    _walk(d, items)
    for p in items:
        if p.endswith("/"):
            try:
                os.rmdir(p[:-1])
            except OSError:
                pass
        else:
            fsutil.remove(p)


async def install(box, doc):
    od = box.cfg["ota_dir"]
    v = doc["version"]
    p = pointer(box)
    cur = p.get("slot") or ""
    slot = "b" if cur == "a" else "a"
    sd = "%s/%s" % (od, slot)
    rep = _running(p)
    rep["installing"] = {"version": v, "release": doc["release"], "slot": slot}
    _report(box, rep)
    box.wake.set()
    log("release_install", "version", v, "release", doc["release"], "slot", slot)
    host, port, base = parse_url(doc["url"])
    fsutil.makedirs(sd)
    # The manifest first: its hash is in the signed document.
    man = sd + "/manifest"
    if fsutil.exists(man) and _hex(file_sha(man)) != doc["manifest"]:
        fsutil.remove(man)          # an older release's
    if not fsutil.exists(man):
        await fetch_whole(host, port, base + "/manifest", man, doc["manifest"])
    wanted = {}
    for sha, size, path in entries(man):
        dest = sd + "/" + path
        wanted[dest] = 1
        if fsutil.exists(dest):
            if fsutil.size(dest) == size and _hex(file_sha(dest)) == sha:
                continue
            fsutil.remove(dest)
        fsutil.makedirs(dest.rsplit("/", 1)[0])
        await fetch(box, host, port, base + "/" + path, dest, size, sha)
    if sd + "/agent/__init__.mpy" not in wanted and sd + "/agent/__init__.py" not in wanted:
        raise Bad("manifest", "the release has no agent/__init__")
    # What the slot holds beyond the manifest (an older release's files, parts) goes.
    items = []
    _walk(sd + "/agent", items)
    for q in items:
        if not q.endswith("/") and q not in wanted:
            fsutil.remove(q)
    # The switch: one rename of the boot pointer. A cut before it boots the old slot
    # (which finds this slot complete and switches again); after it, the new one.
    new = {"slot": slot, "state": "trial", "tries": 0, "version": v, "release": doc["release"],
           "prev": cur, "prev_version": p.get("version") or 0, "prev_release": p.get("release"),
           "confirm_s": doc.get("confirm_s", 300)}
    fsutil.write_json(od + "/boot.json", new)
    rep["installing"]["stage"] = "restarting"
    _report(box, rep)
    free, alloc, _peak = mem()
    log("release_switch", "version", v, "slot", slot, "heap_alloc", alloc, "heap_free", free)
    box.reboot = doc["release"]
    box.stop.set()


def confirm(box):
    """The release on trial has connected and published: it stays."""
    t = box.trial
    box.trial = None
    od = box.cfg["ota_dir"]
    p = fsutil.read_json(od + "/boot.json")
    if not isinstance(p, dict) or p.get("state") != "trial" or p.get("slot") != t.get("slot"):
        return
    p["state"] = "ok"
    p["tries"] = 0
    p.pop("why", None)
    fsutil.write_json(od + "/boot.json", p)
    v = p.get("version") or 0
    _handled(box, v)
    rep = _running(p)
    rep["applied_at"] = box.now_ts()
    _report(box, rep)
    log("release_confirmed", "version", v, "release", p.get("release"), "slot", p.get("slot"))


def rolled_back(box, p):
    """The board's boot went back to the previous slot (firmware/otaboot.py): say why."""
    rb = p.get("rolled_back") or {}
    v = rb.get("version")
    reason = "rolled back to %s: %s" % (("slot " + p["slot"]) if p.get("slot") else "the factory agent",
                                        rb.get("reason"))
    if isinstance(v, int):
        _handled(box, v)
    reject(box, v, "release", reason)
    q = dict(p)
    q.pop("rolled_back", None)
    q["last_rollback"] = rb
    fsutil.write_json(box.cfg["ota_dir"] + "/boot.json", q)
