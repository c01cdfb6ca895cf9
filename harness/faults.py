"""Faults: the failures of the fault-tolerance guide, and those beyond it, as small objects.

Each fault has ``inject()``, an idempotent ``heal()``, and two probes that are questions:
``taken_effect()`` (did the failure really happen?) and ``recovered()`` (is the stack back, by identity
evidence, not just by answering?). A probe that cannot see (the head's API is down, so a status lists
nothing) answers "not yet", never "yes": an empty observation is not evidence. ``findings`` carries what the
fault learnt (e.g. whether a proxy was restarted by Ray or replaced by the controller). Faults talk to a
backend only through the Cluster protocol. ``CATALOGUE`` is the one list of them, by kind and CLI name.

A kill is over once sent; Ray does the rest. A *held* fault (a freeze, a partition) lasts until the harness
ends it: it carries ``hold_s``, the procedure holds it that long, then ``heal()`` ends it, and only then is
"recovered" asked (``HeldFault``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

import requests

from harness.stack.app import AppUnderTest
from harness.stack.cluster import (
    Cluster,
    ControllerInfo,
    ProxyInfo,
    ReplicaInfo,
    StackStatus,
)
from harness.stack.drivers import PROXY_CLASSES
from harness.stack.health import answers, join_path, probe_url

CONTROLLER_NAME = "SERVE_CONTROLLER_ACTOR"


class FaultError(RuntimeError):
    """A fault could not be injected (e.g. its target does not exist)."""


class Fault(Protocol):
    name: str
    target: str
    findings: list[str]

    def inject(self) -> None: ...
    def heal(self) -> None: ...
    def taken_effect(self) -> bool: ...
    def recovered(self) -> bool: ...


@runtime_checkable
class HeldFault(Fault, Protocol):
    """A fault that lasts until ``heal()`` ends it, held ``hold_s`` by the procedure."""

    hold_s: float


def _ray_node_id(status: StackStatus, node: str) -> str | None:
    return next((n.ray_node_id for n in status.nodes if n.name == node and n.ray_state == "ALIVE"), None)


def _pids(cluster: Cluster, node: str) -> set[int]:
    return {p.host_pid for p in cluster.node_processes(node)}


def _target_pids(cluster: Cluster, status: StackStatus, node: str) -> set[int]:
    """The host PIDs of ``node``'s processes; FaultError when there is no such node or it is already down."""
    if node not in {n.name for n in status.nodes}:
        raise FaultError(f"no node named {node!r}; nodes: {', '.join(n.name for n in status.nodes)}")
    pids = _pids(cluster, node)
    if not pids:
        raise FaultError(f"{node} has no processes to kill: it is already down")
    return pids


def _replica_ids_on(status: StackStatus, node: str) -> set[str]:
    return {r.replica_id for r in status.replicas if r.node == node}


def _node_back(cluster: Cluster, node: str, old_node_id: str | None, old_replicas: set[str]) -> bool:
    """The node runs again as a new Ray node, Serve no longer lists the replicas that died with it (it lists
    a dead node's replicas as RUNNING for a while), and the stack is healthy."""
    status = cluster.status()
    new_id = _ray_node_id(status, node)
    if new_id is None or new_id == old_node_id:
        return False
    if old_replicas & {r.replica_id for r in status.replicas}:
        return False
    return cluster.health_problem() is None


@dataclass
class KillWorkerPod:
    """SIGKILL every process of a worker (``kubectl delete pod``); its restart policy brings it back."""

    cluster: Cluster
    target: str
    name: str = "KillWorkerPod"
    findings: list[str] = field(default_factory=list)
    _old_pids: set[int] = field(default_factory=set)
    _old_node_id: str | None = None
    _old_replicas: set[str] = field(default_factory=set)

    def inject(self) -> None:
        status = self.cluster.status()
        self._old_pids = _target_pids(self.cluster, status, self.target)
        self._old_node_id = _ray_node_id(status, self.target)
        self._old_replicas = _replica_ids_on(status, self.target)
        self._end_pod()

    def _end_pod(self) -> None:
        self.cluster.kill_node(self.target)

    def taken_effect(self) -> bool:
        return not self._old_pids & _pids(self.cluster, self.target)

    def recovered(self) -> bool:
        return _node_back(self.cluster, self.target, self._old_node_id, self._old_replicas)

    def heal(self) -> None:
        self.cluster.start_node(self.target)


