"""`homebox box speedtest URL` and `homebox ops speedtest-server`: one line-speed
measurement from this host with the agent's own code (agent/speedtest.py), under
CPython or the real MicroPython interpreter, and the plain-HTTP server it talks to."""
from __future__ import annotations

import json
import subprocess
import sys

from homebox import boxrun


def register(sub) -> None:
    p = sub.add_parser("speedtest", help="measure line speed against a speed-test URL (TR-143 style)")
    p.add_argument("url", help="base URL of the server, e.g. http://10.0.0.1:8080")
    p.add_argument("--streams", type=int, default=6, help="parallel TCP streams (default 6)")
    p.add_argument("--seconds", type=float, default=8, help="time limit per direction (default 8; up to 1/4 more to end on a sample where no "
                        "stream holds bytes back)")
    p.add_argument("--budget", type=int, default=20_000_000, help="byte budget, both directions (default 20 MB)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds excluded at the start, at most (default 1; with --plan-down it follows the plan and the RTT)")
    p.add_argument("--direction", choices=["both", "down", "up"], default="both")
    p.add_argument("--window", type=int, default=0,
                   help="client TCP window in bytes for the client_limited ceiling (0: unknown; "
                        "an ESP32 has 5744)")
    p.add_argument("--plan-down", type=float, default=None, help="subscribed download rate, Mbps")
    p.add_argument("--plan-up", type=float, default=None, help="subscribed upload rate, Mbps")
    p.add_argument("--buf", type=int, default=32768, help="receive/send buffer size (default 32768)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--trace", action="store_true", help="keep every (ms, bytes, all streams running) sample")
    p.add_argument("--micropython", action="store_true", help="run under the real MicroPython interpreter")
    p.add_argument("--heap", default="256k", help="MicroPython heap size (default 256k)")
    p.set_defaults(func=cmd_speedtest)


def register_ops(sub) -> None:
    p = sub.add_parser("speedtest-server", help="serve GET /download?bytes=N and PUT|POST /upload")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--rate", type=float, default=None,
                   help="be the line: bodies move at this many Mbps x 1448/1514 (default: as fast as TCP goes)")
    p.set_defaults(func=cmd_server)


def cmd_server(args) -> int:
    from backend import speedtest_server

    def ready(srv):
        print("speedtest server on http://%s:%d" % srv.server_address, flush=True)

    try:
        speedtest_server.serve(args.port, args.host, ready, args.rate * 1e6 if args.rate else None)
    except KeyboardInterrupt:
        return 0
    return 0


def _kwargs(args) -> dict:
    mbps = lambda v: None if v is None else int(v * 1e6)  # noqa: E731
    return {"streams": args.streams, "seconds": args.seconds, "budget": args.budget,
            "warmup": args.warmup, "window": args.window or None,
            "plan": (mbps(args.plan_down), mbps(args.plan_up)), "bufsize": args.buf,
            "direction": args.direction, "trace": args.trace}


def measure(url: str, micropython: bool = False, heap: str = "256k", **kw) -> dict:
    """Run agent.speedtest.run here (CPython) or in a MicroPython subprocess."""
    if not micropython:
        from agent import speedtest
        return speedtest.run(url, **kw)
    kw["plan"] = list(kw.get("plan") or (None, None))
    code = ("import json\nfrom agent import speedtest\nkw=json.loads(%r)\nkw['plan']=tuple(kw['plan'])\n"
            "print('RESULT '+json.dumps(speedtest.run(%r, **kw)))\n" % (json.dumps(kw), url))
    env = dict(__import__("os").environ)
    env["MICROPYPATH"] = f"{boxrun.compile_agent()}:.frozen"
    p = subprocess.run([boxrun.micropython_exe(), "-X", f"heapsize={heap}", "-c", code],
                       env=env, cwd=boxrun.neutral_cwd(), capture_output=True, text=True, timeout=600)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError("micropython speed test failed: " + (p.stderr or p.stdout)[-2000:])


def _mbps(v) -> str:
    return "-" if v is None else "%.2f Mbps" % (v / 1e6)


def cmd_speedtest(args) -> int:
    try:
        r = measure(args.url, args.micropython, args.heap, **_kwargs(args))
    except (OSError, ValueError, RuntimeError) as e:
        print("speed test failed: %s" % e, file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(r, indent=1))
        return 0
    print("server   %s, %d streams, latency %s ms" % (r["server"], r["streams"], r["latency_ms"]))
    for k in ("down", "up"):
        d = r[k]
        if not d:
            continue
        ratio = r.get("ratio_" + k)
        print("%-8s goodput %s (whole-transfer mean %s), %d bytes, stopped on %s%s%s" % (
            k, _mbps(d["goodput_bps"]), _mbps(d["mean_bps"]), d["bytes"], d["stop"],
            "" if ratio is None else ", %.0f%% of plan" % (ratio * 100),
            ", CLIENT-LIMITED" if d.get("client_limited") else ""))
    print("bytes    %d of a %d budget" % (r["bytes"], r["budget"]))
    if r["ceiling_bps"]:
        print("ceiling  %s (%d streams x %d-byte window / RTT)" % (_mbps(r["ceiling_bps"]), r["streams"], r["window"]))
    return 0 if r["down"] is None or r["down"]["stop"] != "error" else 1
