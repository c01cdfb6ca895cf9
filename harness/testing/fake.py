"""FakeCluster: an in-memory stack for testing the harness's own logic, never a substitute for the real one.

It implements the ``Cluster`` protocol on a model of the guide's stack: a head and workers with Ray node
ids, the Serve controller on the head, a proxy per node, and replicas of each app (ids, PIDs, states). The
fault primitives act on that model the way the real stack reacts, on a small real-time scale:

- ``kill_node``: the node's processes disappear at once; its replicas die (Serve lists them as they were
  for ``stale_listing_s``) and the controller replaces them on the nodes that are up; per the node's
  restart policy (``always`` / ``never``) it boots again after ``restart_delay_s`` as a new Ray node id,
  and the controller gives it a new proxy. A dead head takes Serve's APIs with it: ``status()`` says
  ``serve_api_reachable=False`` and ``actors()`` raises, as on the real stack; its controller restarts
  (same actor id, new PID) once the head is back, as with GCS fault tolerance.
- ``kill_actor``: the controller with ``no_restart=True`` is gone until the operator (``set_operator``)
  deploys the config again ``operator_grace_s`` later; with ``no_restart=False`` Ray restarts it. A proxy
  is restarted by Ray (same actor id, new PID) or, with ``no_restart=True``, replaced by the controller.
  A replica is replaced by the controller with a new replica id and PID.
- ``stop_node`` / ``start_node``, ``add_worker`` (joins after ``join_delay_s``), ``freeze_node`` /
  ``thaw_node`` (answers are held until the thaw), ``freeze_process`` / ``thaw_process`` (a frozen proxy holds
  its node's answers; any other frozen process is only listed as stopped), ``partition`` / ``unpartition``
  (recorded and listed by ``partitioned_from()``; the model serves on as before), ``degrade_network`` (recorded
  only), ``terminate_node`` (a kill: the fake has no drain), ``upgrade_app`` (a rolling update: one replica at a
  time is retired and replaced), ``scale``, ``apply_serve_config``.

Time is real monotonic time: a ticker thread advances the model every ``TICK_S`` and every query advances
it first, so the scenario machinery's waits work unchanged. Keep the delays small (tenths of a second).

Every node has a real HTTP server on 127.0.0.1 (its "proxy port"): while the node is up and its proxy
runs, it answers ``GET <route>`` with the PID of a RUNNING replica of the route's app (one on that node
if there is one, else any, as a proxy routes), 503 when there is none; while the node or its proxy is
down it refuses connections. ``GET <route>/fail`` (or ``<route>/fail-anonymously``, which answers without naming the replica, as a
user's own toggle may) on an app with a health toggle makes one replica's
``check_health`` fail, like the guide's health-check app. So real Traffic runs against it and histories
are real. Only loopback is used: ``allowed_networks()`` is empty.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import string
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests

from harness.stack.app import AppUnderTest, HealthTarget
from harness.stack.cluster import (
    AppInfo,
    ControllerInfo,
    DriverResult,
    Endpoint,
    NodeInfo,
    NodeProcess,
    ProxyInfo,
    ProxyRoute,
    RayActor,
    ReplicaInfo,
    StackEvent,
    StackStatus,
)
from harness.stack.config import CheckConfig, RequestConfig
from harness.waiting import wait_until

T = TypeVar("T")

HOST = "127.0.0.1"
HEAD = "head"
TICK_S = 0.02  # the ticker's period: how often the model advances on its own
UNHEALTHY_LISTED_S = 0.1  # an UNHEALTHY replica stays listed this long before the controller removes it
CONTROLLER_ACTOR_NAME = "SERVE_CONTROLLER_ACTOR"
CONTROLLER_CLASS = "ServeController"
PROXY_CLASS = "ProxyActor"


class FakeStackError(RuntimeError):
    """What a backend raises for a request it cannot carry out (unknown node, nothing to kill, ...)."""


class FakeApiUnavailable(RuntimeError):
    """The head is down: Ray's State API and Serve's REST API do not answer."""


@dataclass(frozen=True)
class FakeApp:
    name: str
    route_prefix: str
    deployment: str
    num_replicas: int
    max_replicas_per_node: int | None = None
    health_toggle: bool = False  # GET <route>/fail makes one replica's check_health fail


SLEEPY_APP = FakeApp("app", "/", "SleepyPid", 6)
HEALTH_APP = FakeApp("health", "/health", "HealthToggle", 2, health_toggle=True)


@dataclass(frozen=True)
class FakeConfig:
    """The model's shape and its delays (seconds, real time)."""

    workers: int = 2
    apps: tuple[FakeApp, ...] = (SLEEPY_APP, HEALTH_APP)
    restart: str = "always"  # every node's restart policy, always | never; set_restart_policy changes one
    restart_delay_s: float = 0.3  # a killed node boots again this long after (policy always)
    join_delay_s: float = 0.2  # add_worker: the new node is ALIVE this long after
    replica_start_s: float = 0.2  # a new replica is STARTING this long, then RUNNING
    proxy_start_s: float = 0.2  # a new proxy actor is STARTING this long
    actor_restart_s: float = 0.2  # an actor Ray restarts (no_restart=False, controller after a head restart)
    operator: bool = True  # the operator re-deploys when the controller is gone for good
    operator_grace_s: float = 0.3  # ... after it has been missing this long
    health_detect_s: float = 0.3  # a replica failing check_health is seen UNHEALTHY this long after
    stale_listing_s: float = 0.0  # Serve lists a dead node's replicas as they were this long
    # Ray 2.60 (ray-project/ray#63784): proxies that outlive a replaced controller keep routing to the replicas
    # they knew then (harness/routing.py); False: every proxy always routes to the RUNNING replicas
    stale_proxies_after_new_controller: bool = False
    healthy_timeout_s: float = 10.0  # wait_healthy's default deadline

    def __post_init__(self) -> None:
        if self.restart not in ("always", "never"):
            raise ValueError(f"restart policy must be always or never, not {self.restart!r}")
        if len({a.name for a in self.apps}) != len(self.apps):
            raise ValueError("app names must be unique")


