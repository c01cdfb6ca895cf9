"""The harness's side of the fault agent (``harness/local/agent.py``): start it inside the head's namespaces,
send it a snippet, tell a down agent from a slow one.

``AgentClient.run`` answers like a one-shot driver (a DriverResult) or raises AgentDown at once when nothing
answers on the socket (the head is down, the agent was killed or is still starting); the backend then runs a
one-shot driver and says so in the events. An agent that does not answer within the caller's timeout is
stuck: it is killed (its process group) and the call answers as a timed-out driver would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.local import system
from harness.stack.cluster import DriverResult

MAX_SOCKET_PATH = 100  # a Unix socket path is at most 107 bytes on Linux


class AgentDown(RuntimeError):
    """Nothing answers on the agent's socket; the message says what was seen."""


@dataclass(frozen=True)
class AgentAnswer:
    result: DriverResult
    started_wall: float  # agent side: when the snippet began (e.g. when the kill was sent)
    finished_wall: float


@dataclass(frozen=True)
class AgentStats:
    pid: int
    cpu_s: float
    rss_mb: float
    commands: int


class AgentClient:
    """One stack's agent. ``launch`` starts its process (inside the head's namespaces) and returns the host PID
    of that process's group leader; ``head_alive`` says whether starting it can work now."""

    def __init__(self, socket_path: Path, pid_file: Path, launch: Callable[[], int], head_alive: Callable[[], bool]):
        self.socket_path = socket_path
        self.pid_file = pid_file
        self._launch = launch
        self._head_alive = head_alive
        self._lock = threading.Lock()

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
    def _request(self, request: dict, timeout_s: float, streamed: dict[str, list[str]] | None = None) -> dict:
        """One request's answer; lines streamed before it (a snippet's output) go into ``streamed``."""
        if not self.usable:
            raise AgentDown(f"socket path too long for a Unix socket ({len(str(self.socket_path))} bytes)")
        if not self.socket_path.exists():
            raise AgentDown("starting (not attached yet)" if self.starting() else "not running")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(2.0)
            try:
                sock.connect(str(self.socket_path))
            except (ConnectionRefusedError, FileNotFoundError, TimeoutError) as exc:
                if self.pid() is None:  # it died with the head: its socket is stale
                    self.socket_path.unlink(missing_ok=True)
                raise AgentDown(f"not answering ({type(exc).__name__})") from None
            deadline = time.monotonic() + timeout_s
            buffer = b""
            try:
                sock.sendall((json.dumps(request) + "\n").encode())
                while True:
                    while b"\n" not in buffer:
                        sock.settimeout(max(0.001, deadline - time.monotonic()))
                        chunk = sock.recv(65536)
                        if not chunk:
                            raise AgentDown("it closed the connection without an answer (it died mid-command)")
                        buffer += chunk
                    line, _, buffer = buffer.partition(b"\n")
                    message = json.loads(line)
                    if "stream" in message:
                        if streamed is not None:
                            streamed.setdefault(str(message["stream"]), []).append(str(message["text"]))
                        continue
                    return message
            except (ConnectionResetError, BrokenPipeError) as exc:  # it was dying as we connected
                if self.pid() is None:  # and is dead now: its socket is stale
                    self.socket_path.unlink(missing_ok=True)
                raise AgentDown(f"the connection broke ({type(exc).__name__}): it died") from None
        finally:
            sock.close()

    def run(self, snippet: str, timeout_s: float) -> AgentAnswer:
        """The snippet's result, as a one-shot driver would give it (on a timeout, what it printed so far).
        AgentDown when no agent answers."""
        streamed: dict[str, list[str]] = {}
        try:
            answer = self._request({"op": "run", "snippet": snippet}, timeout_s, streamed)
        except TimeoutError:
            self.stop()  # stuck: the next call starts a fresh one
            out, err = "".join(streamed.get("stdout", [])), "".join(streamed.get("stderr", []))
            return AgentAnswer(DriverResult(-1, out, f"driver timed out after {timeout_s:g}s (fault agent; stopped)\n{err}"),
                               time.time(), time.time())
        return AgentAnswer(DriverResult(int(answer["returncode"]), str(answer["stdout"]), str(answer["stderr"])),
                           float(answer["started_wall"]), float(answer["finished_wall"]))

    def stats(self, timeout_s: float = 5.0) -> AgentStats:
        try:
            answer = self._request({"op": "stats"}, timeout_s)
        except TimeoutError:
            raise AgentDown("no answer to stats") from None
        return AgentStats(int(answer["pid"]), float(answer["cpu_s"]), float(answer["rss_mb"]), int(answer["commands"]))


def agent_command(socket_path: Path, gcs_address: str, node_ip: str) -> list[str]:
    return [sys.executable, "-m", "harness.local.agent", str(socket_path), gcs_address, node_ip]


def launch_in_namespaces(init_pid: int, argv: list[str], env: dict[str, str], log: Path) -> int:
    """Start ``argv`` inside the namespaces of ``init_pid`` (as a one-shot driver is), in a session of its own
    (its group is what ``stop`` kills), output to ``log``; the host PID of the group leader."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(["nsenter", "-t", str(init_pid), "-p", "-m", "-n", "--", *argv], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    return proc.pid
