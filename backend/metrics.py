"""Ingest's health and metrics endpoint: a small stdlib HTTP server on its own thread.

    GET /metrics   Prometheus text format (version 0.0.4)
    GET /healthz   liveness: 200 "ok" while the main loop turns, 503 when it is stuck
    GET /readyz    200 when connected to the broker and the database, else 503

It reads the Ingest object's counters and gauges only; the database-side gauges
(missing, quarantine rows) are refreshed by ingest's own loop, never from here.
"""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STUCK_AFTER = 60.0      # seconds without a turn of the main loop: not alive

METRICS = [
    # name, type, help, value(ingest)
    ("homebox_ingest_up", "gauge", "1 while the process runs", lambda i: 1),
    ("homebox_ingest_mqtt_connected", "gauge", "1 when connected to the broker",
     lambda i: int(i.mqtt_connected)),
    ("homebox_ingest_db_up", "gauge", "1 when the last database write succeeded",
     lambda i: int(i.db_up)),
    ("homebox_ingest_pending", "gauge", "messages received, not yet committed (unacknowledged)",
     lambda i: len(i.pending)),
    ("homebox_ingest_lag_seconds", "gauge", "age of the oldest pending message",
     lambda i: round(i.lag(), 3)),
    ("homebox_ingest_last_commit_timestamp_seconds", "gauge", "Unix time of the last commit (0: none yet)",
     lambda i: round(i.last_commit or 0, 3)),
    ("homebox_ingest_received_total", "counter", "messages received and committed",
     lambda i: i.totals["received"]),
    ("homebox_ingest_stored_total", "counter", "telemetry and events stored (new)",
     lambda i: i.totals["stored"]),
    ("homebox_ingest_duplicates_total", "counter", "redelivered messages already stored",
     lambda i: i.totals["duplicates"]),
    ("homebox_ingest_quarantined_total", "counter", "messages quarantined (contract or store refused them)",
     lambda i: i.totals["invalid"]),
    ("homebox_ingest_poison_total", "counter", "quarantined because the store could not hold them",
     lambda i: i.totals["poison"]),
    ("homebox_ingest_unstorable_total", "counter", "acknowledged although not even quarantine could hold them",
     lambda i: i.totals["unstorable"]),
    ("homebox_ingest_batches_total", "counter", "committed batches", lambda i: i.totals["batches"]),
    ("homebox_ingest_db_reconnects_total", "counter", "database reconnections",
     lambda i: i.totals["db_reconnects"]),
    ("homebox_ingest_mqtt_connects_total", "counter", "broker connections",
     lambda i: i.totals["mqtt_connects"]),
    ("homebox_ingest_retained_cleared_total", "counter",
     "retained messages cleared where the contract has none (alarm retained_cleared)",
     lambda i: i.totals["retained_cleared"]),
    ("homebox_store_missing", "gauge", "seqs missing at the database (gaps of cause missing), all boxes",
     lambda i: i.missing),
    ("homebox_store_quarantine_rows", "gauge", "rows in the quarantine table",
     lambda i: i.quarantine_rows),
]


def render(ingest) -> str:
    out = []
    for name, typ, doc, fn in METRICS:
        v = fn(ingest)
        if v is None:
            continue
        out += [f"# HELP {name} {doc}", f"# TYPE {name} {typ}", f"{name} {v}"]
    return "\n".join(out) + "\n"


class MetricsServer:
    def __init__(self, ingest, host: str = "127.0.0.1", port: int = 0):
        ing = ingest

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.split("?")[0]
                if path == "/metrics":
                    code, body, ctype = 200, render(ing), "text/plain; version=0.0.4; charset=utf-8"
                elif path == "/healthz":
                    alive = time.time() - ing.heartbeat < STUCK_AFTER
                    code, body, ctype = (200, "ok\n", "text/plain") if alive else (503, "stuck\n", "text/plain")
                elif path == "/readyz":
                    ok = ing.mqtt_connected and ing.db_up
                    code = 200 if ok else 503
                    body = f"mqtt={'up' if ing.mqtt_connected else 'down'} db={'up' if ing.db_up else 'down'}\n"
                    ctype = "text/plain"
                else:
                    code, body, ctype = 404, "not found\n", "text/plain"
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="ingest-metrics", daemon=True)

    def start(self) -> MetricsServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