# ---------------------------------------------------------------------------------------------
# The model (mutable, guarded by FakeCluster._lock).


@dataclass
class _Process:
    name: str
    host_pid: int
    ns_pid: int


@dataclass
class _Node:
    name: str
    role: str
    restart: str
    ray_node_id: str | None = None  # the current one while up, the last one while down
    up: bool = False
    desired: str = "running"  # running | stopped (stop_node: lost until start_node)
    frozen: bool = False
    boot_at: float | None = None  # it boots at this time (restart policy, join)
    processes: list[_Process] = field(default_factory=list)


@dataclass
class _Actor:
    actor_id: str
    class_name: str
    name: str
    node: str
    state: str  # PENDING_CREATION | ALIVE | RESTARTING | DEAD
    pid: int | None
    ray_node_id: str | None
    ready_at: float | None = None  # PENDING_CREATION / RESTARTING -> ALIVE (None: waits for its node)


@dataclass
class _Replica:
    replica_id: str
    app: FakeApp
    actor_id: str
    node: str
    state: str  # STARTING | RUNNING | UNHEALTHY (as Serve lists it; a dead one keeps its last state)
    running_at: float
    listed_until: float | None = None  # a dead replica leaves Serve's listing at this time
    failing_since: float | None = None  # its check_health fails since then


# ---------------------------------------------------------------------------------------------
# One node's HTTP port.


