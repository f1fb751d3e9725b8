"""`homebox ops release build|template|serve`: agent releases for over-the-air
updates (docs/ota.md); thin callers of backend.release.

    homebox fw build --out build/fw/b1
    homebox ops release build build/fw/b1 --out releases/0.2.0
    homebox ops release serve releases --port 8070                     # GET /0.2.0/manifest, Range
    homebox ops release template releases/0.2.0 --url http://ops.example:8070/0.2.0 --out rel.json
    homebox ops campaign create release rel.json --tag tower-B --canary 0.1 --box-timeout 900
"""
from __future__ import annotations

import json
from pathlib import Path

from homebox.cli_ops_common import fail, out


def register(sub) -> None:
    p = sub.add_parser("release", help="agent releases for over-the-air updates: build, template, serve")
    rs = p.add_subparsers(dest="release_cmd", metavar="ACTION")
    rs.required = True

    c = rs.add_parser("build", help="a release directory from `homebox fw build` output (the same .mpy bytes)")
    c.add_argument("fw_dir", type=Path, help="the output directory of homebox fw build (manifest.json, vfs.bin)")
    c.add_argument("--out", type=Path, required=True, help="the release directory to write")
    c.add_argument("--name", default=None, help="release name (default: the agent's VERSION)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_build)

    c = rs.add_parser("template", help="the desired release document for a campaign (prints JSON)")
    c.add_argument("release_dir", type=Path)
    c.add_argument("--url", required=True, help="where the boxes find this release: http://HOST:PORT/NAME")
    c.add_argument("--confirm-s", type=int, default=300,
                   help="seconds the new release has to connect and publish, else the box goes back (default 300)")
    c.add_argument("--out", type=Path, default=None, help="write it to this file (default: print it)")
    c.set_defaults(func=cmd_template)

    c = rs.add_parser("serve", help="serve release directories over HTTP, with Range requests (until Ctrl-C)")
    c.add_argument("root", type=Path, help="a directory holding release directories")
    c.add_argument("--host", default="0.0.0.0")
    c.add_argument("--port", type=int, default=8070)
    c.set_defaults(func=cmd_serve)


def cmd_build(args) -> int:
    from backend import release
    try:
        info = release.build(args.fw_dir, args.out, args.name)
    except release.ReleaseError as e:
        return fail(args, e, 2)
    short = {k: info[k] for k in ("release", "agent_version", "manifest_sha256", "bytes")}
    out(args, dict(short, files=len(info["files"]), dir=str(args.out)),
        f"release {info['release']} (agent {info['agent_version']}): {len(info['files'])} files, "
        f"{info['bytes']} bytes, manifest sha256 {info['manifest_sha256']} in {args.out}")
    return 0


def cmd_template(args) -> int:
    from backend import release
    from backend.errors import OpsError
    args.json = False
    try:
        doc = release.template(args.release_dir, args.url, args.confirm_s)
    except OpsError as e:
        return fail(args, e, 2)
    text = json.dumps(doc, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
        print(f"wrote {args.out}: release {doc['release']} at {doc['url']}")
    else:
        print(text)
    return 0


def cmd_serve(args) -> int:
    from backend import release
    args.json = False
    try:
        srv = release.serve(args.root, args.host, args.port, background=False, log=print)
    except (release.ReleaseError, OSError) as e:
        return fail(args, e, 2)
    print(f"serving releases under {args.root} on http://{args.host}:{srv.server_address[1]}/ (Ctrl-C stops)",
          flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
    return 0
