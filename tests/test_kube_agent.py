"""The fault agent on the Kubernetes backends, with the real agent server and the real start script: the head
pod's exec is a real ``sh`` on this machine (the script starts the agent detached, with its PID file, as in the
pod), and the port-forward to the pod's agent port is a real TCP connection to it. No Ray: the agent serves a
stand-in for the ``ray`` module. With Ray, on kind: tests/test_kube_live.py."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from test_kube_commands import NS, FakeRunner, fake_api, kind_cluster, pod

from harness.kube.agent import AgentStartFailed, PodAgent
from harness.kube.api import PODS
from harness.kube.forward import pump_bytes
from harness.local import system
from harness.secrets import REDACTED
from harness.stack.agent_wire import AgentDown
from harness.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
# what the pod's `python -c "$1" tcp:127.0.0.1:PORT auto -` runs: the real server, a stand-in ray module
FAKE_SOURCE = (f"import sys, types; sys.path.insert(0, {str(ROOT)!r}); from harness.stack.agent import route_output, "
               "serve; route_output(); serve(sys.argv[1], types.SimpleNamespace(name='fake-ray'))")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Pod:
    """The head pod's side: its exec runs real sh here (python on PATH is this interpreter); its agent port is a
    real loopback port. ``pids`` are the agents started, each killed (by group) at the end."""

    def __init__(self, tmp: Path):
        self.port = free_port()
        self.pid_file = str(tmp / "agent.pid")
        self.log_file = str(tmp / "agent.log")
        self.bin = tmp / "bin"
        self.bin.mkdir()
        (self.bin / "python").symlink_to(sys.executable)
        self.execs: list[tuple[str, ...]] = []
        self.pids: list[int] = []

    def exec(self, pod_name: str, container: str, argv: tuple[str, ...]) -> tuple[int, str, str]:
        self.execs.append(argv)
        if argv[0] != "sh":  # a one-shot driver (python -c ...): what the fallback runs
            return 0, "one-shot\n", ""
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False,
                              env={**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}"})
        if done.stdout.startswith("started "):
            self.pids.append(int(done.stdout.split()[1]))
        return done.returncode, done.stdout, done.stderr

    def serve_port(self, sock: socket.socket) -> None:
        """The port-forward's far end: the pod's loopback port (closed at once when nothing listens there)."""
        with sock:
            try:
                upstream = socket.create_connection(("127.0.0.1", self.port), timeout=2)
            except OSError:
                return
            with upstream:
                pump_bytes(sock, upstream, lambda: False)

    def kill_all(self) -> None:
        for pid in self.pids:
            if system.pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):  # its group is gone already
                    os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def head_pod(tmp_path):
    pod_side = Pod(tmp_path)
    yield pod_side
    pod_side.kill_all()


@pytest.fixture
def cluster(settings, head_pod):
    api = fake_api([pod("rs-head-x1", "head", "10.244.1.5"), pod("rs-workers-a", "worker", "10.244.2.5")])
    api.exec_answer = head_pod.exec
    api.port_servers[("rs-head-x1", head_pod.port)] = head_pod.serve_port
    c = kind_cluster(settings, FakeRunner(), api)
    c.agent = PodAgent(api, NS, c._head_pod, c._agent_exec, lambda kind, detail: c._event(kind, "head", detail),
                       port=head_pod.port, pid_file=head_pod.pid_file, log_file=head_pod.log_file,
                       source=lambda: FAKE_SOURCE)
    return c


@pytest.fixture
def settings(tmp_path):
    from harness.kube.settings import load_settings

    return load_settings(overrides={"kube": {"state_dir": str(tmp_path / "state")}})


def kinds(cluster) -> list[str]:
    return [e.kind for e in cluster.events() if e.kind.startswith("agent") or e.kind.startswith("actor")]


def test_the_agent_starts_detached_in_the_head_pod_once_and_runs_kills_there(cluster, head_pod):
    cluster.agent.wait_ready(timeout_s=30)
    assert len(head_pod.pids) == 1 and cluster.agent.start() is False
    again = PodAgent(cluster.kube, NS, cluster._head_pod, cluster._agent_exec, lambda k, d: None, port=head_pod.port,
                     pid_file=head_pod.pid_file, log_file=head_pod.log_file, source=lambda: FAKE_SOURCE)
    assert again.start() is True and len(head_pod.pids) == 1, "a second process started an agent beside the first"
    result = cluster.kill_actor("SERVE_CONTROLLER_ACTOR")
    # the stand-in ray has no get_actor: the snippet fails there, in the agent, with the driver's exit code
    assert result.returncode == 1 and "AttributeError" in result.stderr
    killed = [e for e in cluster.events() if e.kind == "actor_kill_failed"][-1]
    assert "sent by the fault agent at" in killed.detail
    assert cluster.run_driver("print(ray.name)").stdout == "fake-ray\n"
    assert not any(argv[0] == "python" for argv in head_pod.execs), "a one-shot driver ran beside a ready agent"
    assert cluster.agent.stats().commands == 2
    assert abs(cluster.agent.clock_offset_s) < 0.5  # the same clock here


def test_a_command_while_the_head_pod_is_down_falls_back_at_once_and_says_so(cluster, head_pod):
    cluster.agent.wait_ready(timeout_s=30)
    head = cluster.kube.objects[("pods", NS, "rs-head-x1")]
    head["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "ContainerCreating"}}
    with pytest.raises(AgentDown, match="the head pod is not running"):
        cluster.agent.run("print(1)", timeout_s=5)
    assert len(head_pod.pids) == 1


def test_an_agent_killed_mid_scenario_falls_back_then_is_started_again(cluster, head_pod):
    cluster.agent.wait_ready(timeout_s=30)
    os.killpg(head_pod.pids[0], signal.SIGKILL)
    wait_until("the killed agent to be gone", lambda: not system.pid_alive(head_pod.pids[0]), timeout_s=10)
    assert cluster.run_driver("print(ray.name)").stdout == "one-shot\n"  # nothing listens: down at once, fallback
    assert "agent_fallback" in kinds(cluster)
    wait_until("the agent to be started again in the background", lambda: len(head_pod.pids) == 2, timeout_s=30)
    wait_until("the new agent to answer", lambda: cluster.run_driver("print(ray.name)").stdout == "fake-ray\n",
               timeout_s=30, interval_s=0.2)
    assert kinds(cluster).count("agent_started") >= 2


def test_a_replaced_head_pod_is_a_new_home_the_old_agent_is_not_asked(cluster, head_pod):
    cluster.agent.wait_ready(timeout_s=30)
    del cluster.kube.objects[("pods", NS, "rs-head-x1")]
    cluster.kube.put(PODS, pod("rs-head-y2", "head", "10.244.1.9", created="2026-11-25T10:09:00Z"), NS)
    cluster.kube.port_servers[("rs-head-y2", head_pod.port)] = head_pod.serve_port
    cluster.refresh()
    with pytest.raises(AgentDown, match="not running in head pod rs-head-y2 \\(it ran in rs-head-x1\\)"):
        cluster.agent.run("print(1)", timeout_s=5)


def test_a_stuck_agent_is_stopped_by_its_group_and_answers_as_a_timed_out_driver(cluster, head_pod):
    cluster.agent.wait_ready(timeout_s=30)
    answer = cluster.agent.run("import time\ntime.sleep(60)", timeout_s=0.5)
    assert answer.result.returncode == -1 and "timed out after 0.5s" in answer.result.stderr
    wait_until("the stuck agent's group to be killed", lambda: not system.pid_alive(head_pod.pids[0]), timeout_s=10)
    assert not Path(head_pod.pid_file).exists()


def test_an_agent_that_dies_before_answering_fails_its_wait_with_its_log(cluster, head_pod):
    head_pod.bin.joinpath("python").unlink()  # no python in the pod: setsid cannot start it
    head_pod.bin.joinpath("python").write_text("#!/bin/sh\necho 'no python here' >&2\nexit 127\n")
    head_pod.bin.joinpath("python").chmod(0o755)
    with pytest.raises(AgentStartFailed, match="(?s)ended before it answered; its log:\nno python here\n.*fault_agent = false"):
        cluster.agent.wait_ready(timeout_s=20)


def test_threads_do_not_start_two_agents(cluster, head_pod):
    threads = [threading.Thread(target=cluster.agent.start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(head_pod.pids) == 1


def test_what_the_agent_answers_is_scrubbed_of_the_password(cluster, head_pod):
    cluster.agent.wait_ready(timeout_s=30)
    password = cluster.secret.reveal()
    result = cluster.run_driver(f"import sys\nprint({password!r})\nsys.stderr.write({password!r})")
    assert password not in result.stdout + result.stderr and result.stdout == f"{REDACTED}\n"