@dataclass
class LoseWorkerNode:
    """A worker node is lost for good; a replacement node joins, as KubeRay brings up a new node."""

    cluster: Cluster
    target: str
    name: str = "LoseWorkerNode"
    findings: list[str] = field(default_factory=list)
    replacement: str | None = None
    _old_pids: set[int] = field(default_factory=set)
    _old_replicas: set[str] = field(default_factory=set)
    _joiner: threading.Thread | None = None
    _join_error: list[BaseException] = field(default_factory=list)

    def inject(self) -> None:
        status = self.cluster.status()
        self._old_pids = _target_pids(self.cluster, status, self.target)
        self._old_replicas = _replica_ids_on(status, self.target)
        self.cluster.stop_node(self.target)
        self._joiner = threading.Thread(target=self._replace, name="replacement-node", daemon=True)
        self._joiner.start()

    def _replace(self) -> None:
        try:
            self.replacement = self.cluster.add_worker().name
            self.findings.append(f"replacement node {self.replacement} joined")
        except BaseException as exc:  # noqa: BLE001 - reported through recovered() and heal()
            self._join_error.append(exc)

    def taken_effect(self) -> bool:
        return not self._old_pids & _pids(self.cluster, self.target)

    def recovered(self) -> bool:
        if self._join_error:
            raise FaultError(f"the replacement node did not join: {self._join_error[0]}")
        if self.replacement is None:
            return False
        status = self.cluster.status()
        return not self._old_replicas & {r.replica_id for r in status.replicas} and self.cluster.health_problem() is None

    def heal(self) -> None:
        if self._joiner is not None:
            self._joiner.join(timeout=120)
        # the lost node stays lost; the replacement is the stack's worker from now on


@dataclass
class KillHead:
    """SIGKILL every process of the head (``kubectl delete pod`` of the head); it restarts on the same Redis."""

    cluster: Cluster
    target: str = "head"
    name: str = "KillHead"
    findings: list[str] = field(default_factory=list)
    _old_pids: set[int] = field(default_factory=set)
    _old_node_id: str | None = None
    _old_replicas: set[str] = field(default_factory=set)
    before: ControllerInfo | None = None

    def inject(self) -> None:
        status = self.cluster.status()
        self._old_pids = _target_pids(self.cluster, status, self.target)
        self._old_node_id = _ray_node_id(status, self.target)
        self._old_replicas = _replica_ids_on(status, self.target)
        self.before = status.controller
        self.cluster.kill_node(self.target)

    def taken_effect(self) -> bool:
        return not self._old_pids & _pids(self.cluster, self.target)

    def recovered(self) -> bool:
        controller = self.cluster.status().controller
        if controller is None or controller.pid is None:
            return False
        return _node_back(self.cluster, self.target, self._old_node_id, self._old_replicas)

    def heal(self) -> None:
        self.cluster.start_node(self.target)


