"""Reaching pods from the harness: one local port per (node, port), relayed to the pod that plays the node
now. The local port never changes.

Traffic and the Serve REST API go to ``http://127.0.0.1:<local port>``: a node's endpoint keeps its URL
while its pod is killed and replaced. Each accepted connection is dialled on its own to the node's current
pod by a ``Dialer``: ``StreamDialer`` opens a port-forward stream through the API server
(``KubeApi.open_port``; works on any cluster, but on 2 cores carries ~8 requests/s per proxy), and
``DirectDialer`` opens a plain TCP connection to the pod's IP (kind: the host routes each node's pod subnet
through its node container). A connection that arrives while the node has no running pod, or whose pod
refuses, is closed at once, which traffic records as a failure of that endpoint, as it should. A keeper
thread re-reads which pod plays each node. Only loopback is ever bound. Each forward writes what it did
(connections refused) to ``port-forward-<node>-<port>.log`` in the run's folder.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from harness.kube.api import KubeApi, KubeApiError, PortStream

KEEPER_PERIOD_S = 1.0  # how often the keeper re-reads which pod plays each node
# A connection for a node with no known pod, or whose pod refused, re-reads the pods at once, but a reading started
# this recently (or one under way, awaited) is used instead of a new one. Without it every connection to a node
# whose pod is gone listed the pods: at 8 requests/s on kind (2 cores) the relays and the API server took another
# ~60% of a core for as long as the pod was away, and the surviving proxies timed out (docs/kubernetes.md).
REREAD_MIN_S = 0.5
ACCEPT_POLL_S = 0.5  # how long an accept waits before it looks at the stop flag
CHUNK = 65536
DIAL_TIMEOUT_S = 3.0  # a direct connection to a pod's IP that is not accepted by then is refused


@dataclass(frozen=True)
class PodAddress:
    """The running pod that plays a node: its name (for the API) and its IP (for a direct connection)."""

    name: str
    ip: str | None


class DialRefused(Exception):
    """The pod did not take the connection (what was tried and why is the message)."""


class Dialer(Protocol):
    via: str  # how connections reach the pod, for logs and docs

    def dial(self, pod: PodAddress, port: int) -> PortStream: ...


class StreamDialer:
    """Through the API server: a port-forward stream per connection."""

    via = "port-forward stream"

    def __init__(self, api: KubeApi, namespace: str):
        self.api = api
        self.namespace = namespace

    def dial(self, pod: PodAddress, port: int) -> PortStream:
        try:
            return self.api.open_port(self.namespace, pod.name, port)
        except KubeApiError as exc:
            raise DialRefused(f"{pod.name}:{port} refused the stream: {exc}") from exc


class _SocketStream:
    def __init__(self, sock: socket.socket):
        self._sock = sock

    @property
    def socket(self) -> socket.socket:
        return self._sock

    def close(self) -> None:
        self._sock.close()


class DirectDialer:
    """A plain TCP connection to the pod's IP (the host must route the pod subnet: kind does)."""

    via = "pod IP"

    def __init__(self, timeout_s: float = DIAL_TIMEOUT_S):
        self.timeout_s = timeout_s

    def dial(self, pod: PodAddress, port: int) -> PortStream:
        if not pod.ip:
            raise DialRefused(f"{pod.name} has no IP yet")
        try:
            sock = socket.create_connection((pod.ip, port), timeout=self.timeout_s)
        except OSError as exc:
            raise DialRefused(f"{pod.name} ({pod.ip}:{port}) refused the connection: {exc}") from exc
        sock.settimeout(None)
        return _SocketStream(sock)


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

    def __init__(self, dialer: Dialer, running_pods: Callable[[], dict[str, PodAddress | None]],
                 log_dir: Path, port_for: Callable[[], int] | None = None):
        self.dialer = dialer
        self.running_pods = running_pods
        self.log_dir = log_dir
        self.port_for = port_for
        self._forwards: dict[tuple[str, int], Forward] = {}
        self._listeners: dict[tuple[str, int], socket.socket] = {}
        self._targets: dict[str, PodAddress | None] = {}
        self._bridges: set[_Bridge] = set()
        self._lock = threading.Lock()
        self._reading = threading.Lock()  # one reading of the pods at a time
        self._read_at = float("-inf")  # when the last reading started (time.monotonic())
        self.readings = 0  # readings of the pods made (the tests count them)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False
        self.opened = 0  # connections relayed to a pod (for the run's figures)
        self.refused = 0  # connections closed because no pod took them

    def add(self, node: str, remote_port: int) -> Forward:
        """The node's forward of ``remote_port`` (created once, its local port bound for the run)."""
        with self._lock:
            key = (node, remote_port)
            if key not in self._forwards:
                listener = _listen(self.port_for() if self.port_for else 0)
                fwd = Forward(node, remote_port, int(listener.getsockname()[1]))
                self._forwards[key] = fwd
                self._listeners[key] = listener
                if self._started:
                    self._spawn(self._accept, fwd, listener)
            return self._forwards[key]

    def get(self, node: str, remote_port: int) -> Forward | None:
        with self._lock:
            return self._forwards.get((node, remote_port))

    def target(self, node: str) -> str | None:
        """The pod the node's connections go to now (None: none running)."""
        with self._lock:
            found = self._targets.get(node)
        return found.name if found is not None else None

    def _address(self, node: str) -> PodAddress | None:
        with self._lock:
            return self._targets.get(node)

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            self._stop.clear()
            for key, fwd in self._forwards.items():
                if key not in self._listeners:  # stopped before: the same local port again
                    self._listeners[key] = _listen(fwd.local_port)
            pairs = [(self._forwards[key], self._listeners[key]) for key in self._forwards]
        self._spawn(self._keep)
        for fwd, listener in pairs:
            self._spawn(self._accept, fwd, listener)

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=f"port-forward-{target.__name__}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _keep(self) -> None:
        while not self._stop.wait(KEEPER_PERIOD_S):
            with contextlib.suppress(Exception):  # the API server may be briefly away; the next pass retries
                self.reconcile(fresh_s=KEEPER_PERIOD_S / 2)

    def reconcile(self, fresh_s: float = 0.0) -> None:
        """Re-read which running pod plays each node; with ``fresh_s``, not if a reading started within that many
        seconds (a caller that waited for one under way uses its answer)."""
        with self._reading:
            if time.monotonic() - self._read_at < fresh_s:
                return
            self._read_at = time.monotonic()
            self.readings += 1
            pods = self.running_pods()
            with self._lock:
                self._targets = dict(pods)

    def _log(self, fwd: Forward, line: str) -> None:
        path = self.log_dir / f"port-forward-{fwd.node}-{fwd.remote_port}.log"
        with contextlib.suppress(OSError), path.open("a") as fh:
            fh.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    def _accept(self, fwd: Forward, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # the listener was closed: stop() ran
            conn.setblocking(True)
            self._spawn(self._serve, fwd, conn)

    def _open(self, fwd: Forward) -> PortStream | None:
        """A connection to the node's pod, reading the pods again once if the remembered one refuses."""
        tried: set[PodAddress] = set()
        for attempt in range(2):
            pod = self._address(fwd.node)
            if (pod is None or pod in tried) and attempt == 0:
                with contextlib.suppress(Exception):
                    self.reconcile(fresh_s=REREAD_MIN_S)
                pod = self._address(fwd.node)
            if pod is None or pod in tried:
                break
            tried.add(pod)
            try:
                return self.dialer.dial(pod, fwd.remote_port)
            except DialRefused as exc:
                self._log(fwd, str(exc))
                with contextlib.suppress(Exception):
                    self.reconcile(fresh_s=REREAD_MIN_S)
        if self.target(fwd.node) is None:
            self._log(fwd, f"no running pod plays {fwd.node}: connection closed")
        return None

    def _serve(self, fwd: Forward, conn: socket.socket) -> None:
        stream = self._open(fwd) if not self._stop.is_set() else None
        if stream is None:
            with self._lock:
                self.refused += 1
            conn.close()
            return
        bridge = _Bridge(conn, stream)
        with self._lock:
            self.opened += 1
            self._bridges.add(bridge)
        try:
            bridge.pump(self._stop)
        finally:
            with self._lock:
                self._bridges.discard(bridge)

    def stop(self) -> None:
        """Stop accepting, close every listener and every open bridge, and wait for the threads. The forwards
        keep their local ports: ``start`` binds them again."""
        self._stop.set()
        with self._lock:
            listeners = list(self._listeners.values())
            bridges = list(self._bridges)
            self._listeners.clear()
            self._started = False
        for listener in listeners:
            listener.close()
        for bridge in bridges:
            bridge.close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []


def _listen(port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    listener.settimeout(ACCEPT_POLL_S)
    return listener


def pump_bytes(a: socket.socket, b: socket.socket, stopped: Callable[[], bool]) -> None:
    """Copy bytes both ways between two sockets until either ends, one fails, or ``stopped()`` (polled every
    ACCEPT_POLL_S). Neither socket is closed here."""
    peers = {a: b, b: a}
    with selectors.DefaultSelector() as sel:
        sel.register(a, selectors.EVENT_READ)
        sel.register(b, selectors.EVENT_READ)
        try:
            while not stopped():
                for key, _ in sel.select(timeout=ACCEPT_POLL_S):
                    source = key.fileobj
                    data = source.recv(CHUNK)  # type: ignore[union-attr]
                    if not data:
                        return
                    peers[source].sendall(data)  # type: ignore[index]
        except OSError:
            return


class _Bridge:
    """Bytes both ways between a local connection and the pod's (a stream or a socket), until either side ends."""

    def __init__(self, conn: socket.socket, stream: PortStream):
        self.conn = conn
        self.stream = stream
        self._closed = threading.Event()

    def pump(self, stop: threading.Event) -> None:
        try:
            pump_bytes(self.conn, self.stream.socket, lambda: stop.is_set() or self._closed.is_set())
        finally:
            self.close()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(OSError):
            self.conn.close()
        with contextlib.suppress(Exception):
            self.stream.close()
