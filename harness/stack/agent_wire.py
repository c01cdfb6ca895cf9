"""The harness's side of the fault agent's protocol (``harness/stack/agent.py``), whatever carries it: a Unix
socket on the local backend, a port-forward stream to the head pod's loopback on Kubernetes. A backend gives
``AgentWire`` a way to connect (raising AgentDown when nothing can answer); the wire sends one request per
connection and tells a down agent (AgentDown, at once) from a stuck one (TimeoutError, for the backend to act on).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from harness.stack.cluster import DriverResult

CONNECT_TIMEOUT_S = 2.0  # an agent that does not accept a connection by then is down


class AgentDown(RuntimeError):
    """Nothing answers where the agent should be; the message says what was seen."""


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
    now_wall: float  # the agent's clock when it answered (to compare with the harness's)


class Channel(Protocol):
    """One connection to the agent: a socket to talk on, and how to close it (a port-forward stream closes more
    than its socket)."""

    @property
    def socket(self) -> socket.socket: ...

    def close(self) -> None: ...


class SocketChannel:
    """A plain connected socket as a Channel."""

    def __init__(self, sock: socket.socket):
        self._sock = sock

    @property
    def socket(self) -> socket.socket:
        return self._sock

    def close(self) -> None:
        self._sock.close()


Connect = Callable[[], Channel]  # a connection to the agent, or AgentDown


class AgentWire:
    """Requests to one agent. ``on_broken`` runs when a connection broke or closed mid-answer (the agent died):
    the backend's chance to drop what it believed about a running agent."""

    def __init__(self, connect: Connect, on_broken: Callable[[], None] = lambda: None):
        self._connect = connect
        self._on_broken = on_broken

    def request(self, request: dict, timeout_s: float, streamed: dict[str, list[str]] | None = None) -> dict:
        """One request's answer; lines streamed before it (a snippet's output) go into ``streamed``. TimeoutError
        when no answer came within ``timeout_s``."""
        channel = self._connect()
        sock = channel.socket
        try:
            deadline = time.monotonic() + timeout_s
            buffer = b""
            try:
                sock.settimeout(CONNECT_TIMEOUT_S)
                sock.sendall((json.dumps(request) + "\n").encode())
                while True:
                    while b"\n" not in buffer:
                        sock.settimeout(max(0.001, deadline - time.monotonic()))
                        chunk = sock.recv(65536)
                        if not chunk:
                            self._on_broken()
                            raise AgentDown("it closed the connection without an answer (it died, or nothing listens)")
                        buffer += chunk
                    line, _, buffer = buffer.partition(b"\n")
                    message = json.loads(line)
                    if "stream" in message:
                        if streamed is not None:
                            streamed.setdefault(str(message["stream"]), []).append(str(message["text"]))
                        continue
                    return message
            except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError) as exc:  # dying as we connected
                self._on_broken()
                raise AgentDown(f"the connection broke ({type(exc).__name__}): it died") from None
        finally:
            channel.close()

    def run(self, snippet: str, timeout_s: float) -> AgentAnswer:
        """The snippet's result, as a one-shot driver would give it. AgentDown when no agent answers; TimeoutError
        (with what it printed so far in ``streamed`` of the error's args) when it does not finish in time."""
        streamed: dict[str, list[str]] = {}
        try:
            answer = self.request({"op": "run", "snippet": snippet}, timeout_s, streamed)
        except TimeoutError:
            raise AgentStuck(timeout_s, "".join(streamed.get("stdout", [])), "".join(streamed.get("stderr", []))) from None
        return AgentAnswer(DriverResult(int(answer["returncode"]), str(answer["stdout"]), str(answer["stderr"])),
                           float(answer["started_wall"]), float(answer["finished_wall"]))

    def stats(self, timeout_s: float = 5.0) -> AgentStats:
        try:
            answer = self.request({"op": "stats"}, timeout_s)
        except TimeoutError:
            raise AgentDown("no answer to stats") from None
        return AgentStats(int(answer["pid"]), float(answer["cpu_s"]), float(answer["rss_mb"]), int(answer["commands"]),
                          float(answer.get("now_wall", 0.0)))


class AgentStuck(TimeoutError):
    """The agent took a snippet and gave no answer within its timeout; what it printed so far is kept."""

    def __init__(self, timeout_s: float, stdout: str, stderr: str):
        super().__init__(f"no answer within {timeout_s:g}s")
        self.timeout_s, self.stdout, self.stderr = timeout_s, stdout, stderr

    def as_result(self, who: str) -> DriverResult:
        """What a timed-out one-shot driver would have given."""
        return DriverResult(-1, self.stdout, f"driver timed out after {self.timeout_s:g}s ({who})\n{self.stderr}")