@dataclass
class KillController:
    """``ray.kill(SERVE_CONTROLLER_ACTOR, no_restart=True)`` from a driver in the head."""

    cluster: Cluster
    target: str = CONTROLLER_NAME
    name: str = "KillController"
    findings: list[str] = field(default_factory=list)
    before: ControllerInfo | None = None

    def inject(self) -> None:
        self.before = self.cluster.status().controller
        if self.before is None:
            raise FaultError("there is no Serve controller to kill")
        result = self.cluster.kill_actor(CONTROLLER_NAME, no_restart=True)
        if result.returncode != 0:
            raise FaultError(f"ray.kill of the controller failed: {result.stderr.strip()[-500:]}")

    def taken_effect(self) -> bool:
        assert self.before is not None
        old = [a for a in self.cluster.actors(class_name="ServeController") if a.actor_id == self.before.actor_id]
        return bool(old) and old[0].state == "DEAD"

    def recovered(self) -> bool:
        assert self.before is not None
        now = self.cluster.status().controller
        return now is not None and now.actor_id != self.before.actor_id and now.pid is not None and \
            self.cluster.health_problem() is None

    def heal(self) -> None:
        if self.cluster.status().controller is None:
            self.cluster.apply_serve_config()


def _actor_name(cluster: Cluster, actor_id: str | None) -> str:
    name = next((a.name for a in cluster.actors(state="ALIVE") if a.actor_id == actor_id), "")
    if not name:
        raise FaultError(f"no ALIVE named actor with id {actor_id}")
    return name


@dataclass
class KillReplica:
    """``ray.kill(SERVE_REPLICA::..., no_restart=True)`` of one replica (on ``target`` node if given)."""

    cluster: Cluster
    target: str  # the node whose replica is killed
    deployment: str  # the deployment (the app's: app.deployment in the stack config)
    name: str = "KillReplica"
    findings: list[str] = field(default_factory=list)
    victim: ReplicaInfo | None = None

    def inject(self) -> None:
        replicas = list(self.cluster.status().running(self.deployment, self.target))
        if not replicas:
            raise FaultError(f"no RUNNING replica of {self.deployment} on {self.target}")
        self.victim = replicas[0]
        result = self.cluster.kill_actor(_actor_name(self.cluster, self.victim.actor_id), no_restart=True)
        if result.returncode != 0:
            raise FaultError(f"ray.kill of replica {self.victim.replica_id} failed: {result.stderr.strip()[-500:]}")
        self.findings.append(f"killed replica {self.victim.replica_id} (pid {self.victim.pid} on {self.target})")

    def taken_effect(self) -> bool:
        """Serve no longer lists the victim RUNNING; a blind status (the head's API down) is "not yet"."""
        assert self.victim is not None
        status = self.cluster.status()
        return status.serve_api_reachable and not any(
            r.replica_id == self.victim.replica_id and r.state == "RUNNING" for r in status.replicas)

    def recovered(self) -> bool:
        assert self.victim is not None
        status = self.cluster.status()
        gone = all(r.replica_id != self.victim.replica_id for r in status.replicas)
        return status.serve_api_reachable and gone and self.cluster.health_problem() is None

    def heal(self) -> None:
        """Nothing to undo: the controller replaces replicas."""


@dataclass
class KillProxy:
    """``ray.kill(proxy, no_restart=False)`` of the proxy on ``target``."""

    cluster: Cluster
    target: str
    name: str = "KillProxy"
    findings: list[str] = field(default_factory=list)
    before: ProxyInfo | None = None

    def _proxy(self, status: StackStatus) -> ProxyInfo | None:
        return next((p for p in status.proxies if p.node == self.target), None)

    def inject(self) -> None:
        self.before = self._proxy(self.cluster.status())
        if self.before is None:
            raise FaultError(f"no proxy on {self.target}")
        result = self.cluster.kill_actor(_actor_name(self.cluster, self.before.actor_id), no_restart=False)
        if result.returncode != 0:
            raise FaultError(f"ray.kill of the proxy on {self.target} failed: {result.stderr.strip()[-500:]}")

    def taken_effect(self) -> bool:
        """Ray's State API lists the old proxy process as gone (actors() raises while the head is down: not yet)."""
        assert self.before is not None
        old = [a for cls in PROXY_CLASSES for a in self.cluster.actors(class_name=cls)
               if a.actor_id == self.before.actor_id]
        return not old or old[0].state != "ALIVE" or old[0].pid != self.before.pid

    def recovered(self) -> bool:
        assert self.before is not None
        now = self._proxy(self.cluster.status())
        if now is None or now.status != "HEALTHY" or now.pid is None or \
                (now.actor_id, now.pid) == (self.before.actor_id, self.before.pid):
            return False
        if not answers(probe_url(now.url or "", self.cluster.app()), timeout_s=2.0):
            return False
        how = "restarted by Ray (same actor id)" if now.actor_id == self.before.actor_id else \
            "replaced by the controller (new actor id)"
        self.findings[:] = [f"proxy on {self.target} {how}: pid {self.before.pid} -> {now.pid}"]
        return self.cluster.health_problem() is None

    def heal(self) -> None:
        """Nothing to undo: the controller replaces proxies."""


