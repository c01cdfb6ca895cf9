"""Identity evidence: who was running before and after a fault, and checks on it.

A restarted process has a new PID; with a PID namespace per node PIDs restart small, so identities are
(Ray node id, PID) for the controller, (actor id, PID) for proxies and (replica id, PID) for replicas.
Every check here is a pure function of two StackStatus snapshots returning a Verdict.
"""

from __future__ import annotations

from collections.abc import Iterable

from harness.identity import controller_identity
from harness.stack.cluster import StackStatus
from harness.verdict import Status, Verdict


def _blind(name: str, *snapshots: StackStatus) -> Verdict | None:
    """UNKNOWN when a snapshot was taken while the head's API did not answer: it lists nothing."""
    if any(not s.serve_api_reachable for s in snapshots):
        return Verdict(name, Status.UNKNOWN, "a snapshot was taken while the Serve API did not answer")
    return None


def replicas_kept(before: StackStatus, after: StackStatus, nodes: Iterable[str], deployment: str) -> Verdict:
    """Every replica that ran on ``nodes`` before still runs there after, same replica id and PID."""
    if blind := _blind("replicas_kept", before, after):
        return blind
    nodes = set(nodes)
    kept = {(r.replica_id, r.pid) for r in after.running()}
    watched = [r for r in before.running(deployment) if r.node in nodes]
    lost = [f"{r.replica_id}@{r.node} pid {r.pid}" for r in watched if (r.replica_id, r.pid) not in kept]
    name = "replicas_kept"
    figures = {"replicas_watched": float(len(watched)), "replicas_changed": float(len(lost))}
    if not watched:
        return Verdict(name, Status.UNKNOWN, f"no replica of {deployment} ran on {sorted(nodes)} before the fault", figures)
    if lost:
        return Verdict(name, Status.FAIL, f"expected the {len(watched)} replicas on {sorted(nodes)} to keep their PIDs; "
                       f"changed or gone: {', '.join(lost)}", figures)
    return Verdict(name, Status.PASS, f"all {len(watched)} replicas on {sorted(nodes)} kept their replica id and PID",
                   figures)


def replicas_replaced(before: StackStatus, after: StackStatus, node: str, deployment: str) -> Verdict:
    """The replicas that ran on ``node`` are gone; the app has new replicas (new ids) instead."""
    name = "replicas_replaced"
    if blind := _blind(name, before, after):
        return blind
    old = {r.replica_id for r in before.replicas if r.node == node and r.deployment == deployment}
    still = sorted(old & {r.replica_id for r in after.running()})
    new = {r.replica_id for r in after.replicas if r.deployment == deployment} - {r.replica_id for r in before.replicas}
    figures = {"replicas_on_target_before": float(len(old)), "new_replicas": float(len(new))}
    if not old:
        return Verdict(name, Status.UNKNOWN, f"no replica of {deployment} ran on {node} before the fault", figures)
    if still:
        return Verdict(name, Status.FAIL, f"replicas {still} of {node} still run after the fault", figures)
    if len(new) < len(old):
        return Verdict(name, Status.FAIL, f"{len(old)} replicas of {node} were lost but only {len(new)} new ones run",
                       figures)
    return Verdict(name, Status.PASS, f"the {len(old)} replicas of {node} were replaced by {len(new)} new ones", figures)


def controller_replaced(before: StackStatus, after: StackStatus) -> Verdict:
    """A controller runs after the fault, in a new process (new PID or new node id)."""
    name = "controller_replaced"
    if blind := _blind(name, before, after):
        return blind
    b, a = controller_identity(before), controller_identity(after)
    if not b:
        return Verdict(name, Status.UNKNOWN, "no controller before the fault")
    if not a:
        return Verdict(name, Status.FAIL, f"no controller after the fault (before: {b})")
    if a == b:
        return Verdict(name, Status.FAIL, f"expected a new controller process; it is the same: {a}")
    return Verdict(name, Status.PASS, f"controller {b} -> {a}")


def proxy_replaced(before: StackStatus, after: StackStatus, node: str) -> Verdict:
    name = "proxy_replaced"
    if blind := _blind(name, before, after):
        return blind
    b = next((p for p in before.proxies if p.node == node), None)
    a = next((p for p in after.proxies if p.node == node), None)
    if b is None:
        return Verdict(name, Status.UNKNOWN, f"no proxy on {node} before the fault")
    if a is None or a.status != "HEALTHY":
        return Verdict(name, Status.FAIL, f"no HEALTHY proxy on {node} after the fault")
    if (a.actor_id, a.pid) == (b.actor_id, b.pid):
        return Verdict(name, Status.FAIL, f"the proxy on {node} is the same process (pid {a.pid})")
    how = "restarted by Ray (same actor)" if a.actor_id == b.actor_id else "replaced by the controller (new actor)"
    return Verdict(name, Status.PASS, f"proxy on {node} {how}: pid {b.pid} -> {a.pid}")


def replica_count(after: StackStatus, deployment: str, expected: int) -> Verdict:
    name = "replicas_running"
    if blind := _blind(name, after):
        return blind
    running = len(after.running(deployment))
    figures = {"replicas_running": float(running)}
    status = Status.PASS if running == expected else Status.FAIL
    return Verdict(name, status, f"expected {expected} RUNNING replicas of {deployment}, saw {running}", figures)


def placement(status: StackStatus, deployment: str, max_per_node: int, min_nodes: int) -> Verdict:
    """Replicas are spread: at most ``max_per_node`` per node, on at least ``min_nodes`` nodes."""
    name = "placement"
    if blind := _blind(name, status):
        return blind
    per_node: dict[str, int] = {}
    for r in status.replicas:
        if r.deployment == deployment and r.state == "RUNNING":
            per_node[r.node or "?"] = per_node.get(r.node or "?", 0) + 1
    figures = {"nodes_with_replicas": float(len(per_node)), "max_replicas_on_a_node": float(max(per_node.values(), default=0))}
    spread = ", ".join(f"{n}: {c}" for n, c in sorted(per_node.items()))
    if max(per_node.values(), default=0) > max_per_node or len(per_node) < min_nodes:
        return Verdict(name, Status.FAIL, f"expected at most {max_per_node} replicas per node on at least {min_nodes} "
                       f"nodes; placement is {spread or 'empty'}", figures)
    return Verdict(name, Status.PASS, f"placement {spread} (at most {max_per_node} per node)", figures)
