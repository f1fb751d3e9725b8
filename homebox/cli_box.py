"""`homebox box ...`: run one box on this host."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from homebox import boxrun


def parse_hostport(s: str) -> tuple[str, int]:
    from common.broker import parse_broker
    try:
        b = parse_broker(s)
    except ValueError:
        raise SystemExit(f"--broker: expected HOST:PORT, got {s!r}") from None
    return b.host, b.port


def register(sub) -> None:
    p = sub.add_parser("run", help="run one box (the real agent) on this host")
    p.add_argument("--sim", action="store_true", default=True, help="use the simulated home (the only HAL a host has)")
    p.add_argument("--micropython", action="store_true", help="run under the real MicroPython interpreter")
    p.add_argument("--heap", default="64k", help="MicroPython heap size (default 64k)")
    p.add_argument("--broker", default="127.0.0.1:1883", help="MQTT broker HOST:PORT")
    p.add_argument("--box-id", required=True)
    p.add_argument("--speedup", type=float, default=1.0, help="sim clock speed (x real time)")
    p.add_argument("--duration", type=float, default=0, help="stop after S real seconds (0: run until Ctrl-C)")
    p.add_argument("--cycles", type=int, default=0, help="stop after N telemetry cycles")
    p.add_argument("--interval", type=int, default=300, help="telemetry interval in sim seconds")
    p.add_argument("--state-dir", type=Path, default=None, help="the box's filesystem (default: state/BOX_ID)")
    p.add_argument("--scenario", type=Path, default=None, help="sim scenario JSON file")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=cmd_run)


def cmd_run(args) -> int:
    import json
    host, port = parse_hostport(args.broker)
    state = args.state_dir or Path("state") / args.box_id
    scenario = {}
    if args.scenario:
        try:
            scenario = json.loads(args.scenario.read_text())
        except (OSError, ValueError) as e:
            print(f"cannot read scenario {args.scenario}: {e}", file=sys.stderr)
            return 2
    cfg = boxrun.write_config(Path(state), box_id=args.box_id, broker_host=host, broker_port=port,
                              speedup=args.speedup, duration=args.duration, max_cycles=args.cycles,
                              telemetry_interval=args.interval, seed=args.seed, scenario=scenario)
    try:
        cmd, env = boxrun.box_command(cfg, micropython=args.micropython, heap=args.heap)
    except boxrun.BoxRunError as e:
        print(e, file=sys.stderr)
        return 2
    proc = subprocess.Popen(cmd, env=env, cwd=boxrun.neutral_cwd())

    def stop(signum, frame):
        # `kill` of this command stops the box it started, never leaves it running
        proc.terminate()

    old = signal.signal(signal.SIGTERM, stop)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        try:
            proc.wait(10)    # the box got the same Ctrl-C and stops cleanly
        except subprocess.TimeoutExpired:
            pass
        return 130
    finally:
        signal.signal(signal.SIGTERM, old)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
