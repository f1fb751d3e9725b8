"""A plain-HTTP speed-test server for tests and demos (stdlib only, one thread per
connection). Any web server that serves a large file and discards a PUT body does the
same job in production.

    GET  /download?bytes=N   N bytes of incompressible data (capped at MAX_BYTES)
    PUT  /upload             reads and discards the body; replies {"received": n}
    POST /upload             the same
    GET  /stats              {"sent": body bytes sent, "received": body bytes received}

`rate_bps` (start(), --rate) makes the server itself the line: bodies move at
rate x 1448/1514 each way, shared by every connection (what a line of that rate
carries as TCP payload), so a demo on loopback has a line with a known speed.
"""
from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MAX_BYTES = 1 << 31
CHUNK = 65536
_BLOCK = os.urandom(CHUNK)


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = 0
        self.received = 0

    def add(self, sent: int = 0, received: int = 0) -> None:
        with self.lock:
            self.sent += sent
            self.received += received


GOODPUT = 1448 / 1514        # TCP payload per Ethernet frame


class Pacer:
    """Shared pace for one direction: take(n) returns when n more bytes fit the rate."""

    def __init__(self, rate_bps: float) -> None:
        self.bps = rate_bps * GOODPUT
        self.lock = threading.Lock()
        self.t = 0.0

    def take(self, n: int) -> None:
        with self.lock:
            self.t = max(self.t, time.monotonic()) + n * 8 / self.bps
            due = self.t
        d = due - time.monotonic()
        if d > 0:
            time.sleep(d)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "homebox-speedtest/1"

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass

    def _reply(self, code: int, doc: dict) -> None:
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def do_GET(self) -> None:
        u = urlsplit(self.path)
        if u.path.endswith("/stats"):
            st = self.server.stats  # type: ignore[attr-defined]
            return self._reply(200, {"sent": st.sent, "received": st.received})
        if not u.path.endswith("/download"):
            return self._reply(404, {"error": "not found"})
        try:
            n = int(parse_qs(u.query).get("bytes", ["0"])[0])
        except ValueError:
            return self._reply(400, {"error": "bytes must be an integer"})
        if n < 0 or n > MAX_BYTES:
            return self._reply(400, {"error": "bytes out of range"})
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        mv = memoryview(_BLOCK)
        left = n
        pace = self.server.pace_down  # type: ignore[attr-defined]
        try:
            while left > 0:
                k = min(left, CHUNK if pace is None else 16384)
                if pace is not None:
                    pace.take(k)
                self.wfile.write(mv[:k])
                left -= k
                self.server.stats.add(sent=k)  # type: ignore[attr-defined]
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped at its time limit

    def do_PUT(self) -> None:
        u = urlsplit(self.path)
        if not u.path.endswith("/upload"):
            return self._reply(404, {"error": "not found"})
        try:
            n = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            return self._reply(400, {"error": "Content-Length must be an integer"})
        got = 0
        buf = bytearray(CHUNK)
        mv = memoryview(buf)
        pace = self.server.pace_up  # type: ignore[attr-defined]
        try:
            while got < n:
                k = self.rfile.readinto(mv[: min(CHUNK if pace is None else 16384, n - got)])
                if not k:
                    break
                if pace is not None:
                    pace.take(k)
                got += k
                self.server.stats.add(received=k)  # type: ignore[attr-defined]
        except (BrokenPipeError, ConnectionResetError):
            return
        try:
            self._reply(200, {"received": got})
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_POST = do_PUT


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr, rate_bps: float | None = None):
        super().__init__(addr, Handler)
        self.stats = Stats()
        self.pace_down = Pacer(rate_bps) if rate_bps else None
        self.pace_up = Pacer(rate_bps) if rate_bps else None


def serve(port: int, host: str = "0.0.0.0", ready=None, rate_bps: float | None = None) -> None:
    srv = Server((host, port), rate_bps)
    if ready:
        ready(srv)
    try:
        srv.serve_forever(poll_interval=0.2)
    finally:
        srv.server_close()


def start(port: int = 0, host: str = "127.0.0.1", rate_bps: float | None = None) -> Server:
    """A server in a background thread (for tests); .server_address, .shutdown()."""
    srv = Server((host, port), rate_bps)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    return srv


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--host", default="0.0.0.0")
    a = ap.parse_args()
    serve(a.port, a.host, lambda s: print("speedtest server on %s:%d" % s.server_address, flush=True))
