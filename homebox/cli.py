"""The `homebox` console command: a thin layer over the library modules.

Each role registers its subcommands from its own module (`homebox/cli_<role>.py`,
each with `register(subparsers)`), so the CLI stays a table of contents.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# (role, help, entries "module[:function]" that add subcommands to it; the
# function defaults to `register(subparsers)`)
ROLES = [
    ("box", "run and inspect one box on this host", ["homebox.cli_box", "homebox.cli_speed", "homebox.cli_tic"]),
    ("fw", "build firmware and filesystem images", ["homebox.cli_fw"]),
    ("vbox", "virtual boxes that behave like ESP32 devkits on a serial link", ["homebox.cli_vbox"]),
    ("bench", "flash, provision and test boxes at the bench", ["homebox.cli_bench"]),
    ("ops", "operator tools: validate, push, campaign, ingest, status, report, keys", ["homebox.cli_speed:register_ops", "homebox.cli_ops_fleet",
                                                                 "homebox.cli_ops_docs", "homebox.cli_ops_campaign", "homebox.cli_ops_keys"]),
]


# More subcommands of a role, kept apart from its line above: the operator's HTTP
# API and console (ops serve, account, token, inventory, audit)
EXTRA = {"ops": ["homebox.cli_ops_serve", "homebox.cli_ops_identity", "homebox.cli_ops_release"]}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="homebox", description="homebox: box, bench and operator tools")
    roles = p.add_subparsers(dest="role", metavar="ROLE")
    roles.required = True
    for role, help_, modules in ROLES:
        if not modules:
            continue
        rp = roles.add_parser(role, help=help_)
        sub = rp.add_subparsers(dest="cmd", metavar="COMMAND")
        sub.required = True
        for entry in modules + EXTRA.get(role, []):
            mod, _, fn = entry.partition(":")
            getattr(importlib.import_module(mod), fn or "register")(sub)
    demo = roles.add_parser("demo", help="the whole system on this machine, in one command")
    importlib.import_module("homebox.demo").configure(demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