@dataclass
class FailHealthCheck:
    """Make one replica's ``check_health`` raise: ``GET <route><toggle_path>`` on the health target (the app's own
    toggle, or the harness's health-toggle app beside it). The replica that answered is the victim: named by the
    answer when it says (``{"replica_id": ...}``, as the harness's toggle does), else the first replica of the
    deployment that Serve stops listing RUNNING."""

    cluster: Cluster
    target: str  # the proxy URL of the health target's route, e.g. http://10.213.7.11:8000/health
    deployment: str
    replicas: int = 2
    toggle_path: str = "/fail"
    name: str = "FailHealthCheck"
    findings: list[str] = field(default_factory=list)
    victim: str | None = None
    _before: frozenset[str] = frozenset()

    def inject(self) -> None:
        url = join_path(self.target, self.toggle_path)
        self._before = frozenset(r.replica_id for r in self.cluster.status().running(self.deployment))
        try:
            resp = requests.get(url, timeout=5)
        except requests.RequestException as exc:
            raise FaultError(f"{url}: {type(exc).__name__}: {exc}") from None
        if not 200 <= resp.status_code < 300:
            raise FaultError(f"{url} answered HTTP {resp.status_code}: is it the health toggle (app.health)?")
        try:
            body = resp.json()
            self.victim = str(body["replica_id"])
            self.findings.append(f"replica {self.victim} (pid {body.get('pid')}) fails its health checks")
        except (ValueError, TypeError, KeyError):
            self.findings.append(f"{url} toggled one replica of {self.deployment} (it did not say which)")

    def _named_victim(self, status: StackStatus) -> str | None:
        if self.victim is None:
            gone = sorted(self._before - {r.replica_id for r in status.running(self.deployment)})
            if gone:
                self.victim = gone[0]
                self.findings.append(f"replica {self.victim} stopped RUNNING: the toggled one")
        return self.victim

    def taken_effect(self) -> bool:
        """Serve saw it: the replica is no longer RUNNING. A blind status (the head's API down) is "not yet":
        the detection time is only ever met by a real observation."""
        status = self.cluster.status()
        if not status.serve_api_reachable:
            return False
        victim = self._named_victim(status)
        return victim is not None and not any(r.replica_id == victim and r.state == "RUNNING"
                                              for r in status.replicas)

    def recovered(self) -> bool:
        status = self.cluster.status()
        running = status.running(self.deployment)
        return status.serve_api_reachable and self.victim is not None and len(running) == self.replicas and \
            all(r.replica_id != self.victim for r in status.replicas)

    def heal(self) -> None:
        """Nothing to undo: the controller replaces the unhealthy replica."""


# ---------------------------------------------------------------------------------------------
# Beyond the guide: faults held until the harness ends them (a hang, a partition).

def _node_rejoined(cluster: Cluster, node: str, old_node_id: str | None, findings: list[str]) -> bool:
    """After a hang or a partition: the node is ALIVE in Ray again (under its old node id: it rode the fault
    out; under a new one: Ray declared it dead and it came back as a new node) and the stack is healthy."""
    status = cluster.status()
    new_id = _ray_node_id(status, node)
    if new_id is None or not status.serve_api_reachable:
        return False
    if cluster.health_problem() is not None:
        return False
    how = "kept its Ray node id (Ray rode the fault out)" if new_id == old_node_id else \
        f"came back as a new Ray node ({(old_node_id or '?')[:8]} -> {new_id[:8]}: Ray had declared it dead)"
    findings[:] = [f"{node} {how}"]
    return True


