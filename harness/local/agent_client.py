"""The harness's side of the fault agent (``harness/stack/agent.py``): start it inside the head's namespaces,
send it a snippet, tell a down agent from a slow one.

``AgentClient.run`` answers like a one-shot driver (a DriverResult) or raises AgentDown at once when nothing
answers on the socket (the head is down, the agent was killed or is still starting); the backend then runs a
one-shot driver and says so in the events. An agent that does not answer within the caller's timeout is
stuck: it is killed (its process group) and the call answers as a timed-out driver would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from harness.local import system
from harness.stack.agent_wire import (
    AgentAnswer,
    AgentDown,
    AgentStats,
    AgentStuck,
    AgentWire,
    SocketChannel,
)

__all__ = ["AgentAnswer", "AgentClient", "AgentDown", "AgentStats", "agent_command", "launch_in_namespaces"]

MAX_SOCKET_PATH = 100  # a Unix socket path is at most 107 bytes on Linux


class AgentClient:
    """One stack's agent. ``launch`` starts its process (inside the head's namespaces) and returns the host PID
    of that process's group leader; ``head_alive`` says whether starting it can work now."""

    def __init__(self, socket_path: Path, pid_file: Path, launch: Callable[[], int], head_alive: Callable[[], bool]):
        self.socket_path = socket_path
        self.pid_file = pid_file
        self._launch = launch
        self._head_alive = head_alive
        self._lock = threading.Lock()
        self._wire = AgentWire(self._connect, on_broken=self._drop_stale)

    @property
    def usable(self) -> bool:
        return len(str(self.socket_path)) <= MAX_SOCKET_PATH

    # --- process -------------------------------------------------------------------------------------------
    def pid(self) -> int | None:
        """The agent's group leader while it runs (its PID and start time match the pid file's)."""
        try:
            pid_text, _, started = self.pid_file.read_text().strip().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        if not system.pid_alive(pid) or str(system.process_start_time(pid)) != started:
            return None
        return pid

    def starting(self) -> bool:
        """Its process runs but its socket is not there yet (it is attaching to the cluster)."""
        return self.pid() is not None and not self.socket_path.exists()

    def start(self) -> bool:
        """Start the agent unless one runs (or the head is down); True when one was started."""
        with self._lock:
            if not self.usable or self.pid() is not None or not self._head_alive():
                return False
            self.socket_path.unlink(missing_ok=True)
            pid = self._launch()
            self.pid_file.write_text(f"{pid} {system.process_start_time(pid)}")
            return True

    def start_in_background(self) -> None:
        threading.Thread(target=self.start, name="agent-start", daemon=True).start()

    def wait_ready(self, timeout_s: float) -> None:
        from harness.waiting import wait_until

        self.start()
        wait_until("the fault agent to attach to the cluster (its socket to appear)", self._answers,
                   timeout_s=timeout_s, interval_s=0.1,
                   describe=lambda: f"agent pid {self.pid()}, socket {'present' if self.socket_path.exists() else 'absent'}")

    def _answers(self) -> bool:
        try:
            self.stats(timeout_s=2)
        except AgentDown:
            return False
        return True

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.socket_path.unlink(missing_ok=True)
        self.pid_file.unlink(missing_ok=True)

    # --- requests ------------------------------------------------------------------------------------------
    def _connect(self) -> SocketChannel:
        if not self.usable:
            raise AgentDown(f"socket path too long for a Unix socket ({len(str(self.socket_path))} bytes)")
        if not self.socket_path.exists():
            raise AgentDown("starting (not attached yet)" if self.starting() else "not running")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(2.0)
        try:
            sock.connect(str(self.socket_path))
        except (ConnectionRefusedError, FileNotFoundError, TimeoutError) as exc:
            sock.close()
            self._drop_stale()
            raise AgentDown(f"not answering ({type(exc).__name__})") from None
        return SocketChannel(sock)

    def _drop_stale(self) -> None:
        if self.pid() is None:  # it died with the head: its socket is stale
            self.socket_path.unlink(missing_ok=True)

    def run(self, snippet: str, timeout_s: float) -> AgentAnswer:
        """The snippet's result, as a one-shot driver would give it (on a timeout, what it printed so far).
        AgentDown when no agent answers."""
        try:
            return self._wire.run(snippet, timeout_s)
        except AgentStuck as stuck:
            self.stop()  # stuck: the next call starts a fresh one
            return AgentAnswer(stuck.as_result("fault agent; stopped"), time.time(), time.time())

    def stats(self, timeout_s: float = 5.0) -> AgentStats:
        return self._wire.stats(timeout_s)


def agent_command(socket_path: Path, gcs_address: str, node_ip: str) -> list[str]:
    return [sys.executable, "-m", "harness.stack.agent", str(socket_path), gcs_address, node_ip]


def launch_in_namespaces(init_pid: int, argv: list[str], env: dict[str, str], log: Path) -> int:
    """Start ``argv`` inside the namespaces of ``init_pid`` (as a one-shot driver is), in a session of its own
    (its group is what ``stop`` kills), output to ``log``; the host PID of the group leader."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(["nsenter", "-t", str(init_pid), "-p", "-m", "-n", "--", *argv], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    return proc.pid
