"""The one command line (``serve-chaos``, the same as ``python -m harness``): every command's --help ends with
the one exit-code table, --version, and the exit codes of the errors a user meets first."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.cli import build_parser
from harness.exit_codes import EPILOG, ExitCode

COMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)  # noqa: SLF001 - argparse keeps them there


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_help_ends_with_the_exit_codes(command):
    res = cli(*([command] if command else []), "--help")
    assert res.returncode == 0, res.stderr
    assert EPILOG.splitlines()[0] in res.stdout and "3    stack:" in res.stdout, res.stdout[-600:]


def test_the_commands_are_there_and_there_is_a_version():
    assert {"up", "status", "down", "inject", "traffic", "verdict", "report", "nightly"} <= set(COMMANDS)
    res = cli("--version")
    assert res.returncode == 0 and res.stdout.startswith("serve-chaos ") and "python 3." in res.stdout


def test_the_exit_codes_a_user_meets_first(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[workers]\ncount = "two"\n')
    assert cli("down", "--stack-config", str(bad)).returncode == ExitCode.UNKNOWN  # a configuration error
    assert cli("nope").returncode == ExitCode.UNKNOWN  # a usage error (argparse's 2)
    gone = cli("inject", "kill-proxy", "--state-dir", str(tmp_path / "nothing"))
    assert gone.returncode == ExitCode.STACK and "no local stack is up" in gone.stderr, gone.stderr
    status = cli("status", "--state-dir", str(tmp_path / "nothing"))
    assert status.returncode == ExitCode.STACK, status.stderr
