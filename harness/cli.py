"""``python -m harness COMMAND``: one entry point, subcommands registered by their own modules.

Each module in COMMAND_MODULES exposes ``register(subparsers)`` and sets ``func`` on its parsers;
``func(args) -> int`` is the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "harness.local.cli",  # up, status, down
    "harness.fault_cli",  # inject
    "harness.traffic_cli",  # traffic, verdict
    "harness.report_cli",
    "harness.nightly_cli",  # nightly
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