@dataclass
class FreezeNode:
    """SIGSTOP every process of a worker (a hung VM) for ``hold_s``, then SIGCONT."""

    cluster: Cluster
    target: str
    hold_s: float = 10.0
    name: str = "FreezeNode"
    findings: list[str] = field(default_factory=list)
    _pids: set[int] = field(default_factory=set)
    _old_node_id: str | None = None
    _frozen: bool = False

    def inject(self) -> None:
        status = self.cluster.status()
        self._pids = _target_pids(self.cluster, status, self.target)
        self._old_node_id = _ray_node_id(status, self.target)
        self._frozen = True  # before the signals: heal() thaws whatever part of it was reached
        self.cluster.freeze_node(self.target)

    def taken_effect(self) -> bool:
        """Every process the node had at the injection is stopped (the kernel says T)."""
        procs = [p for p in self.cluster.node_processes(self.target) if p.host_pid in self._pids]
        return bool(procs) and all(p.stopped for p in procs)

    def recovered(self) -> bool:
        if any(p.stopped for p in self.cluster.node_processes(self.target)):
            return False
        return _node_rejoined(self.cluster, self.target, self._old_node_id, self.findings)

    def heal(self) -> None:
        if self._frozen:
            self.cluster.thaw_node(self.target)
            self._frozen = False


@dataclass
class FreezeProxy:
    """SIGSTOP the proxy actor of ``target`` (a hung proxy: its port accepts, nothing answers) for ``hold_s``."""

    cluster: Cluster
    target: str
    hold_s: float = 10.0
    name: str = "FreezeProxy"
    findings: list[str] = field(default_factory=list)
    before: ProxyInfo | None = None
    _frozen: bool = False

    def inject(self) -> None:
        self.before = next((p for p in self.cluster.status().proxies if p.node == self.target), None)
        if self.before is None or self.before.pid is None:
            raise FaultError(f"no proxy with a PID on {self.target}")
        self._frozen = True
        self.cluster.freeze_process(self.target, self.before.pid)

    def taken_effect(self) -> bool:
        assert self.before is not None
        return any(p.ns_pid == self.before.pid and p.stopped for p in self.cluster.node_processes(self.target))

    def recovered(self) -> bool:
        """The node's proxy is HEALTHY, not stopped, and answers: the same process (it survived the hang) or a
        new one (the controller gave up on it and replaced it)."""
        assert self.before is not None
        now = next((p for p in self.cluster.status().proxies if p.node == self.target), None)
        if now is None or now.status != "HEALTHY" or now.pid is None:
            return False
        if any(p.ns_pid == now.pid and p.stopped for p in self.cluster.node_processes(self.target)):
            return False
        if not answers(probe_url(now.url or "", self.cluster.app()), timeout_s=2.0):
            return False
        how = "survived the hang (same process)" if now.pid == self.before.pid else \
            f"was replaced (pid {self.before.pid} -> {now.pid})"
        self.findings[:] = [f"proxy on {self.target} {how}"]
        return self.cluster.health_problem() is None

    def heal(self) -> None:
        if self._frozen and self.before is not None and self.before.pid is not None:
            self.cluster.thaw_process(self.target, self.before.pid)
            self._frozen = False


