"""README.md's commands do what it shows: every ``serve-chaos`` command in its code blocks that needs no stack
runs as written (on a sample history and a sample run folder), with its optional parts left out and put in; every
other one is named here with why it needs a stack. A command added to the README is either run or named."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SAMPLE_RUN = ROOT / "tests" / "data" / "report" / "20261125-095509-07e7"
PROGRAMS = (".venv/bin/serve-chaos", "serve-chaos")
NEEDS_STACK = {  # subcommand -> why this test does not run it
    "up": "brings a real stack up (tests/test_local_stack.py runs it)",
    "status": "reads a running stack (tests/test_local_stack.py)",
    "down": "removes the stacks in the machine's state folder (tests/test_local_stack.py)",
    "inject": "injects into a running stack (tests/test_local_stack.py)",
    "traffic": "sends load to a running stack's proxies (tests/test_traffic_cli.py, to a loopback server)",
    "nightly": "runs the seed suite N times on the real stack (make nightly)",
    "matrix": "runs the scenarios once per cell, each on a real stack of its own (tests/test_matrix.py runs its dry run)",
}


def readme_commands() -> list[str]:
    """The serve-chaos command lines of README's bash blocks, comments cut off."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.split(" ")[0] in PROGRAMS:
                commands.append(line)
    return commands


def variants(line: str) -> list[list[str]]:
    """The command without its ``[optional]`` parts, and with them all."""
    bare = re.sub(r"\s*\[[^\]]*\]", "", line)
    full = re.sub(r"\[([^\]]*)\]", r"\1", line)
    return [shlex.split(v)[1:] for v in dict.fromkeys((bare, full))]


COMMANDS = readme_commands()


def test_the_readme_shows_serve_chaos_commands_and_each_is_run_or_named():
    subcommands = {args[0] for line in COMMANDS for args in variants(line) if args and not args[0].startswith("-")}
    assert {"verdict", "report", "up", "inject"} <= subcommands, COMMANDS
    runnable = {"verdict", "report", "manifests", "sweep"}
    assert subcommands <= runnable | set(NEEDS_STACK), f"README commands neither run nor named: {subcommands - runnable - set(NEEDS_STACK)}"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """The files README's commands name: a history (h.jsonl) and run folders (reports/latest, RUN_A, RUN_B)."""
    for name in ("latest", "RUN_A", "RUN_B"):
        shutil.copytree(SAMPLE_RUN, tmp_path / "reports" / name)
    shutil.copy(SAMPLE_RUN / "test_worker_pod_failure" / "history.jsonl", tmp_path / "h.jsonl")
    return tmp_path


@pytest.mark.parametrize("line", [c for c in COMMANDS if (variants(c)[0] or ["--help"])[0] not in NEEDS_STACK])
def test_a_readme_command_that_needs_no_stack_runs_as_written(line, workdir):
    for args in variants(line):
        res = subprocess.run([sys.executable, "-m", "harness", *args], cwd=workdir, capture_output=True, text=True,
                             timeout=120)
        shown = f"`{' '.join(['serve-chaos', *args])}` exited {res.returncode}:\n{res.stdout[-1500:]}\n{res.stderr[-1500:]}"
        assert "usage:" not in res.stderr and "Traceback" not in res.stderr, shown
        if args and args[0] == "verdict":  # the sample run passed worker_pod_failure: its history's verdict
            assert res.returncode in (0, 1), shown
            assert ("availability" in res.stdout) or ('"checks"' in res.stdout), shown
        else:
            assert res.returncode == 0, shown
        if args and args[0] == "report" and "--compare" not in args:
            assert (workdir / "reports" / "latest" / "index.html").is_file(), shown
