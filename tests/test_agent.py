"""The fault agent's protocol and lifecycle with real processes and a real Unix socket, without Ray: the agent
runs snippets as a one-shot driver would; the client tells a down agent (AgentDown, at once) from a stuck one
(killed, answered as a timed-out driver); a stale socket or a reused PID is not taken for a running agent.
With Ray, on the real stack: tests/test_local_stack.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from harness.local import system
from harness.local.agent_client import AgentClient, AgentDown
from harness.stack.agent import route_output, run_snippet
from harness.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
# the agent's server with a stand-in for the ray module (the snippets below use only ``ray.name``)
FAKE_AGENT = ("import sys, types; from harness.stack.agent import route_output, serve; route_output(); "
              "serve(sys.argv[1], types.SimpleNamespace(name='fake-ray'))")


def test_a_snippet_runs_as_a_one_shot_driver_would(monkeypatch):
    ray = type("Ray", (), {"name": "r"})()
    monkeypatch.setattr(sys, "stdout", sys.stdout)  # restored after the test: route_output replaces both
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    route_output()  # as the agent does at its start
    ok = run_snippet("import json\nprint(json.dumps({'ray': ray.name}))\nprint('a', 'b', sep='-')", ray)
    assert (ok["returncode"], ok["stdout"], ok["stderr"]) == (0, '{"ray": "r"}\na-b\n', "")
    assert ok["started_wall"] <= ok["finished_wall"]
    exited = run_snippet("print('before')\nraise SystemExit(3)", ray)
    assert (exited["returncode"], exited["stdout"]) == (3, "before\n")
    failed = run_snippet("x = 1\nraise ValueError('no such actor')", ray)
    assert failed["returncode"] == 1 and "ValueError: no such actor" in failed["stderr"]


@pytest.fixture
def folder():
    path = Path(tempfile.mkdtemp(prefix="sca-", dir="/tmp"))  # short: a Unix socket path has 107 bytes
    yield path
    for p in path.iterdir():
        p.unlink()
    path.rmdir()


@pytest.fixture
def launches():
    """The agents' process groups this test started; each is killed at the end (only ours, by group)."""
    started: list[int] = []
    yield started
    for pid in started:
        if system.pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)


def client(folder: Path, launches: list[int], head_alive=lambda: True) -> AgentClient:
    def launch() -> int:
        proc = subprocess.Popen([sys.executable, "-c", FAKE_AGENT, str(folder / "agent.sock")], cwd=ROOT,
                                start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        launches.append(proc.pid)
        return proc.pid

    return AgentClient(folder / "agent.sock", folder / "agent.pid", launch=launch, head_alive=head_alive)


def test_the_agent_answers_concurrent_commands_and_counts_them(folder, launches):
    agent = client(folder, launches)
    with pytest.raises(AgentDown, match="not running"):
        agent.run("print(1)", timeout_s=5)
    agent.wait_ready(timeout_s=30)
    answers: list = []
    slow = threading.Thread(target=lambda: answers.append(agent.run("import time\ntime.sleep(1.0)\nprint('slow')", 10)))
    slow.start()
    fast = agent.run("print(ray.name)", timeout_s=5)  # not held up by the slow one
    assert fast.result.stdout == "fake-ray\n" and not answers, "the fast command waited for the slow one"
    slow.join()
    assert answers[0].result.stdout == "slow\n"
    assert agent.stats().commands == 2 and len(launches) == 1
    assert not agent.start(), "a second agent was started beside a running one"


def test_a_stuck_agent_is_killed_and_answers_as_a_timed_out_driver(folder, launches):
    agent = client(folder, launches)
    agent.wait_ready(timeout_s=30)
    answer = agent.run("import time\ntime.sleep(60)", timeout_s=0.5)
    assert answer.result.returncode == -1 and "timed out after 0.5s" in answer.result.stderr
    wait_until("the stuck agent's process to be gone", lambda: not system.pid_alive(launches[0]), timeout_s=10)
    with pytest.raises(AgentDown):
        agent.run("print(1)", timeout_s=5)
    agent.wait_ready(timeout_s=30)  # started again
    assert len(launches) == 2 and agent.run("print(2)", timeout_s=5).result.stdout == "2\n"


def test_a_killed_agent_is_down_at_once_and_its_stale_socket_is_not_taken_for_it(folder, launches):
    agent = client(folder, launches)
    agent.wait_ready(timeout_s=30)
    os.killpg(launches[0], signal.SIGKILL)  # what a head kill does to it
    wait_until("the killed agent to be gone", lambda: not system.pid_alive(launches[0]), timeout_s=10)
    subprocess.run(["true"])  # noqa: S607 - lets subprocess reap the killed child
    assert (folder / "agent.sock").exists(), "the test proves nothing: the socket went with the process"
    # refused, or (the kernel still closing its listener) accepted and reset: either way down, at once
    with pytest.raises(AgentDown, match="not answering|the connection broke"):
        agent.run("print(1)", timeout_s=5)
    assert not (folder / "agent.sock").exists(), "the stale socket stayed"


def test_no_agent_starts_while_the_head_is_down_and_a_reused_pid_is_not_the_agent(folder, launches):
    agent = client(folder, launches, head_alive=lambda: False)
    assert not agent.start() and launches == []
    # a pid file naming a live process that is not the agent (another start time) is not a running agent
    (folder / "agent.pid").write_text(f"{os.getpid()} 1")
    assert agent.pid() is None


def test_a_timed_out_command_keeps_what_it_printed_on_both_streams(folder, launches):
    agent = client(folder, launches)
    agent.wait_ready(timeout_s=30)
    answer = agent.run("import sys, time\nprint('out: secret', flush=True)\nsys.stderr.write('err: secret\\n')\n"
                       "time.sleep(60)", timeout_s=1.0)
    assert answer.result.returncode == -1 and answer.result.stdout == "out: secret\n"
    assert "timed out after 1s" in answer.result.stderr and "err: secret" in answer.result.stderr