@dataclass
class PartitionNode:
    """No packet between ``target`` and ``peer`` (the head, or Redis), either way, for ``hold_s``."""

    cluster: Cluster
    target: str
    peer: str = "head"
    hold_s: float = 10.0
    name: str = "PartitionNode"
    findings: list[str] = field(default_factory=list)
    _old_node_id: str | None = None
    _cut: bool = False

    def inject(self) -> None:
        status = self.cluster.status()
        if self.target not in {n.name for n in status.nodes}:
            raise FaultError(f"no node named {self.target!r}; nodes: {', '.join(n.name for n in status.nodes)}")
        self._old_node_id = _ray_node_id(status, self.target)
        self._cut = True
        self.cluster.partition(self.target, self.peer)

    def taken_effect(self) -> bool:
        """The cut is in place (both directions), as the backend reads it back."""
        return self.peer in self.cluster.partitioned_from(self.target)

    def recovered(self) -> bool:
        if self.peer in self.cluster.partitioned_from(self.target):
            return False
        return _node_rejoined(self.cluster, self.target, self._old_node_id, self.findings)

    def heal(self) -> None:
        if self._cut:
            self.cluster.unpartition(self.target, self.peer)
            self._cut = False


@dataclass
class DegradeNetwork:
    """A slow, lossy link into ``target`` (tbf bandwidth, iptables random drop; no netem here) for ``hold_s``."""

    cluster: Cluster
    target: str
    rate_kbit: int = 1000
    loss: float = 0.05
    hold_s: float = 10.0
    name: str = "DegradeNetwork"
    findings: list[str] = field(default_factory=list)
    _old_node_id: str | None = None
    _degraded: bool = False

    def inject(self) -> None:
        status = self.cluster.status()
        if self.target not in {n.name for n in status.nodes}:
            raise FaultError(f"no node named {self.target!r}; nodes: {', '.join(n.name for n in status.nodes)}")
        self._old_node_id = _ray_node_id(status, self.target)
        self._degraded = True
        self.cluster.degrade_network(self.target, self.rate_kbit, self.loss)

    def taken_effect(self) -> bool:
        return self.cluster.network_degradation(self.target) is not None

    def recovered(self) -> bool:
        if self.cluster.network_degradation(self.target) is not None:
            return False
        return _node_rejoined(self.cluster, self.target, self._old_node_id, self.findings)

    def heal(self) -> None:
        if self._degraded:
            self.cluster.restore_network(self.target)
            self._degraded = False


REDIS = "redis"


@dataclass
class RedisDown:
    """Redis stopped for ``hold_s`` while the head runs (its data kept: appendonly), then started again; with
    ``kill_head``, the head is killed too while Redis is down (its restart cannot reach its GCS storage)."""

    cluster: Cluster
    target: str = REDIS
    kill_head: bool = False
    hold_s: float = 10.0
    name: str = "RedisDown"
    findings: list[str] = field(default_factory=list)
    _old_head_id: str | None = None
    _old_head_pids: set[int] = field(default_factory=set)
    _old_head_replicas: set[str] = field(default_factory=set)
    _down: bool = False

    def inject(self) -> None:
        status = self.cluster.status()
        if not self.cluster.node_processes(REDIS):
            raise FaultError("Redis is not running: there is no outage to cause")
        self._old_head_id = _ray_node_id(status, "head")
        self._old_head_replicas = _replica_ids_on(status, "head")
        self._down = True
        self.cluster.stop_node(REDIS)
        if self.kill_head:
            self._old_head_pids = _target_pids(self.cluster, status, "head")
            self.cluster.kill_node("head")

    def taken_effect(self) -> bool:
        if self.cluster.node_processes(REDIS):
            return False
        return not self.kill_head or not self._old_head_pids & _pids(self.cluster, "head")

    def recovered(self) -> bool:
        if not self.cluster.node_alive(REDIS):
            return False
        if self.kill_head:
            controller = self.cluster.status().controller
            if controller is None or controller.pid is None:
                return False
            if not _node_back(self.cluster, "head", self._old_head_id, self._old_head_replicas):
                return False
            self.findings[:] = ["the head came back as a new Ray node on the restarted Redis"]
            return True
        return _node_rejoined(self.cluster, "head", self._old_head_id, self.findings)

    def heal(self) -> None:
        if self._down:
            self.cluster.start_node(REDIS)
            self._down = False


