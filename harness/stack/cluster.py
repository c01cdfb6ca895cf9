"""What every backend tells about the stack it runs: typed, frozen records and the Cluster protocol.

These are the borders between backends (local, kind, kube) and everything that reads a stack
(faults, scenarios, reports, the CLI). ``to_json`` gives the documented ``status --json`` shape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from harness.stack.app import AppUnderTest


@dataclass(frozen=True)
class NodeInfo:
    name: str  # the harness's name: "head", "worker1", ...
    role: str  # "head" | "worker"
    address: str  # the node's own IP
    alive: bool  # its processes run (out-of-band fact, true even while the head is down)
    ray_node_id: str | None = None  # Ray's node id when the head could tell
    ray_state: str | None = None  # Ray's view: ALIVE / DEAD, None while the head is unreachable


@dataclass(frozen=True)
class ControllerInfo:
    pid: int | None
    node: str | None
    actor_id: str


@dataclass(frozen=True)
class ProxyInfo:
    node: str | None
    url: str | None
    status: str
    actor_id: str
    pid: int | None


@dataclass(frozen=True)
class ReplicaInfo:
    replica_id: str
    deployment: str
    node: str | None
    pid: int | None
    state: str
    actor_id: str | None
    app: str = ""  # the Serve application (empty when the source did not say)


@dataclass(frozen=True)
class ProxyRoute:
    """What one proxy's router holds for one route: replica ids (None when it could not be read)."""

    proxy_actor_id: str
    proxy_name: str  # the actor's name (to kill it by)
    route: str
    replicas: frozenset[str] | None
    deployments: frozenset[str] = frozenset()
    error: str = ""


@dataclass(frozen=True)
class AppInfo:
    name: str
    status: str
    route_prefix: str | None


@dataclass(frozen=True)
class RayActor:
    """An actor as Ray's State API lists it."""

    actor_id: str
    class_name: str
    name: str
    state: str  # ALIVE | RESTARTING | DEAD | ...
    pid: int | None
    node_id: str | None


@dataclass(frozen=True)
class StackStatus:
    run_id: str
    nodes: tuple[NodeInfo, ...]
    controller: ControllerInfo | None
    proxies: tuple[ProxyInfo, ...]
    replicas: tuple[ReplicaInfo, ...]
    apps: tuple[AppInfo, ...]
    serve_api_reachable: bool  # False while the head (and its REST API) is down

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> StackStatus:
        """The inverse of ``to_json`` (a snapshot kept in a History)."""
        controller = obj.get("controller")
        return cls(
            str(obj["run_id"]), tuple(NodeInfo(**n) for n in obj.get("nodes") or ()),
            ControllerInfo(**controller) if controller else None,
            tuple(ProxyInfo(**x) for x in obj.get("proxies") or ()),
            tuple(ReplicaInfo(**r) for r in obj.get("replicas") or ()),
            tuple(AppInfo(**a) for a in obj.get("apps") or ()), bool(obj.get("serve_api_reachable")),
        )

    def watched(self, app: AppUnderTest) -> tuple[str, ...]:
        """The deployments identity checks look at: the app's named ones, else every deployment of the
        applications its traffic reaches that this status lists (sorted, so checks read in a stable order)."""
        if app.watch:
            return app.watch
        return tuple(sorted({r.deployment for r in self.replicas if r.app in app.applications}))

    def running(self, deployment: str | None = None, node: str | None = None) -> tuple[ReplicaInfo, ...]:
        """The RUNNING replicas (of ``deployment``, on ``node``): the one definition of "running"."""
        return tuple(r for r in self.replicas if r.state == "RUNNING" and deployment in (None, r.deployment)
                     and node in (None, r.node))

    def serve_problem(self) -> str | None:
        """What is wrong with Serve's own parts: no controller, or a proxy that is not HEALTHY."""
        if self.controller is None:
            return "no Serve controller"
        bad = [(p.node, p.status) for p in self.proxies if p.status != "HEALTHY"]
        if bad or not self.proxies:
            return f"proxies not HEALTHY: {bad}" if bad else "no proxy"
        return None


