"""The fault agent in the head pod (``harness/stack/agent.py``, sent as source: the Ray image has no harness).

``PodAgent.start`` execs a small shell script in the head pod that starts the agent detached (``setsid nohup``),
listening on the pod's loopback (``tcp:127.0.0.1:AGENT_PORT``) once it has attached to the cluster, unless one
already runs there (its PID file in the pod, checked with ``kill -0``). Each request opens a port-forward stream
to that port (the API server and kubelet in the path, nothing on the pod's network); one JSON line each way,
as on the local backend.

The agent dies with its pod (the head's failure replaces the pod) or its container. A request then finds
nothing listening, or a head pod the agent was not started in, and fails at once with AgentDown; the backend
runs a one-shot driver (an exec) and starts the agent again in the background once the head pod runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.kube.api import KubeApi, KubeApiError, PortStream
from harness.stack import agent as agent_module
from harness.stack.agent_wire import (
    AgentAnswer,
    AgentDown,
    AgentStats,
    AgentStuck,
    AgentWire,
)

AGENT_PORT = 18766  # the agent's port on the head pod's loopback (not in the pod's spec: reached by port-forward)
PID_FILE = "/tmp/serve-chaos-agent.pid"
LOG_FILE = "/tmp/serve-chaos-agent.log"
START_TIMEOUT_S = 30.0  # the exec that starts it (the agent attaches in the background)



# alive PID: its /proc entry is there and not a zombie (``kill -0`` takes an unreaped zombie for a live process)
_ALIVE = """alive() { s=$(sed -n 's/^.*) \\(.\\) .*$/\\1/p' /proc/"$1"/stat 2>/dev/null); [ -n "$s" ] && [ "$s" != Z ]; }
p=$(cat {pid_file} 2>/dev/null)
"""


def start_script(port: int, pid_file: str, log_file: str) -> str:
    """$1: the agent's source. setsid: a session of its own, so the exec's end does not take it down; the PID file
    holds the session leader's PID (the group ``stop`` kills), and a second start finds it alive and starts nothing."""
    return _ALIVE.replace("{pid_file}", pid_file) + f"""
if [ -n "$p" ] && alive "$p"; then echo "running $p"; exit 0; fi
RAY_USAGE_STATS_ENABLED=0 setsid nohup python -c "$1" tcp:127.0.0.1:{port} auto - >{log_file} 2>&1 </dev/null &
echo $! >{pid_file}
echo "started $!"
"""


def stop_script(pid_file: str) -> str:
    return f'p=$(cat {pid_file} 2>/dev/null); [ -n "$p" ] && kill -9 -"$p" 2>/dev/null; rm -f {pid_file}; echo stopped'


def check_script(pid_file: str, log_file: str) -> str:
    return _ALIVE.replace("{pid_file}", pid_file) + f'if [ -n "$p" ] && alive "$p"; then echo alive; else echo gone; tail -c 2000 {log_file}; fi'


class AgentStartFailed(RuntimeError):
    """The agent's process in the head pod ended before it answered; the message holds its log's tail."""


@dataclass(frozen=True)
class HeadPod:
    """Where the agent runs: the head's pod. ``uid`` is the pod's uid and its containers' restarts: a replaced pod
    or a restarted container (either ends the agent) is a new one."""

    name: str
    uid: str
    container: str


Exec = Callable[[HeadPod, tuple[str, ...], float], tuple[int, str, str]]  # the backend's exec: (rc, out, err)


def agent_source() -> str:
    return Path(agent_module.__file__).read_text()


