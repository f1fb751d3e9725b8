"""Agent releases for over-the-air updates (docs/ota.md): build a release directory
from `homebox fw build` output, serve it over HTTP with Range requests, and the
desired `release` document a campaign sends (signed per box like every desired
document: docs/decisions/0019-ota-releases.md).

    from backend import release
    r = release.build("build/fw/b1", "releases/0.2.0")          # the .mpy bytes fw build made
    srv = release.serve("releases", port=8070)                   # GET /0.2.0/manifest, Range
    doc = release.template("releases/0.2.0", "http://ops.example:8070/0.2.0")
    campaign.create(store, "release", doc, {"tag": "tower-B"}, canary=0.1, box_timeout=900)

A release directory:
    manifest        text: "homebox-release 1 NAME", then "SHA256 SIZE PATH" per file
    release.json    the same for people and tools, with the manifest's own SHA-256
    agent/...       the files, as the box stores them in its slot
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from backend.errors import DocumentInvalid, OpsError

SECTION = "release"
FORMAT = 1
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,31}$")


class ReleaseError(OpsError):
    """A release cannot be built or served as asked."""


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def agent_version(files: dict[str, bytes]) -> str | None:
    """VERSION of agent/__init__ as the build says it (the .py source, or the
    string the .mpy holds after the name VERSION)."""
    src = files.get("agent/__init__.py")
    if src is not None:
        m = re.search(rb"VERSION\s*=\s*[\"']([^\"']+)", src)
        return m.group(1).decode() if m else None
    mpy = files.get("agent/__init__.mpy") or b""
    # .mpy v6 qstrs: (length << 1), the bytes, NUL; the constant's string comes
    # just before the name VERSION in agent/__init__'s table
    for m in re.finditer(rb"([\x02-\x40])([ -~]+?)\x00\x0eVERSION\x00", mpy):
        if m.group(1)[0] >> 1 == len(m.group(2)):
            return m.group(2).decode()
    return None


def fw_agent_files(fw_dir: Path | str) -> dict[str, bytes]:
    """The agent's files of a `homebox fw build` output (manifest.json + vfs.bin),
    read back from its littlefs image and checked against its manifest."""
    from littlefs import LittleFS

    from firmware import partitions as pt
    d = Path(fw_dir)
    try:
        man = json.loads((d / "manifest.json").read_text())
        image = (d / "vfs.bin").read_bytes()
    except (OSError, ValueError) as e:
        raise ReleaseError(f"{d} is not a `homebox fw build` output (manifest.json, vfs.bin): {e}") from None
    lfs = man.get("littlefs") or {}
    fs = LittleFS(block_size=pt.LFS_BLOCK_SIZE, block_count=len(image) // pt.LFS_BLOCK_SIZE,
                  read_size=pt.LFS_READ_SIZE, prog_size=pt.LFS_PROG_SIZE,
                  lookahead_size=pt.LFS_LOOKAHEAD, mount=False)
    fs.context.buffer[:] = image
    fs.mount()
    if lfs.get("block_count") not in (None, len(image) // pt.LFS_BLOCK_SIZE):
        raise ReleaseError(f"{d}/vfs.bin does not match its manifest")
    out: dict[str, bytes] = {}
    for f in man.get("files", []):
        p = f.get("path", "")
        if not p.startswith("agent/"):
            continue
        with fs.open(p, "rb") as fh:
            data = fh.read()
        # a secret's hash is never in a manifest, and no secret belongs in a release
        if f.get("secret"):
            raise ReleaseError(f"{d}/vfs.bin: {p} is marked secret: a release carries code only")
        if len(data) != f.get("size") or _sha(data) != f.get("sha256"):
            raise ReleaseError(f"{d}/vfs.bin: {p} does not match manifest.json")
        out[p] = data
    if "agent/__init__.mpy" not in out:
        raise ReleaseError(f"{d} holds no compiled agent (agent/__init__.mpy)")
    return out


def manifest_text(name: str, files: dict[str, bytes]) -> bytes:
    lines = [f"homebox-release {FORMAT} {name}"]
    lines += [f"{_sha(data)} {len(data)} {path}" for path, data in sorted(files.items())]
    return ("\n".join(lines) + "\n").encode()


def write(out_dir: Path | str, name: str, files: dict[str, bytes]) -> dict:
    """Write a release directory from {path: bytes}; returns its release.json."""
    if not NAME_RE.match(name):
        raise ReleaseError(f"bad release name {name!r}: 1-32 of letters, digits, . _ + -")
    out = Path(out_dir)
    for p in files:
        if not p.startswith("agent/") or ".." in p.split("/") or not re.match(r"^[a-z0-9_./-]+$", p):
            raise ReleaseError(f"{p}: a release holds agent/ files with names of a-z 0-9 _ . / -")
    out.mkdir(parents=True, exist_ok=True)
    for p, data in files.items():
        (out / p).parent.mkdir(parents=True, exist_ok=True)
        (out / p).write_bytes(data)
    man = manifest_text(name, files)
    (out / "manifest").write_bytes(man)
    info = {"format": FORMAT, "release": name, "agent_version": agent_version(files),
            "manifest_sha256": _sha(man), "bytes": sum(len(d) for d in files.values()),
            "files": [{"path": p, "size": len(d), "sha256": _sha(d)} for p, d in sorted(files.items())]}
    (out / "release.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def build(fw_dir: Path | str, out_dir: Path | str, name: str | None = None) -> dict:
    """A release directory from `homebox fw build` output: the same .mpy bytes.
    The name defaults to the agent's VERSION."""
    files = fw_agent_files(fw_dir)
    return write(out_dir, name or agent_version(files) or "unnamed", files)