@dataclass(frozen=True)
class Endpoint:
    """A proxy's HTTP address, one per node: where traffic goes."""

    node: str
    url: str


@dataclass(frozen=True)
class NodeProcess:
    """A process of a node, seen from outside Ray (works while the head is down)."""

    node: str
    host_pid: int  # PID in the machine's PID namespace: what the harness signals
    ns_pid: int  # PID inside the node's PID namespace: what Ray reports
    name: str  # comm, e.g. raylet, gcs_server, ray::ServeReplica
    cmdline: str
    state: str = ""  # the kernel's one-letter state: R, S, T (stopped: frozen) ...; "" when not read

    @property
    def stopped(self) -> bool:
        return self.state in ("T", "t")


@dataclass(frozen=True)
class DriverResult:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class StackEvent:
    """What the node supervisor or the operator did, as scenarios read it."""

    t_wall: float
    t_mono: float
    source: str  # "supervisor" | "operator" | "harness"
    kind: str  # e.g. node_started, node_exited, node_restarting, serve_config_applied
    target: str  # node or app name
    detail: str = ""


class Cluster(Protocol):
    """A backend: brings the stack up and down, tells what runs, and carries the fault primitives."""

    run_id: str

    def up(self) -> object: ...
    def down(self) -> object: ...
    def status(self) -> StackStatus: ...
    def wait_healthy(self, timeout_s: float | None = None) -> StackStatus: ...
    def health_problem(self) -> str | None: ...
    def allowed_networks(self) -> tuple[str, ...]: ...
    def node_alive(self, node: str) -> bool: ...
    def actors(self, class_name: str | None = None, state: str | None = None) -> tuple[RayActor, ...]: ...
    def worker_names(self) -> tuple[str, ...]: ...
    def add_worker(self) -> object: ...
    def set_operator(self, enabled: bool) -> None: ...
    def apply_serve_config(self) -> None: ...
    def scale(self, application: str, deployment: str, num_replicas: int | None) -> None: ...
    def upgrade_app(self, application: str, version: str | None) -> None: ...  # new code (None: the config's own)
    def collect_logs(self, dest: Path) -> None: ...
    def app(self) -> AppUnderTest: ...
    def endpoints(self, route: str | None = None) -> tuple[Endpoint, ...]: ...
    def node_processes(self, node: str) -> tuple[NodeProcess, ...]: ...
    def events(self) -> tuple[StackEvent, ...]: ...
    def kill_node(self, node: str) -> None: ...
    def stop_node(self, node: str) -> None: ...
    def start_node(self, node: str) -> None: ...
    def freeze_node(self, node: str) -> None: ...
    def thaw_node(self, node: str) -> None: ...
    def freeze_process(self, node: str, pid: int) -> None: ...  # SIGSTOP; pid as Ray reports it (the node's own)
    def thaw_process(self, node: str, pid: int) -> None: ...
    def partition(self, node: str, peer: str) -> None: ...  # no packet between the two, either way
    def unpartition(self, node: str, peer: str) -> None: ...  # removes exactly what partition() added
    def partitioned_from(self, node: str) -> tuple[str, ...]: ...  # the peers partition() cut ``node`` off from
    def degrade_network(self, node: str, rate_kbit: int, loss: float) -> None: ...  # a slow, lossy link into it
    def restore_network(self, node: str) -> None: ...
    def network_degradation(self, node: str) -> str | None: ...  # what degrade_network put in place, or None
    def terminate_node(self, node: str) -> None: ...  # SIGTERM to its init, as a pod deletion does
    def run_driver(self, snippet: str, timeout_s: float = 60.0) -> DriverResult: ...
    def kill_actor(self, name: str, namespace: str = "serve", no_restart: bool = True) -> DriverResult: ...
    def proxy_routing(self, routes: Iterable[str]) -> tuple[ProxyRoute, ...]: ...
