"""``serve-chaos COMMAND`` (or ``python -m harness COMMAND``): one entry point, subcommands registered by their
own modules.

Each module in COMMAND_MODULES exposes ``register(subparsers)`` and sets ``func`` on its parsers;
``func(args) -> int`` is the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import harness
from harness.exit_codes import EPILOG, ExitCode

COMMAND_MODULES = (
    "harness.stack_cli",  # up, status, down, sweep, manifests
    "harness.fault_cli",  # inject
    "harness.traffic_cli",  # traffic, verdict
    "harness.report_cli",
    "harness.nightly_cli",  # nightly
    "harness.matrix_cli",  # matrix
)


PROG = "serve-chaos"  # the console script; `python -m harness` is the same
DESCRIPTION = ("Chaos tests for Ray Serve: bring a stack up (local, kind or an existing cluster), inject the "
               "fault-tolerance guide's failures, and judge with figures whether the app stayed available. "
               "`python -m harness` is the same.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version",
                        version=f"{PROG} {harness.__version__} (Ray Serve chaos harness; python {sys.version.split()[0]})")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    for sub in subparsers.choices.values():  # one exit-code table, in every command's --help
        sub.epilog = f"{sub.epilog}\n\n{EPILOG}" if sub.epilog else EPILOG
        sub.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # a usage error exits 2 (argparse), as ExitCode.UNKNOWN says
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED


def run() -> None:
    """The console script ``serve-chaos``."""
    sys.exit(main())
