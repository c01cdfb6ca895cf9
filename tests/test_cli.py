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


# --- every stack command on every backend, named one way (harness/backends.py) ------------------------------
STACK_COMMANDS = ("up", "status", "down", "sweep", "inject")


@pytest.mark.parametrize("command", STACK_COMMANDS)
def test_every_stack_command_takes_the_backend_and_names_the_stack_one_way(command):
    res = cli(command, *(["kill-proxy"] if command == "inject" else []), "--help")
    assert res.returncode == 0, res.stderr
    for option in ("--backend {local,kind,kube}", "--stack-config FILE", "--run-id", "--kube-config", "--context"):
        assert option in res.stdout, f"{command} --help lacks {option}:\n{res.stdout}"
    assert "--json" in res.stdout


def kube_settings(tmp_path, runs: dict[str, str]) -> str:
    """A kube settings file whose state folder holds runs in the given states."""
    state = tmp_path / "kube-state"
    state.mkdir(parents=True)
    for run_id, run_state in runs.items():
        (state / run_id).mkdir(parents=True)
        (state / run_id / "state").write_text(run_state)
    path = tmp_path / "kube.toml"
    path.write_text(f'[kube]\nstate_dir = "{state}"\nallowed_contexts = ["kind-*"]\n')
    return str(path)


def test_a_kubernetes_command_finds_the_one_run_that_is_up(tmp_path):
    from harness.backends import StackChoice, kube_run_id
    from harness.stack.errors import StackError

    settings = kube_settings(tmp_path, {"sc0000aa": "up", "sc0000bb": "starting"})
    assert kube_run_id(StackChoice("kind", kube_config=settings)) == "sc0000aa"  # a run still starting is not it
    with pytest.raises(StackError, match=r"no kind run sc0000bb is up \(runs up in .*: sc0000aa\)"):
        kube_run_id(StackChoice("kind", kube_config=settings, run_id="sc0000bb"))
    two = kube_settings(tmp_path / "two", {"sc0000aa": "up", "sc0000cc": "up"})
    with pytest.raises(StackError, match="2 kube runs are up .*; name one with --run-id"):
        kube_run_id(StackChoice("kube", kube_config=two))
    assert kube_run_id(StackChoice("kube", kube_config=two, run_id="sc0000cc")) == "sc0000cc"


def test_kubernetes_backends_on_the_command_line_say_what_is_missing(tmp_path):
    settings = kube_settings(tmp_path, {})
    for command in ("status", "inject"):
        res = cli(command, *(["kill-proxy"] if command == "inject" else []), "--backend", "kind",
                  "--kube-config", settings)
        assert res.returncode == ExitCode.STACK, res.stderr
        assert "no kind stack is up (no run marked up in" in res.stderr and "serve-chaos up --backend kind" in res.stderr
    # up refuses a context that is not on the allowlist before it creates anything
    res = cli("up", "--backend", "kube", "--context", "prod-cluster", "--kube-config", settings, "--json")
    assert res.returncode == ExitCode.STACK, res.stderr
    assert "refusing to bring a stack up on kube context 'prod-cluster'" in res.stderr and res.stdout == ""
    assert not any((tmp_path / "kube-state").iterdir())


def test_down_and_sweep_report_as_json(tmp_path):
    import json

    for command in ("down", "sweep"):
        res = cli(command, "--state-dir", str(tmp_path / "nothing"), "--json")
        assert res.returncode == ExitCode.OK, res.stderr
        report = json.loads(res.stdout)
        assert report["backend"] == "local" and report["removed"] == [] and report["seconds"] >= 0


def test_manifests_is_a_command(tmp_path):
    res = cli("manifests", "--out", str(tmp_path / "objects"))
    assert res.returncode == ExitCode.OK, res.stderr
    written = sorted(p.name for p in (tmp_path / "objects").iterdir())
    assert "04-rayservice.yaml" in written and "kind-config.yaml" in written
    assert "Generated by `serve-chaos manifests`" in (tmp_path / "objects" / "04-rayservice.yaml").read_text()
