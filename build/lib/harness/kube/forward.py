"""Reaching pods from the harness: one ``kubectl port-forward`` per (node, port), kept pointing at the pod
that plays the node now, on a local port that never changes.

Traffic and the Serve REST API go to ``http://127.0.0.1:<local port>``: a node's endpoint keeps its URL
while its pod is killed and replaced. A forward dies with its pod; a keeper thread starts it again, on
the same local port, once the node has a running pod (while it has none, connections are refused, which
traffic records as failures of that endpoint, as it should). Only loopback is ever bound.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.kube.tools import Kubectl, Runner

KEEPER_PERIOD_S = 0.5  # how often the keeper looks for dead forwards


@dataclass(frozen=True)
class Forward:
    node: str
    remote_port: int
    local_port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"


def free_local_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PortForwards:
    """The run's forwards. ``running_pods()`` answers, for each node, the running pod that plays it (or None)."""

    def __init__(self, kubectl: Kubectl, runner: Runner, running_pods: Callable[[], dict[str, str | None]],
                 log_dir: Path, port_for: Callable[[], int] = free_local_port):
        self.kubectl = kubectl
        self.runner = runner
        self.running_pods = running_pods
        self.log_dir = log_dir
        self.port_for = port_for
        self._forwards: dict[tuple[str, int], Forward] = {}
        self._procs: dict[tuple[str, int], tuple[str, subprocess.Popen]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, node: str, remote_port: int) -> Forward:
        """The node's forward of ``remote_port`` (created once; its local port stays for the run)."""
        with self._lock:
            key = (node, remote_port)
            if key not in self._forwards:
                self._forwards[key] = Forward(node, remote_port, self.port_for())
            return self._forwards[key]

    def get(self, node: str, remote_port: int) -> Forward | None:
        with self._lock:
            return self._forwards.get((node, remote_port))

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._keep, name="port-forwards", daemon=True)
            self._thread.start()

    def _keep(self) -> None:
        while not self._stop.wait(KEEPER_PERIOD_S):
            try:
                self.reconcile()
            except Exception:  # noqa: BLE001 - the API server may be briefly away; the next pass retries
                continue

    def reconcile(self) -> None:
        """One pass: (re)start every forward that is missing, dead, or points at a pod that no longer plays its node."""
        with self._lock:
            forwards = dict(self._forwards)
            dead = [key for key in forwards if key not in self._procs or self._procs[key][1].poll() is not None]
        if not dead:
            return
        pods = self.running_pods()
        for key, fwd in forwards.items():
            pod = pods.get(fwd.node)
            with self._lock:
                current = self._procs.get(key)
                if current is not None and current[1].poll() is None and current[0] == pod:
                    continue
                if current is not None:
                    _end(current[1])
                    del self._procs[key]
                if pod is None or self._stop.is_set():
                    continue
                log = self.log_dir / f"port-forward-{fwd.node}-{fwd.remote_port}.log"
                argv = self.kubectl.port_forward(pod, fwd.local_port, fwd.remote_port)
                self._procs[key] = (pod, self.runner.spawn(argv, str(log)))

    def stop(self) -> None:
        """Stop the keeper and end every forward (they are this process's children)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            for _, proc in self._procs.values():
                _end(proc)
            self._procs.clear()


def _end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=3)
