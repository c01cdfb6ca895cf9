"""The one table of exit codes, for every command (printed at the end of every ``--help``)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # the command did what it says; a verdict passed (or failed only as expected: a known issue)
    FAIL = 1  # a verdict failed; a fault did not take effect or did not recover; a comparison regressed
    UNKNOWN = 2  # the harness could not see (a verdict is UNKNOWN); a usage or configuration error
    STACK = 3  # the stack is not there, or could not be brought up, reached or torn down
    INTERRUPTED = 130  # Ctrl-C or SIGTERM


EPILOG = "exit codes:\n" + "\n".join(f"  {code.value:<4} {text}" for code, text in (
    (ExitCode.OK, "ok: the command did what it says; a verdict passed (or failed only as a pinned known issue)"),
    (ExitCode.FAIL, "fail: a verdict failed; a fault did not take effect or recover; a comparison regressed"),
    (ExitCode.UNKNOWN, "unknown: the harness could not see; or a usage or configuration error"),
    (ExitCode.STACK, "stack: the stack is not there, or could not be brought up, reached or torn down"),
    (ExitCode.INTERRUPTED, "interrupted (Ctrl-C, SIGTERM)"),
))