class _Connection(asyncio.Protocol):
    def __init__(self, server: _NodeServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self.transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:  # GET only: a request is its head
            head, self.buffer = self.buffer[:end], self.buffer[end + 4:]
            parts = head.split(b"\r\n", 1)[0].split()
            path = parts[1].decode(errors="replace") if len(parts) >= 2 else "/"
            assert self.transport is not None
            self.server.serve(self.transport, path)


class _NodeServer:
    """A node's port on 127.0.0.1: listening while the node's proxy runs, refusing connections otherwise.
    Lives on the cluster's event loop; ``listen``/``shut``/``release`` are coroutines run there."""

    def __init__(self, node: str, loop: asyncio.AbstractEventLoop, respond: Callable[[str, str], bytes | None]):
        self.node = node
        self.loop = loop
        self.respond = respond  # (node, path) -> a whole HTTP response, or None to hold it (frozen node)
        self.port = 0
        self.listening = False
        self.connections: set[asyncio.Transport] = set()
        self.held: list[tuple[asyncio.Transport, str]] = []
        self._server: asyncio.AbstractServer | None = None

    def url(self, route: str) -> str:
        return f"http://{HOST}:{self.port}{route}"

    async def listen(self) -> None:
        if self._server is None:
            self._server = await self.loop.create_server(lambda: _Connection(self), HOST, self.port,
                                                         reuse_address=True)
            self.port = self._server.sockets[0].getsockname()[1]
        self.listening = True

    async def shut(self) -> None:
        """Close the port and every connection (RST): a killed node or proxy answers nothing."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for transport in list(self.connections):
            transport.abort()
        self.held.clear()
        self.listening = False

    async def release(self) -> None:
        """Answer the requests held while the node was frozen."""
        held, self.held = self.held, []
        for transport, path in held:
            self.serve(transport, path)

    def serve(self, transport: asyncio.Transport, path: str) -> None:
        if transport.is_closing():
            return
        response = self.respond(self.node, path)
        if response is None:
            self.held.append((transport, path))
        else:
            transport.write(response)


def _http(status: int, body: bytes, content_type: str = "text/plain") -> bytes:
    reason = {200: b"OK", 404: b"Not Found", 503: b"Service Unavailable"}[status]
    return b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\nContent-Type: %s\r\n\r\n%s" % (
        status, reason, len(body), content_type.encode(), body)


def _short_id(length: int = 8) -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(length))


# ---------------------------------------------------------------------------------------------
# The cluster.


class FakeCluster:
    """An in-memory stack with real HTTP ports; see the module's docstring. Use as a context manager
    (``with FakeCluster() as cluster:``) or call ``up()`` and ``down()``."""

    def __init__(self, config: FakeConfig | None = None, run_id: str | None = None) -> None:
        self.config = config or FakeConfig()
        self.run_id = run_id or f"fake-{secrets.token_hex(3)}"
        self._lock = threading.RLock()  # the model; never held while waiting for the loop
        # server changes; taken before _lock, never while holding it. Reentrant: a refresh holds it across the
        # model's advance and the ports' sync, so that no reader sees a proxy ALIVE whose port is still shut
        self._serving_lock = threading.RLock()
        self._nodes: dict[str, _Node] = {}
        self._actors: dict[str, _Actor] = {}  # every actor ever, by id (Ray lists dead ones too)
        self._replicas: dict[str, _Replica] = {}  # Serve's listing
        self._controller_id: str | None = None  # None: killed for good, until a deploy
        self._controller_missing_since: float | None = None
        self._proxy_of: dict[str, str] = {}  # node -> its proxy's actor id
        self._frozen_routing: dict[str, dict[str, frozenset[str]]] = {}  # proxy actor id -> app -> replica ids
        self._frozen_pids: set[int] = set()  # freeze_process
        self._partitions: set[frozenset[str]] = set()  # partition: pairs of node names
        self._degraded: dict[str, str] = {}  # degrade_network: node -> what is in place
        self._upgrading: dict[str, set[str]] = {}  # upgrade_app: app -> replica ids of the old version left
        self._targets = {app.name: app.num_replicas for app in self.config.apps}
        self._operator = self.config.operator
        self._events: list[StackEvent] = []
        self._pids = itertools.count(2000)
        self._round_robin = itertools.count()
        self._servers: dict[str, _NodeServer] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._ticker: threading.Thread | None = None
        self._stopping = threading.Event()
        self._ticker_error: BaseException | None = None

    # --- lifecycle ------------------------------------------------------------------------------------
    def up(self) -> StackStatus:
        """Every node up, the controller, a proxy per node and every replica RUNNING: healthy at once."""
        if self._loop is not None:
            raise FakeStackError(f"fake stack {self.run_id} is already up")
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name=f"{self.run_id}-http", daemon=True)
        self._loop_thread.start()
        try:
            names = [(HEAD, "head"), *((f"worker{i}", "worker") for i in range(1, self.config.workers + 1))]
            for name, role in names:
                self._add_server(name)
                with self._lock:
                    self._nodes[name] = _Node(name, role, self.config.restart)
            with self._lock:
                now = time.monotonic()
                for node in self._nodes.values():
                    self._boot(node, now, "first start")
                self._controller_id = self._new_actor(CONTROLLER_CLASS, CONTROLLER_ACTOR_NAME, HEAD, now, ready=True)
                for name in self._nodes:
                    self._new_proxy(name, now, ready=True)
                for app in self.config.apps:
                    for _ in range(app.num_replicas):
                        replica = self._place_replica(app, now)
                        if replica is None:
                            raise FakeStackError(f"cannot place the replicas of {app.name} on {list(self._nodes)}")
                        replica.state, replica.running_at = "RUNNING", now
            self._sync_servers()
            self._ticker = threading.Thread(target=self._tick_forever, name=f"{self.run_id}-ticker", daemon=True)
            self._ticker.start()
        except BaseException:
            self.down()
            raise
        return self.status()

    def down(self) -> tuple[str, ...]:
        """Stop the ticker, close every port and the loop. Idempotent."""
        self._stopping.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        loop = self._loop
        if loop is not None and self._loop_thread is not None and self._loop_thread.is_alive():
            with self._serving_lock:
                for server in self._servers.values():
                    self._call(server.shut())
            loop.call_soon_threadsafe(loop.stop)
            self._loop_thread.join(timeout=5)
        if loop is not None and not loop.is_running():
            loop.close()
        return (self.run_id,)

    def __enter__(self) -> FakeCluster:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # --- queries --------------------------------------------------------------------------------------
    def status(self) -> StackStatus:
        with self._serving_lock:  # the model as read and the ports agree: a HEALTHY proxy's port listens
            self._refresh()
            return self._status()

    def _status(self) -> StackStatus:
        with self._lock:
            head = self._nodes[HEAD]
            if not head.up:  # Ray's and Serve's APIs live on the head
                nodes = tuple(NodeInfo(n.name, n.role, HOST, n.up) for n in self._nodes.values())
                return StackStatus(self.run_id, nodes, None, (), (), (), False)
            nodes = tuple(NodeInfo(n.name, n.role, HOST, n.up, n.ray_node_id,
                                   None if n.ray_node_id is None else ("ALIVE" if n.up else "DEAD"))
                          for n in self._nodes.values())
            controller = None
            actor = self._actors.get(self._controller_id or "")
            if actor is not None and actor.state == "ALIVE":
                controller = ControllerInfo(actor.pid, actor.node, actor.actor_id)
            proxies = []
            for name, node in self._nodes.items():
                proxy = self._actors.get(self._proxy_of.get(name, ""))
                if node.up and proxy is not None and proxy.state != "DEAD":
                    status = {"ALIVE": "HEALTHY", "PENDING_CREATION": "STARTING"}.get(proxy.state, "UNHEALTHY")
                    proxies.append(ProxyInfo(name, self._servers[name].url(self._default_route()), status,
                                             proxy.actor_id, proxy.pid if proxy.state == "ALIVE" else None))
            replicas = tuple(ReplicaInfo(r.replica_id, r.app.deployment, r.node, self._actors[r.actor_id].pid,
                                         r.state, r.actor_id, r.app.name) for r in self._replicas.values())
            apps = tuple(AppInfo(app.name, "RUNNING" if self._running(app) == self._targets[app.name] else "DEPLOYING",
                                 app.route_prefix) for app in self.config.apps)
            return StackStatus(self.run_id, nodes, controller, tuple(proxies), replicas, apps, True)

    def health_problem(self) -> str | None:
        """Why the stack is not healthy, or None: as the local backend judges it (apps, replicas, controller,
        proxies), and also every node that should run is up (the local backend does not check that)."""
        status = self.status()
        if not status.serve_api_reachable:
            return "the Serve REST API on the head does not answer"
        with self._lock:
            down = [n.name for n in self._nodes.values() if n.desired == "running" and not n.up]
        if down:
            return f"nodes that should run are down: {down}"
        for app in self.config.apps:
            listed = next((a for a in status.apps if a.name == app.name), None)
            running = [r for r in status.replicas
                       if r.deployment == app.deployment and r.state == "RUNNING" and r.pid]
            if listed is None or listed.status != "RUNNING" or len(running) != self._targets[app.name]:
                return (f"application {app.name!r} is {listed.status if listed else 'missing'} with "
                        f"{len(running)}/{self._targets[app.name]} replicas of {app.deployment} RUNNING")
        return status.serve_problem()

    def wait_healthy(self, timeout_s: float | None = None) -> StackStatus:
        """Until every app has its replicas RUNNING, the controller runs and every proxy is HEALTHY and answers."""

        def healthy() -> StackStatus:
            problem = self.health_problem()
            if problem:
                raise FakeStackError(problem)
            status = self.status()
            for proxy in status.proxies:
                response = requests.get(proxy.url or "", timeout=2)
                if response.status_code != 200:
                    raise FakeStackError(f"proxy on {proxy.node} answered HTTP {response.status_code}")
            return status

        return wait_until(f"fake stack {self.run_id} healthy", healthy,
                          timeout_s=timeout_s or self.config.healthy_timeout_s, interval_s=0.05)

    def allowed_networks(self) -> tuple[str, ...]:
        return ()  # loopback only

    def node_alive(self, node: str) -> bool:
        self._refresh()
        with self._lock:
            return self._node(node).up

    def actors(self, class_name: str | None = None, state: str | None = None) -> tuple[RayActor, ...]:
        self._refresh()
        with self._lock:
            self._require_head()
            return tuple(RayActor(a.actor_id, a.class_name, a.name, a.state, a.pid, a.ray_node_id)
                         for a in self._actors.values()
                         if class_name in (None, a.class_name) and state in (None, a.state))

    def worker_names(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(n.name for n in self._nodes.values() if n.role == "worker" and n.desired == "running")

    def app(self) -> AppUnderTest:
        """The app under test: the first app's deployment (PID bodies, a GET), the health-toggle app if any."""
        main = self.config.apps[0]
        toggle = next((a for a in self.config.apps if a.health_toggle), None)
        health = HealthTarget(toggle.name, toggle.route_prefix, toggle.deployment, "/fail", False) if toggle else None
        return AppUnderTest(main.name, main.deployment, (main.route_prefix,), (main.name,), (main.deployment,),
                            RequestConfig(), CheckConfig(kind="pid"), health,
                            "" if health else "the fake has no health-toggle app", main.num_replicas,
                            main.max_replicas_per_node)

    def endpoints(self, route: str | None = None) -> tuple[Endpoint, ...]:
        """One URL per node that should run (a node lost for good has none), at ``route`` (default: "/")."""
        path = route if route is not None else self._default_route()
        with self._lock:
            return tuple(Endpoint(n.name, self._servers[n.name].url(path))
                         for n in self._nodes.values() if n.desired == "running")

    def node_processes(self, node: str) -> tuple[NodeProcess, ...]:
        self._refresh()
        with self._lock:
            spec = self._node(node)
            if not spec.up:
                return ()
            def state(pid: int) -> str:
                return "T" if spec.frozen or pid in self._frozen_pids else "S"

            procs = [NodeProcess(node, p.host_pid, p.ns_pid, p.name, p.name, state(p.host_pid))
                     for p in spec.processes]
            procs += [NodeProcess(node, a.pid, a.pid, f"ray::{a.class_name}", f"ray::{a.class_name} {a.name}",
                                  state(a.pid))
                      for a in self._actors.values() if a.node == node and a.state == "ALIVE" and a.pid]
            return tuple(procs)

    def events(self) -> tuple[StackEvent, ...]:
        self._refresh()
        with self._lock:
            return tuple(self._events)

    def collect_logs(self, dest: Path) -> None:
        """The fake's events and status: what there is to look at."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "events.jsonl").write_text("".join(json.dumps(e.__dict__) + "\n" for e in self.events()))
        (dest / "status.json").write_text(json.dumps(self.status().to_json(), indent=2))

    def run_driver(self, snippet: str, timeout_s: float = 60.0) -> DriverResult:
        return DriverResult(2, "", "FakeCluster runs no Ray driver; use kill_actor, scale or apply_serve_config")

    # --- changes --------------------------------------------------------------------------------------
    def add_worker(self, timeout_s: float = 10.0) -> NodeInfo:
        """A new worker joins ``join_delay_s`` later; returns once it is ALIVE."""
        with self._lock:
            numbers = [int(n.name[len("worker"):]) for n in self._nodes.values() if n.role == "worker"]
            name = f"worker{max(numbers, default=0) + 1}"
        self._add_server(name)
        with self._lock:
            node = _Node(name, "worker", self.config.restart, boot_at=time.monotonic() + self.config.join_delay_s)
            self._nodes[name] = node
            self._event("harness", "node_added", name, f"joins in {self.config.join_delay_s:g}s")
        wait_until(f"new node {name} to be ALIVE", lambda: self.node_alive(name), timeout_s=timeout_s, interval_s=0.02)
        return next(n for n in self.status().nodes if n.name == name)

    def set_operator(self, enabled: bool) -> None:
        with self._lock:
            self._operator = enabled
            self._controller_missing_since = None
            self._event("harness", "operator_armed" if enabled else "operator_disarmed", "operator")

    def set_restart_policy(self, node: str, policy: str) -> None:
        """The restart policy of one node (always | never), e.g. a worker that never comes back."""
        if policy not in ("always", "never"):
            raise ValueError(f"restart policy must be always or never, not {policy!r}")
        with self._lock:
            self._node(node).restart = policy

    def apply_serve_config(self) -> None:
        """Deploy the stack's config: every app at its configured size; a controller if there is none."""
        self._refresh()
        with self._lock:
            self._require_head()
            self._targets = {app.name: app.num_replicas for app in self.config.apps}
            self._ensure_controller(time.monotonic())
            self._event("harness", "serve_config_applied", "stack", "applied by hand")
        self._refresh()

    def scale(self, application: str, deployment: str, num_replicas: int | None) -> None:
        self._refresh()
        with self._lock:
            self._require_head()
            app = next((a for a in self.config.apps if a.name == application and a.deployment == deployment), None)
            if app is None:
                raise FakeStackError(f"no deployment {deployment!r} in application {application!r}")
            self._targets[app.name] = app.num_replicas if num_replicas is None else num_replicas
            self._ensure_controller(time.monotonic())
            self._event("harness", "serve_config_applied", application,
                        f"{deployment} scaled to {num_replicas if num_replicas is not None else 'its config'}")
        self._refresh()

    def upgrade_app(self, application: str, version: str | None) -> None:
        """New code for ``application``: the fake replaces its replicas one at a time, each only once its
        successor runs (Serve's rolling update), by retiring the oldest as a new one starts."""
        self._refresh()
        with self._lock:
            self._require_head()
            app = next((a for a in self.config.apps if a.name == application), None)
            if app is None:
                raise FakeStackError(f"no application {application!r}")
            self._upgrading[app.name] = {r.replica_id for r in self._replicas.values()
                                         if r.app == app and r.listed_until is None}
            self._event("harness", "serve_config_applied", application, f"code version {version}")
        self._refresh()

    # --- fault primitives -----------------------------------------------------------------------------
    def kill_node(self, node: str) -> None:
        """Every process of the node dies at once; its restart policy decides what follows."""
        self._refresh()
        with self._lock:
            spec = self._node(node)
            if not spec.up:
                raise FakeStackError(f"node {node} has no processes to kill")
            self._event("harness", "node_killed", node, f"SIGKILL to {len(spec.processes)} processes")
            self._take_down(spec, time.monotonic(), "killed")
        self._sync_servers()

    def terminate_node(self, node: str) -> None:
        """SIGTERM as a pod deletion sends it: the fake has no drain, so it is a kill (its policy restarts it)."""
        self._refresh()
        with self._lock:
            spec = self._node(node)
            if not spec.up:
                raise FakeStackError(f"node {node} has no init process to terminate")
            self._event("harness", "node_terminated", node, "SIGTERM to its init")
            self._take_down(spec, time.monotonic(), "terminated")
        self._sync_servers()

    def degrade_network(self, node: str, rate_kbit: int, loss: float) -> None:
        """Recorded and read back by ``network_degradation``; the fake's loopback ports serve on as before."""
        with self._lock:
            self._node(node)
            self._degraded[node] = f"tbf {rate_kbit}Kbit, random drop {loss:.1%}"
            self._event("harness", "network_degraded", node, self._degraded[node])

    def restore_network(self, node: str) -> None:
        with self._lock:
            if self._degraded.pop(node, None) is not None:
                self._event("harness", "network_restored", node)

    def network_degradation(self, node: str) -> str | None:
        with self._lock:
            return self._degraded.get(node)

    def stop_node(self, node: str) -> None:
        """The node is stopped and stays down until ``start_node`` (a node lost for good)."""
        self._refresh()
        with self._lock:
            spec = self._node(node)
            spec.desired = "stopped"
            spec.boot_at = None
            if spec.up:
                self._take_down(spec, time.monotonic(), "desired state: stopped")
                self._event("supervisor", "node_stopped", node, "desired state: stopped")
        self._sync_servers()

    def start_node(self, node: str) -> None:
        """Start the node now if it is down (whatever its restart policy): an explicit start."""
        self._refresh()
        with self._lock:
            spec = self._node(node)
            spec.desired = "running"
            if not spec.up:
                self._boot(spec, time.monotonic(), "desired state: running")
        self._sync_servers()

    def freeze_node(self, node: str) -> None:
        """SIGSTOP: the node's port still accepts connections, but nothing is answered until the thaw."""
        with self._lock:
            self._node(node).frozen = True
            self._event("harness", "node_frozen", node)
        self._sync_servers()

    def thaw_node(self, node: str) -> None:
        with self._lock:
            self._node(node).frozen = False
            self._event("harness", "node_thawed", node)
        self._sync_servers()

    def freeze_process(self, node: str, pid: int) -> None:
        """SIGSTOP one process: a frozen proxy holds its node's answers until the thaw."""
        with self._lock:
            if pid not in {p.ns_pid for p in self._node(node).processes} | \
                    {a.pid for a in self._actors.values() if a.node == node and a.state == "ALIVE"}:
                raise FakeStackError(f"node {node} has no process {pid}")
            self._frozen_pids.add(pid)
            self._event("harness", "process_frozen", node, f"SIGSTOP to pid {pid}")
        self._sync_servers()

    def thaw_process(self, node: str, pid: int) -> None:
        with self._lock:
            if pid in self._frozen_pids:
                self._frozen_pids.discard(pid)
                self._event("harness", "process_thawed", node, f"SIGCONT to pid {pid}")
        self._sync_servers()

    def partition(self, node: str, peer: str) -> None:
        with self._lock:
            self._node(node)
            if peer != "redis":  # the fake's Redis is not a node, but it can be cut off from
                self._node(peer)
            self._partitions.add(frozenset((node, peer)))
            self._event("harness", "partitioned", node, f"from {peer}")

    def unpartition(self, node: str, peer: str) -> None:
        with self._lock:
            self._partitions.discard(frozenset((node, peer)))
            self._event("harness", "unpartitioned", node, f"from {peer}")

    def partitioned_from(self, node: str) -> tuple[str, ...]:
        with self._lock:
            return tuple(sorted(n for pair in self._partitions if node in pair for n in pair if n != node))

    def _proxy_frozen(self, node: str) -> bool:
        proxy = self._actors.get(self._proxy_of.get(node, ""))
        return proxy is not None and proxy.pid in self._frozen_pids

    def kill_actor(self, name: str, namespace: str = "serve", no_restart: bool = True) -> DriverResult:
        """``ray.kill`` of the named ALIVE actor, as the guide does it from a driver on the head."""
        self._refresh()
        with self._lock:
            now = time.monotonic()
            actor = next((a for a in self._actors.values() if a.name == name and a.state == "ALIVE"), None)
            if not self._nodes[HEAD].up or actor is None or namespace != "serve":
                why = "the head is down" if not self._nodes[HEAD].up else \
                    f"ValueError: Failed to look up actor with name '{name}' in namespace '{namespace}'"
                self._event("harness", "actor_kill_failed", name, why)
                return DriverResult(1, "", why)
            self._event("harness", "actor_killed", name, f"no_restart={no_restart}; pid {actor.pid}")
            replica = next((r for r in self._replicas.values() if r.actor_id == actor.actor_id), None)
            if replica is not None:  # Serve's replicas are not restarted by Ray: the controller replaces them
                self._kill_replica(replica, now, listed_for_s=0.0)
            elif no_restart:
                actor.state, actor.ready_at = "DEAD", None
                if actor.actor_id == self._controller_id:
                    self._controller_id = None
            else:
                actor.state, actor.pid, actor.ready_at = "RESTARTING", None, now + self.config.actor_restart_s
        self._sync_servers()
        return DriverResult(0, "killed\n", "")

    # --- the model's clock ----------------------------------------------------------------------------
    def _tick_forever(self) -> None:
        while not self._stopping.wait(TICK_S):
            try:
                self._refresh()
            except BaseException as exc:  # noqa: BLE001 - kept and raised by the next query
                self._ticker_error = exc
                return

    def _refresh(self) -> None:
        """Advance the model to now, then make the ports match it."""
        if self._ticker_error is not None:
            raise FakeStackError(f"the fake's ticker failed: {self._ticker_error!r}") from self._ticker_error
        with self._serving_lock:  # advance and sync as one step (see status)
            with self._lock:
                self._advance(time.monotonic())
            self._sync_servers()

    def _advance(self, now: float) -> None:
        for node in self._nodes.values():
            if not node.up and node.desired == "running" and node.boot_at is not None and node.boot_at <= now:
                self._boot(node, now, "restart policy always" if node.ray_node_id else "joined")
        for actor in self._actors.values():
            if actor.state in ("PENDING_CREATION", "RESTARTING") and actor.ready_at is not None \
                    and actor.ready_at <= now and self._nodes[actor.node].up:
                actor.state, actor.pid, actor.ready_at = "ALIVE", next(self._pids), None
                actor.ray_node_id = self._nodes[actor.node].ray_node_id
                self._event("ray", "actor_alive", actor.name, f"pid {actor.pid} on {actor.node}")
        self._operate(now)
        controller = self._actors.get(self._controller_id or "")
        if controller is None or controller.state != "ALIVE":
            return  # without a controller nothing is replaced or reconciled
        for name, node in self._nodes.items():
            proxy = self._actors.get(self._proxy_of.get(name, ""))
            if node.up and (proxy is None or proxy.state == "DEAD"):
                self._new_proxy(name, now)
        for replica in list(self._replicas.values()):
            if replica.failing_since is not None and replica.state == "RUNNING" \
                    and now - replica.failing_since >= self.config.health_detect_s:
                replica.state = "UNHEALTHY"
                self._event("serve", "replica_unhealthy", replica.replica_id, "check_health failed")
                self._kill_replica(replica, now, listed_for_s=UNHEALTHY_LISTED_S)
            if replica.listed_until is not None and replica.listed_until <= now:
                del self._replicas[replica.replica_id]
                self._event("serve", "replica_removed", replica.replica_id, f"was on {replica.node}")
            elif replica.state == "STARTING" and replica.running_at <= now \
                    and self._actors[replica.actor_id].state == "ALIVE":
                replica.state = "RUNNING"
                self._event("serve", "replica_running", replica.replica_id, f"on {replica.node}")
        for app_name, old in list(self._upgrading.items()):  # a rolling update: one old replica at a time
            old &= set(self._replicas)
            if not old:
                del self._upgrading[app_name]
                continue
            if not any(r.app.name == app_name and r.state == "STARTING" for r in self._replicas.values()):
                retired = self._replicas[min(old)]  # the new one started for the last has run: the next goes
                old.discard(retired.replica_id)
                self._kill_replica(retired, now, listed_for_s=0.0)
                del self._replicas[retired.replica_id]
        for app in self.config.apps:
            listed = [r for r in self._replicas.values() if r.app == app and r.state != "UNHEALTHY"]
            for _ in range(self._targets[app.name] - len(listed)):
                if self._place_replica(app, now) is None:
                    break  # no node can take it now (all down, or max_replicas_per_node)
            for extra in listed[self._targets[app.name]:]:  # scaled down: the newest go
                self._kill_replica(extra, now, listed_for_s=0.0)
                del self._replicas[extra.replica_id]

    def _operate(self, now: float) -> None:
        """The operator (RayService's role): deploys the config when the controller has been gone a while."""
        if self._controller_id is not None or not self._operator or not self._nodes[HEAD].up:
            self._controller_missing_since = None
            return
        if self._controller_missing_since is None:
            self._controller_missing_since = now
            self._event("operator", "serve_missing", "controller")
        elif now - self._controller_missing_since >= self.config.operator_grace_s:
            self._ensure_controller(now)
            self._event("operator", "serve_config_applied", "stack",
                        f"controller missing for {self.config.operator_grace_s:g}s")

    # --- model steps (with _lock held) ----------------------------------------------------------------
    def _boot(self, node: _Node, now: float, reason: str) -> None:
        node.up, node.boot_at, node.frozen = True, None, False
        node.ray_node_id = secrets.token_hex(28)
        names = ["init", "raylet"] + (["gcs_server", "dashboard"] if node.role == "head" else [])
        node.processes = [_Process(n, next(self._pids), 1 if n == "init" else 0) for n in names]
        for p in node.processes:
            p.ns_pid = p.ns_pid or p.host_pid
        self._event("supervisor", "node_started", node.name, f"{reason}; node {node.ray_node_id[:8]}")
        for actor in self._actors.values():  # an actor waiting for its node (the controller on the head)
            if actor.node == node.name and actor.state == "RESTARTING" and actor.ready_at is None:
                actor.ready_at = now + self.config.actor_restart_s

    def _take_down(self, node: _Node, now: float, reason: str) -> None:
        node.up, node.frozen, node.processes = False, False, []
        self._event("supervisor", "node_exited", node.name, reason)
        for actor in self._actors.values():
            if actor.node != node.name or actor.state == "DEAD":
                continue
            if actor.actor_id == self._controller_id:  # detached, restarted by Ray once its node is back
                actor.state, actor.pid, actor.ready_at = "RESTARTING", None, None
            else:
                actor.state, actor.ready_at = "DEAD", None
        for replica in self._replicas.values():
            if replica.node == node.name and replica.listed_until is None:
                replica.listed_until = now + self.config.stale_listing_s
        if node.desired == "running" and node.restart == "always":
            node.boot_at = now + self.config.restart_delay_s
            self._event("supervisor", "node_restarting", node.name,
                        f"restart policy always: in {self.config.restart_delay_s:g}s")

    def _kill_replica(self, replica: _Replica, now: float, listed_for_s: float) -> None:
        actor = self._actors[replica.actor_id]
        actor.state, actor.ready_at = "DEAD", None
        if replica.listed_until is None:
            replica.listed_until = now + listed_for_s

    def _new_actor(self, class_name: str, name: str, node: str, now: float, *, ready: bool,
                   delay_s: float = 0.0) -> str:
        actor_id = secrets.token_hex(16)
        spec = self._nodes[node]
        self._actors[actor_id] = _Actor(actor_id, class_name, name, node,
                                        "ALIVE" if ready else "PENDING_CREATION",
                                        next(self._pids) if ready else None,
                                        spec.ray_node_id if ready else None, None if ready else now + delay_s)
        return actor_id

    def _new_proxy(self, node: str, now: float, ready: bool = False) -> None:
        name = f"SERVE_PROXY_ACTOR-{self._nodes[node].ray_node_id}"
        self._proxy_of[node] = self._new_actor(PROXY_CLASS, name, node, now, ready=ready,
                                               delay_s=self.config.proxy_start_s)
        self._event("serve", "proxy_started", node)

    def _ensure_controller(self, now: float) -> None:
        if self._controller_id is None:
            if self.config.stale_proxies_after_new_controller:  # the live proxies' long polls died with the old one
                for proxy_id in self._proxy_of.values():
                    if self._actors[proxy_id].state != "DEAD":
                        self._frozen_routing.setdefault(proxy_id, {
                            app.name: frozenset(self._routed(app)) for app in self.config.apps})
            self._controller_id = self._new_actor(CONTROLLER_CLASS, CONTROLLER_ACTOR_NAME, HEAD, now, ready=False,
                                                  delay_s=self.config.actor_restart_s)
            self._event("serve", "controller_started", HEAD)

    def _place_replica(self, app: FakeApp, now: float) -> _Replica | None:
        counts = {n.name: 0 for n in self._nodes.values() if n.up and not n.frozen}
        for r in self._replicas.values():
            if r.app == app and r.node in counts and r.listed_until is None:
                counts[r.node] += 1
        room = [n for n, c in counts.items() if app.max_replicas_per_node is None or c < app.max_replicas_per_node]
        if not room:
            return None
        node = min(room, key=lambda n: counts[n])  # fewest first; ties by node order
        replica_id = _short_id()
        while replica_id in self._replicas:
            replica_id = _short_id()
        actor_id = self._new_actor(f"ServeReplica:{app.name}:{app.deployment}",
                                   f"SERVE_REPLICA::{app.name}#{app.deployment}#{replica_id}", node, now, ready=True)
        replica = _Replica(replica_id, app, actor_id, node, "STARTING", now + self.config.replica_start_s)
        self._replicas[replica_id] = replica
        self._event("serve", "replica_started", replica_id, f"{app.deployment} on {node}")
        return replica

    def _running(self, app: FakeApp) -> int:
        return sum(1 for r in self._replicas.values() if r.app == app and r.state == "RUNNING")

    def _node(self, name: str) -> _Node:
        try:
            return self._nodes[name]
        except KeyError:
            raise FakeStackError(f"no node named {name!r}; nodes: {', '.join(self._nodes)}") from None

    def _require_head(self) -> None:
        if not self._nodes[HEAD].up:
            raise FakeApiUnavailable("the head is down: Ray's State API and Serve's REST API do not answer")

    def _event(self, source: str, kind: str, target: str, detail: str = "") -> None:
        self._events.append(StackEvent(time.time(), time.monotonic(), source, kind, target, detail))

    def _default_route(self) -> str:
        return self.config.apps[0].route_prefix if self.config.apps else "/"

    # --- HTTP (on the loop thread: takes _lock only, never waits for anything) ------------------------
    def _respond(self, node: str, path: str) -> bytes | None:
        with self._lock:
            if self._nodes[node].frozen or self._proxy_frozen(node):
                return None
            app = self._route(path)
            if app is None:
                return _http(404, b"no application at this route")
            now = time.monotonic()
            known = self._frozen_routing.get(self._proxy_of.get(node, ""), {}).get(app.name)
            serving = [r for r in self._replicas.values() if r.app == app and r.state == "RUNNING"
                       and r.listed_until is None and self._actors[r.actor_id].state == "ALIVE"
                       and self._nodes[r.node].up and not self._nodes[r.node].frozen
                       and (known is None or r.replica_id in known)]
            anonymous = path.rstrip("/").endswith("/fail-anonymously")  # a user's toggle: it names no replica
            if app.health_toggle and (anonymous or path.rstrip("/").endswith("/fail")):
                healthy = [r for r in serving if r.failing_since is None]
                victim = self._pick(node, healthy)
                if victim is None:
                    return _http(503, b"no healthy replica to fail")
                victim.failing_since = now
                self._event("harness", "health_check_failing", victim.replica_id, f"on {victim.node}")
                if anonymous:
                    return _http(200, b"ok")
                body = json.dumps({"replica_id": victim.replica_id, "pid": self._actors[victim.actor_id].pid})
                return _http(200, body.encode(), "application/json")
            replica = self._pick(node, serving)
            if replica is None:
                return _http(503, b"no replica RUNNING")
            return _http(200, str(self._actors[replica.actor_id].pid).encode())

    def _routed(self, app: FakeApp) -> list[str]:
        return [r.replica_id for r in self._replicas.values() if r.app == app and r.state == "RUNNING"
                and r.listed_until is None]

    def proxy_routing(self, routes: Iterable[str]) -> tuple[ProxyRoute, ...]:
        """What each live proxy routes each route to: the RUNNING replicas, or, for a proxy that outlived a
        replaced controller (``stale_proxies_after_new_controller``), the replicas it knew then."""
        self._refresh()
        rows = []
        with self._lock:
            for node, proxy_id in self._proxy_of.items():
                actor = self._actors[proxy_id]
                if actor.state != "ALIVE" or not self._nodes[node].up:
                    continue
                for route in routes:
                    app = self._route(route)
                    if app is None:
                        rows.append(ProxyRoute(proxy_id, actor.name, route, None, error="no application"))
                        continue
                    known = self._frozen_routing.get(proxy_id, {}).get(app.name)
                    replicas = known if known is not None else frozenset(self._routed(app))
                    rows.append(ProxyRoute(proxy_id, actor.name, route, replicas, frozenset({app.deployment})))
        return tuple(rows)

    def _pick(self, node: str, replicas: list[_Replica]) -> _Replica | None:
        local = [r for r in replicas if r.node == node] or replicas
        return local[next(self._round_robin) % len(local)] if local else None

    def _route(self, path: str) -> FakeApp | None:
        def matches(prefix: str) -> bool:
            return prefix == "/" or path == prefix or path.startswith(prefix.rstrip("/") + "/")

        candidates = [a for a in self.config.apps if matches(a.route_prefix)]
        return max(candidates, key=lambda a: len(a.route_prefix), default=None)

    # --- ports ----------------------------------------------------------------------------------------
    def _add_server(self, node: str) -> None:
        """A port for the node: bound once to learn its number, closed until the node's proxy runs."""
        assert self._loop is not None
        server = _NodeServer(node, self._loop, self._respond)
        with self._serving_lock:
            self._call(server.listen())
            self._call(server.shut())
            self._servers[node] = server

    def _sync_servers(self) -> None:
        if self._loop is None or self._stopping.is_set():
            return
        with self._serving_lock:
            with self._lock:
                wanted = {}
                for name, node in self._nodes.items():
                    proxy = self._actors.get(self._proxy_of.get(name, ""))
                    wanted[name] = (node.up and proxy is not None and proxy.state == "ALIVE",
                                    node.frozen or (proxy is not None and proxy.pid in self._frozen_pids))
            for name, (listen, frozen) in wanted.items():
                server = self._servers.get(name)
                if server is None:
                    continue
                if listen and not server.listening:
                    try:
                        self._call(server.listen())
                    except OSError as exc:  # the port was taken meanwhile: the node's proxy cannot bind
                        with self._lock:
                            self._event("fake", "listen_failed", name, str(exc))
                elif not listen and server.listening:
                    self._call(server.shut())
                if not frozen and server.held:
                    self._call(server.release())

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=5)