def load(release_dir: Path | str) -> dict:
    d = Path(release_dir)
    try:
        info = json.loads((d / "release.json").read_text())
        man = (d / "manifest").read_bytes()
    except (OSError, ValueError) as e:
        raise ReleaseError(f"{d} is not a release directory (release.json, manifest): {e}") from None
    if _sha(man) != info.get("manifest_sha256"):
        raise ReleaseError(f"{d}/manifest does not match release.json")
    return info


def template(release_dir: Path | str, url: str, confirm_s: int = 300) -> dict:
    """The desired `release` document (version, box and sig are set per box)."""
    info = load(release_dir)
    doc = {"release": info["release"], "url": url.rstrip("/"), "manifest": info["manifest_sha256"],
           "confirm_s": int(confirm_s)}
    check(doc)
    return doc


def violations(doc) -> list[tuple[str, str]]:
    """What the box would refuse in a release document (agent/ota_cold.py validate)."""
    if not isinstance(doc, dict):
        return [("$", "must be a JSON object")]
    from agent.ota_cold import validate
    from agent.twin import Invalid
    d = dict(doc)
    d.setdefault("version", 1)
    try:
        validate(d)
    except Invalid as e:
        return [(e.field, e.rule)]
    return []


def check(doc) -> None:
    errs = violations(doc)
    if errs:
        raise DocumentInvalid(SECTION, errs)


# ---- serving ----------------------------------------------------------------------

class ReleaseHandler(BaseHTTPRequestHandler):
    """GET (and HEAD) of files under the server's root, with one byte range
    (`Range: bytes=START-` or `START-END`): a cut download resumes where it stopped."""
    server_version = "homebox-release/1"
    protocol_version = "HTTP/1.0"

    def log_message(self, fmt, *args):       # quiet: the operator's log is the campaign's
        if self.server.log:
            self.server.log(fmt % args)

    def _file(self) -> Path | None:
        rel = self.path.split("?", 1)[0].lstrip("/")
        root = self.server.root
        p = (root / rel).resolve()
        if root not in p.parents or not p.is_file():
            return None
        return p

    def do_HEAD(self):
        self.do_GET(body=False)

    def do_GET(self, body: bool = True):
        p = self._file()
        if p is None:
            self.send_error(404, "no such file")
            return
        data = p.read_bytes()
        start, end = 0, len(data) - 1
        rng = self.headers.get("Range")
        code = 200
        if rng:
            m = re.match(r"^bytes=(\d+)-(\d*)$", rng.strip())
            if not m:
                self.send_error(400, "only one byte range: bytes=START- or bytes=START-END")
                return
            start = int(m.group(1))
            if m.group(2):
                end = min(end, int(m.group(2)))
            if start >= len(data) or start > end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            code = 206
        chunk = data[start:end + 1]
        self.send_response(code)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(chunk)))
        self.send_header("Accept-Ranges", "bytes")
        if code == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if not body:
            return
        self.server.requests.append((self.path, start))
        cut = self.server.take_cut(self.path)
        rate = self.server.rate
        sent = 0
        step = 1024 if rate else 65536
        while sent < len(chunk):
            if cut is not None and sent >= cut:
                return                       # a cut connection: the box resumes
            n = step if cut is None else max(1, min(step, cut - sent))
            try:
                self.wfile.write(chunk[sent:sent + n])
            except (BrokenPipeError, ConnectionResetError):
                return                       # the box lost power or the link: it resumes
            sent += n
            if rate:
                time.sleep(n / rate)


class ReleaseServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, host: str, port: int, rate: float | None = None, log=None):
        self.root = Path(root).resolve()
        self.rate = rate                    # bytes a second per connection (tests, demos), None: as fast as it goes
        self.log = log
        self.cuts: list[tuple[str, int]] = []
        self.requests: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        super().__init__((host, port), ReleaseHandler)

    def cut(self, suffix: str, after: int, times: int = 1) -> None:
        """Fault injection: the next `times` responses for a path ending in
        `suffix` stop after `after` body bytes (the connection closes)."""
        with self._lock:
            self.cuts += [(suffix, after)] * times

    def take_cut(self, path: str) -> int | None:
        with self._lock:
            for i, (suffix, after) in enumerate(self.cuts):
                if path.endswith(suffix):
                    del self.cuts[i]
                    return after
        return None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def serve(root: Path | str, host: str = "127.0.0.1", port: int = 0, rate: float | None = None,
          log=None, background: bool = True) -> ReleaseServer:
    """Serve the releases under `root` (each a directory): GET /NAME/manifest, ...
    In the background (a daemon thread) unless background=False (then the caller
    runs serve_forever())."""
    root = Path(root)
    if not root.is_dir():
        raise ReleaseError(f"{root} is not a directory")
    srv = ReleaseServer(root, host, port, rate, log)
    if background:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv
