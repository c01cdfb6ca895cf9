"""Drawn targets -> what runs now: a schedule is drawn from the configured topology; at run time each fault's
target is resolved against the live stack, deterministically, and the resolution is recorded with the step."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from harness.faults import Fault, make_fault
from harness.schedules.spec import NODE_KILLS, FaultSpec, ScheduleConfig, injection_key
from harness.stack.cluster import Cluster


def _next_in_order(order: Sequence[str], start: str, ok: Callable[[str], bool]) -> str | None:
    """``start`` if ``ok``, else the next node after it in ``order`` (cyclically) that is."""
    if start in order:
        i = order.index(start)
        ring = [*order[i:], *order[:i]]
    else:
        ring = list(order)
    return next((n for n in ring if ok(n)), None)


def resolve(drawn: Sequence[FaultSpec], cluster: Cluster, config: ScheduleConfig) -> list[tuple[FaultSpec, str]]:
    """Each drawn fault with the target it acts on now, and why, when that differs: a drawn node that is gone
    (e.g. a worker lost for good and replaced) is the node at its place in order; a node with no endpoint, or
    no RUNNING replica to kill, is the next node in the topology's order that has one. Deterministic for a
    given stack state; the resolution is recorded with the step."""
    topology = config.topology
    workers = cluster.worker_names()
    order = (topology.head, *workers)
    killed = {s.target for s in drawn if s.fault in NODE_KILLS}
    out: list[tuple[FaultSpec, str]] = []
    for spec in drawn:
        target = spec.target
        if spec.fault in ("KillWorkerPod", "KillProxy", "FailHealthCheck", "KillReplica") and target not in order:
            position = topology.workers.index(target) if target in topology.workers else 0
            target = workers[min(position, len(workers) - 1)] if workers else topology.head
        if spec.fault == "KillProxy":
            nodes = {e.node for e in cluster.endpoints()}
            target = _next_in_order(order, target, lambda n: n in nodes) or target
        elif spec.fault == "FailHealthCheck":
            health = cluster.app().health
            nodes = {e.node for e in cluster.endpoints(route=health.route)} if health else set()
            target = _next_in_order(order, target, lambda n: n in nodes) or target
        elif spec.fault == "KillReplica":
            holding = {r.node for r in cluster.status().running(cluster.app().deployment) if r.node}
            spared = holding - killed or holding
            target = _next_in_order(order, target, lambda n: n in spared) or target
        resolved = FaultSpec(spec.fault, target)
        note = "" if resolved == spec else f"{spec} resolved to {resolved}: {spec.target} " + (
            "is not a node now" if spec.target not in order else "has no such target now")
        out.append((resolved, note))
    return sorted(out, key=lambda pair: injection_key(pair[0]))


def fault_of(spec: FaultSpec, cluster: Cluster, config: ScheduleConfig) -> Fault:
    """The fault object of a resolved spec, from the one catalogue (harness/faults.py)."""
    return make_fault(spec.fault, cluster, spec.target, cluster.app())