@dataclass
class DrainNode(KillWorkerPod):
    """SIGTERM a worker as Kubernetes does before deleting its pod (Ray drains it if its environment turns
    graceful drain on); its restart policy brings it back as a new node. Taken effect and recovered as
    KillWorkerPod: every old process gone (the drain, if any, ran), then the node back as a new Ray node."""

    name: str = "DrainNode"

    def _end_pod(self) -> None:
        self.cluster.terminate_node(self.target)

    def heal(self) -> None:
        """The grace period is over: what still runs of the old node is killed, as the kubelet does."""
        left = self._old_pids & _pids(self.cluster, self.target)
        if left:
            self.cluster.kill_node(self.target)
            self.findings.append(f"{len(left)} processes outlived the grace period and were killed")


@dataclass
class UpgradeApp:
    """A new version of the application's code applied under traffic, as a RayService update does: Serve
    replaces every replica of it, rolling. ``heal()`` applies the stack's own version again."""

    cluster: Cluster
    target: str  # the application
    deployment: str  # the deployment whose replicas are watched (the app's)
    version: str = "2"
    name: str = "UpgradeApp"
    findings: list[str] = field(default_factory=list)
    old: frozenset[str] = frozenset()
    _applied: bool = False

    def inject(self) -> None:
        self.old = frozenset(r.replica_id for r in self.cluster.status().running(self.deployment))
        if not self.old:
            raise FaultError(f"no RUNNING replica of {self.deployment} to upgrade")
        self._applied = True
        self.cluster.upgrade_app(self.target, self.version)

    def taken_effect(self) -> bool:
        """A replica of the new version runs (one Serve did not list before)."""
        status = self.cluster.status()
        return status.serve_api_reachable and bool({r.replica_id for r in status.running(self.deployment)} - self.old)

    def recovered(self) -> bool:
        """As many replicas RUNNING as before, every one of the new version, none of the old listed."""
        status = self.cluster.status()
        running = {r.replica_id for r in status.running(self.deployment)}
        if not status.serve_api_reachable or len(running) < len(self.old) or running & self.old:
            return False
        if any(r.replica_id in self.old for r in status.replicas):
            return False
        self.findings[:] = [f"{len(self.old)} replicas of {self.deployment} replaced by version {self.version}"]
        return self.cluster.health_problem() is None

    def heal(self) -> None:
        if self._applied:
            self.cluster.upgrade_app(self.target, None)
            self._applied = False


# ---------------------------------------------------------------------------------------------
# The one catalogue of faults: the CLI (`serve-chaos inject`), the random schedules and the guide's
# scenarios build faults here, by kind (``KillReplica``) or by the CLI's name (``kill-replica``).


class TargetKind(StrEnum):
    WORKER = "worker"  # a worker node
    NODE = "node"  # any node with a proxy
    HEAD = "head"
    CONTROLLER = "controller"  # the Serve controller (no node)
    REDIS = "redis"  # the GCS's Redis
    APP = "app"  # the application under test (its name)


@dataclass(frozen=True)
class FaultKind:
    kind: str  # the fault's class name, e.g. KillWorkerPod (as histories and schedules name it)
    cli: str  # the command line's name, e.g. kill-worker-pod
    description: str
    target: TargetKind
    build: Callable[[Cluster, str, AppUnderTest], Fault]


def _health_fault(cluster: Cluster, target: str, app: AppUnderTest) -> Fault:
    health = app.health
    if health is None:
        raise FaultError(f"the app has no health-check target: {app.no_health_reason}")
    url = next((e.url for e in cluster.endpoints(route=health.route) if e.node == target), None)
    if url is None:
        raise FaultError(f"no endpoint of {health.route} on {target}")
    replicas = len(cluster.status().running(health.deployment))
    return FailHealthCheck(cluster, url, health.deployment, replicas, health.toggle_path)


