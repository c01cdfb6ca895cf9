"""Identity evidence: who was running before and after a fault, as rows a reviewer reads (PIDs, actor ids, node
ids). A restarted process has a new PID; with a PID namespace per node PIDs restart small, so identities are
(Ray node id, PID) for the controller, (actor id, PID) for proxies and (replica id, PID) for replicas. A pure
measurement of two snapshots; the checks on it are ``harness.checkers.evidence``.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.stack.cluster import StackStatus


@dataclass(frozen=True)
class IdentityRow:
    kind: str  # node | controller | proxy | replica
    what: str  # e.g. "worker1", "replica 3o6aqlf4 on worker1"
    before: str  # "" when it did not exist
    after: str  # "" when it is gone
    changed: bool


def _node_ids(status: StackStatus) -> dict[str, str]:
    return {n.name: n.ray_node_id or "" for n in status.nodes}


def controller_identity(status: StackStatus) -> str:
    c = status.controller
    if c is None:
        return ""
    return f"pid {c.pid} on {c.node} (node {(_node_ids(status).get(c.node or '') or '?')[:8]}, actor {c.actor_id[:8]})"


def identities(before: StackStatus, after: StackStatus) -> tuple[IdentityRow, ...]:
    rows = []
    nb, na = _node_ids(before), _node_ids(after)
    for name in dict.fromkeys([*nb, *na]):
        rows.append(IdentityRow("node", name, nb.get(name, "")[:12], na.get(name, "")[:12], nb.get(name) != na.get(name)))
    cb, ca = controller_identity(before), controller_identity(after)
    rows.append(IdentityRow("controller", "Serve controller", cb, ca, cb != ca))
    pb = {p.node: f"pid {p.pid} (actor {p.actor_id[:8]})" for p in before.proxies}
    pa = {p.node: f"pid {p.pid} (actor {p.actor_id[:8]})" for p in after.proxies}
    for node in dict.fromkeys([*pb, *pa]):
        rows.append(IdentityRow("proxy", f"proxy on {node}", pb.get(node, ""), pa.get(node, ""), pb.get(node) != pa.get(node)))
    rb = {r.replica_id: r for r in before.replicas}
    ra = {r.replica_id: r for r in after.replicas}
    for rid in dict.fromkeys([*rb, *ra]):
        b, a = rb.get(rid), ra.get(rid)
        node = (b or a).node  # type: ignore[union-attr]
        rows.append(IdentityRow("replica", f"{(b or a).deployment} {rid} on {node}",  # type: ignore[union-attr]
                                f"pid {b.pid}" if b else "", f"pid {a.pid}" if a else "",
                                b is None or a is None or (b.pid, b.node) != (a.pid, a.node)))
    return tuple(rows)