class PodAgent:
    """One run's agent in its head pod. ``head`` gives the running head pod (None while there is none);
    ``exec`` runs an argv in it; ``event(kind, detail)`` records what happened to the agent."""

    def __init__(self, kube: KubeApi, namespace: str, head: Callable[[], HeadPod | None], exec_: Exec,
                 event: Callable[[str, str], None], *, port: int = AGENT_PORT, pid_file: str = PID_FILE,
                 log_file: str = LOG_FILE, source: Callable[[], str] = lambda: agent_source()):
        self.kube = kube
        self.port = port
        self._start_script = start_script(port, pid_file, log_file)
        self._stop_script = stop_script(pid_file)
        self._check_script = check_script(pid_file, log_file)
        self._source = source
        self.namespace = namespace
        self._head = head
        self._exec = exec_
        self._event = event
        self._lock = threading.Lock()
        self._started_in: HeadPod | None = None  # the pod the agent was started in (None: not started, or lost)
        self._starting = False
        self.clock_offset_s = 0.0  # agent's clock minus ours, measured at the last readiness check
        self._wire = AgentWire(self._connect, on_broken=self._lost)

    # --- process -------------------------------------------------------------------------------------------
    def start(self) -> bool:
        """Start the agent in the head pod unless it runs there (or there is no head pod); True when it was."""
        head = self._head()
        with self._lock:
            if head is None or self._starting:  # one start at a time: the script's check-then-start is not atomic
                return False
            if self._started_in is not None and self._started_in.uid == head.uid:
                return False
            self._starting = True
        try:
            rc, out, err = self._exec(head, ("sh", "-c", self._start_script, "sh", self._source()), START_TIMEOUT_S)
        finally:
            with self._lock:
                self._starting = False
        if rc != 0:
            self._event("agent_start_failed", f"in {head.name}: exit {rc}: {(err or out).strip()[-300:]}")
            return False
        with self._lock:
            self._started_in = head
        self._event("agent_started", f"in {head.name}: {out.strip()}")
        return True

    def start_in_background(self) -> None:
        with self._lock:
            if self._starting:
                return
        threading.Thread(target=self.start, name="pod-agent-start", daemon=True).start()

    def wait_ready(self, timeout_s: float) -> None:
        """Started and attached: it answers through a port-forward. Its clock offset is measured then. An agent
        whose process is gone from the pod before it answered raises AgentStartFailed with its log's tail."""
        from harness.waiting import wait_until

        self.start()
        last: list[str] = ["no answer yet"]
        probes = [0]
        gone: list[str] = []

        def answers() -> bool:
            if self._started_in is None:  # a probe before it listened (or a lost pod) dropped it: find it again
                self.start()
            try:
                self.measure_clock()
            except AgentDown as exc:
                last[0] = str(exc)
                probes[0] += 1
                if probes[0] % 4 == 0:  # every 2 s: is it still there, attaching?
                    gone.extend(self._gone_log())
                return bool(gone)  # gone: no point waiting longer
            return True

        wait_until("the fault agent in the head pod to attach to the cluster (to answer on its port)", answers,
                   timeout_s=timeout_s, interval_s=0.5, describe=lambda: f"started in {self._where()}; last: {last[0]}")
        if gone:
            raise AgentStartFailed(
                f"the fault agent's process in {self._where()} ended before it answered; its log:\n{gone[0]}\n"
                "(set [drivers] fault_agent = false in the stack config to run a one-shot driver per command instead)")

    def _gone_log(self) -> list[str]:
        """[its log's tail] when the agent's process is no longer in the head pod; [] while it runs (or no pod)."""
        head = self._head()
        if head is None:
            return []
        rc, out, _ = self._exec(head, ("sh", "-c", self._check_script), START_TIMEOUT_S)
        if rc == 0 and out.startswith("gone"):
            return [out[len("gone"):].strip()[-1500:]]
        return []

    def measure_clock(self) -> AgentStats:
        sent = time.time()
        stats = self._wire.stats(timeout_s=5.0)
        self.clock_offset_s = stats.now_wall - (sent + time.time()) / 2
        return stats

    def stop(self) -> None:
        head = self._head()
        with self._lock:
            self._started_in = None
        if head is not None:
            self._exec(head, ("sh", "-c", self._stop_script), START_TIMEOUT_S)

    def _where(self) -> str:
        started = self._started_in
        return started.name if started is not None else "no pod"

    def _lost(self) -> None:
        with self._lock:
            self._started_in = None

    # --- requests ------------------------------------------------------------------------------------------
    def _connect(self) -> PortStream:
        head = self._head()
        if head is None:
            raise AgentDown("the head pod is not running")
        started = self._started_in
        if started is None or started.uid != head.uid:
            raise AgentDown("starting" if self._starting else
                            f"not running in head pod {head.name}" + (f" (it ran in {started.name})" if started else ""))
        try:
            return self.kube.open_port(self.namespace, head.name, self.port)
        except KubeApiError as exc:
            raise AgentDown(f"no port-forward to it: {exc}") from None

    def run(self, snippet: str, timeout_s: float) -> AgentAnswer:
        """As a one-shot driver would answer; its times are the harness's clock (the agent's, less its offset)."""
        try:
            answer = self._wire.run(snippet, timeout_s)
        except AgentStuck as stuck:
            self.stop()  # stuck: the next call starts a fresh one
            return AgentAnswer(stuck.as_result("fault agent in the head pod; stopped"), time.time(), time.time())
        return AgentAnswer(answer.result, answer.started_wall - self.clock_offset_s,
                           answer.finished_wall - self.clock_offset_s)

    def stats(self, timeout_s: float = 5.0) -> AgentStats:
        return self._wire.stats(timeout_s)