CATALOGUE: tuple[FaultKind, ...] = (
    FaultKind("KillWorkerPod", "kill-worker-pod", "SIGKILL a worker's processes; its restart policy brings it back",
              TargetKind.WORKER, lambda c, t, a: KillWorkerPod(c, t)),
    FaultKind("LoseWorkerNode", "lose-worker-node", "lose a worker for good; a replacement node joins",
              TargetKind.WORKER, lambda c, t, a: LoseWorkerNode(c, t)),
    FaultKind("KillHead", "kill-head", "SIGKILL the head's processes; it restarts on the same Redis",
              TargetKind.HEAD, lambda c, t, a: KillHead(c, t)),
    FaultKind("KillController", "kill-controller", "ray.kill the Serve controller with no_restart=True",
              TargetKind.CONTROLLER, lambda c, t, a: KillController(c)),
    FaultKind("KillReplica", "kill-replica", "ray.kill one replica on a node with no_restart=True",
              TargetKind.NODE, lambda c, t, a: KillReplica(c, t, a.deployment)),
    FaultKind("KillProxy", "kill-proxy", "ray.kill the proxy of a node with no_restart=False",
              TargetKind.NODE, lambda c, t, a: KillProxy(c, t)),
    FaultKind("FailHealthCheck", "fail-health-check", "make one replica of the health-check app fail its check_health",
              TargetKind.NODE, _health_fault),
    FaultKind("FreezeNode", "freeze-node", "SIGSTOP every process of a worker (a hung node), SIGCONT after the hold",
              TargetKind.WORKER, lambda c, t, a: FreezeNode(c, t)),
    FaultKind("FreezeProxy", "freeze-proxy", "SIGSTOP the proxy of a node (a hung proxy), SIGCONT after the hold",
              TargetKind.NODE, lambda c, t, a: FreezeProxy(c, t)),
    FaultKind("PartitionNode", "partition-node", "cut a worker off from the head, both ways, until the hold ends",
              TargetKind.WORKER, lambda c, t, a: PartitionNode(c, t, "head")),
    FaultKind("PartitionRedis", "partition-redis", "cut the head off from Redis, both ways, until the hold ends",
              TargetKind.HEAD, lambda c, t, a: PartitionNode(c, t, "redis", name="PartitionRedis")),
    FaultKind("DegradeNetwork", "degrade-network", "a slow (tbf), lossy (random drop) link into a node until the "
              "hold ends", TargetKind.NODE, lambda c, t, a: DegradeNetwork(c, t)),
    FaultKind("RedisDown", "redis-down", "stop Redis while the head runs; start it again (with its data) after "
              "the hold", TargetKind.REDIS, lambda c, t, a: RedisDown(c)),
    FaultKind("RedisDownHeadKilled", "redis-down-head-killed", "stop Redis, then kill the head; start Redis "
              "again after the hold", TargetKind.REDIS, lambda c, t, a: RedisDown(c, kill_head=True,
                                                                                 name="RedisDownHeadKilled")),
    FaultKind("UpgradeApp", "upgrade-app", "apply a new version of the app's code (a RayService update); Serve "
              "replaces its replicas, rolling", TargetKind.APP, lambda c, t, a: UpgradeApp(c, t, a.deployment)),
    FaultKind("DrainNode", "drain-node", "SIGTERM a worker as a pod deletion does (Ray drains it if configured)",
              TargetKind.WORKER, lambda c, t, a: DrainNode(c, t)),
)


def fault_kind(name: str) -> FaultKind:
    """A fault of the catalogue by its kind (``KillReplica``) or its command-line name (``kill-replica``)."""
    for kind in CATALOGUE:
        if name in (kind.kind, kind.cli):
            return kind
    raise FaultError(f"no fault {name!r}; faults: {', '.join(k.cli for k in CATALOGUE)}")


def make_fault(name: str, cluster: Cluster, target: str, app: AppUnderTest | None = None) -> Fault:
    """A fault of the catalogue on ``target``, acting on ``app`` (default: the cluster's app under test)."""
    return fault_kind(name).build(cluster, target, app or cluster.app())
