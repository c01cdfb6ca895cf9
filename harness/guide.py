"""The fault-tolerance guide's failures as scenario procedures, one function each.

Each takes a ScenarioRun, the cluster and a target, runs the guide's procedure (arrange, traffic, inject,
confirm, recover, observe, verdict) and returns the ScenarioResult. The seed scenarios call them on a
healthy stack and expect a pass; the controls call the same functions on a stack whose property is broken
and expect a fail.
"""

from __future__ import annotations

from harness.checkers.evidence import (
    controller_replaced,
    placement,
    proxy_replaced,
    replica_count,
    replicas_kept,
    replicas_replaced,
)
from harness.checkers.traffic import longest_outage
from harness.faults import (
    FailHealthCheck,
    KillController,
    KillHead,
    KillProxy,
    KillReplica,
    KillWorkerPod,
    LoseWorkerNode,
)
from harness.records import ScenarioResult
from harness.routing import routing_verdict
from harness.scenario import ScenarioRun, guide_procedure
from harness.stack.cluster import Cluster
from harness.verdict import Status, Verdict
from harness.waiting import WaitTimeout, wait_until

APP_DEPLOYMENT = "SleepyPid"
HEALTH_ROUTE = "/health"
HEALTH_APP = "health"
HEALTH_DEPLOYMENT = "HealthToggle"


def _others(cluster: Cluster, target: str) -> list[str]:
    return [e.node for e in cluster.endpoints() if e.node != target]


def _expected_replicas(cluster: Cluster) -> int:
    return sum(1 for r in cluster.status().replicas if r.deployment == APP_DEPLOYMENT and r.state == "RUNNING")


def worker_pod_failure(run: ScenarioRun, cluster: Cluster, target: str) -> ScenarioResult:
    """Kill one worker's processes; the other proxies keep serving; the pod restarts; moved replicas are new,
    replicas on untouched nodes keep their PIDs; all replicas healthy again."""
    return _node_loss(run, cluster, KillWorkerPod(cluster, target))


def worker_node_failure(run: ScenarioRun, cluster: Cluster, target: str) -> ScenarioResult:
    """Lose a worker node for good; a replacement node joins; replicas respawn; the survivors keep serving."""
    return _node_loss(run, cluster, LoseWorkerNode(cluster, target))


def _node_loss(run: ScenarioRun, cluster: Cluster, fault: KillWorkerPod | LoseWorkerNode) -> ScenarioResult:
    others = _others(cluster, fault.target)
    expected = _expected_replicas(cluster)
    return guide_procedure(
        run, fault, cluster.endpoints(), serving=others,
        extra_checks=lambda before, after: [
            replicas_replaced(before, after, fault.target, APP_DEPLOYMENT),
            replicas_kept(before, after, others, APP_DEPLOYMENT),
            replica_count(after, APP_DEPLOYMENT, expected),
        ])


def head_failure(run: ScenarioRun, cluster: Cluster) -> ScenarioResult:
    """Kill the head; the worker proxies keep serving, worker replicas keep their PIDs, the head returns,
    the controller returns in a new process, and the cluster accepts changes again."""
    workers = [e.node for e in cluster.endpoints() if e.node != "head"]
    return guide_procedure(
        run, KillHead(cluster), cluster.endpoints(), serving=workers,
        extra_checks=lambda before, after: [
            replicas_kept(before, after, workers, APP_DEPLOYMENT),
            controller_replaced(before, after),
        ],
        after_recovery=lambda: [accepts_changes(cluster), routing_verdict(cluster, "routing_after_recovery")])


def accepts_changes(cluster: Cluster, timeout_s: float = 60) -> Verdict:
    """Prove the controller takes changes: scale the health-check app up by one, see it run, scale it back."""
    name = "accepts_changes"
    base = _health_replicas(cluster)
    try:
        cluster.scale(HEALTH_APP, HEALTH_DEPLOYMENT, base + 1)
        wait_until(f"{base + 1} RUNNING replicas of {HEALTH_DEPLOYMENT} after scaling up",
                   lambda: _health_replicas(cluster) == base + 1, timeout_s=timeout_s)
    except Exception as exc:  # noqa: BLE001 - a refused change is this check's failure
        failure = Verdict(name, Status.FAIL, f"scaling {HEALTH_DEPLOYMENT} {base} -> {base + 1} failed: {exc}")
    else:
        failure = None
    try:
        cluster.scale(HEALTH_APP, HEALTH_DEPLOYMENT, None)  # back to the stack's own config
    except Exception as exc:  # noqa: BLE001
        return failure or Verdict(name, Status.FAIL, f"scaling {HEALTH_DEPLOYMENT} back to {base} failed: {exc}")
    if failure is not None:
        return failure
    try:
        wait_until(f"{base} RUNNING replicas of {HEALTH_DEPLOYMENT} after scaling back",
                   lambda: _health_replicas(cluster) == base, timeout_s=timeout_s)
    except WaitTimeout as exc:
        return Verdict(name, Status.FAIL, str(exc))
    return Verdict(name, Status.PASS, f"scaled {HEALTH_DEPLOYMENT} {base} -> {base + 1} -> {base} after recovery")


def _health_replicas(cluster: Cluster) -> int:
    return sum(1 for r in cluster.status().replicas if r.deployment == HEALTH_DEPLOYMENT and r.state == "RUNNING")


def controller_failure(run: ScenarioRun, cluster: Cluster) -> ScenarioResult:
    """ray.kill the controller for good; zero failed requests; a new controller (new PID) comes back; health
    checking works again afterwards (a replica killed after recovery is replaced), and every proxy routes to
    the replacement (on Ray 2.60 the proxies that outlive the old controller never hear of it:
    harness/routing.py)."""
    return guide_procedure(
        run, KillController(cluster), cluster.endpoints(), serving=[e.node for e in cluster.endpoints()],
        extra_checks=lambda before, after: [controller_replaced(before, after)],
        after_recovery=lambda: [replica_replaced_after_recovery(run, cluster),
                                routing_verdict(cluster, "routing_after_recovery")])


def replica_replaced_after_recovery(run: ScenarioRun, cluster: Cluster) -> Verdict:
    name = "health_checking_after_recovery"
    target = next((r.node for r in cluster.status().replicas
                   if r.deployment == APP_DEPLOYMENT and r.state == "RUNNING" and r.node), None)
    if target is None:
        return Verdict(name, Status.UNKNOWN, f"no RUNNING replica of {APP_DEPLOYMENT} to kill after recovery")
    fault = KillReplica(cluster, target)
    try:
        fault.inject()
        wait_until("the replica killed after recovery to be replaced", fault.recovered, timeout_s=60)
    except Exception as exc:  # noqa: BLE001
        return Verdict(name, Status.FAIL, f"the new controller did not replace a killed replica: {exc}")
    return Verdict(name, Status.PASS, f"the new controller replaced {'; '.join(fault.findings)}")


def replica_failure(run: ScenarioRun, cluster: Cluster, target: str) -> ScenarioResult:
    """ray.kill one replica for good; the others keep serving; a replacement with a new id and PID, which every
    proxy routes to."""
    expected = _expected_replicas(cluster)
    fault = KillReplica(cluster, target)
    return guide_procedure(
        run, fault, cluster.endpoints(), serving=[e.node for e in cluster.endpoints()],
        extra_checks=lambda before, after: [
            replica_count(after, APP_DEPLOYMENT, expected),
            _victim_replaced(before, after, fault),
        ],
        after_recovery=lambda: [routing_verdict(cluster, "replacement_routed")])


def _victim_replaced(before, after, fault: KillReplica) -> Verdict:
    name = "replica_replaced"
    if fault.victim is None:
        return Verdict(name, Status.UNKNOWN, "no replica was killed")
    new = {r.replica_id for r in after.replicas if r.state == "RUNNING"} - {r.replica_id for r in before.replicas}
    gone = all(r.replica_id != fault.victim.replica_id for r in after.replicas)
    if gone and new:
        return Verdict(name, Status.PASS, f"replica {fault.victim.replica_id} (pid {fault.victim.pid}) replaced by {sorted(new)}")
    return Verdict(name, Status.FAIL, f"replica {fault.victim.replica_id} gone={gone}, new replicas {sorted(new)}")


def proxy_failure(run: ScenarioRun, cluster: Cluster, target: str, serving: list[str] | None = None) -> ScenarioResult:
    """ray.kill one proxy (no_restart=False); the other proxies serve with zero failures; the killed node's
    outage is measured; the proxy comes back in a new process."""
    serving = serving if serving is not None else _others(cluster, target)
    return guide_procedure(
        run, KillProxy(cluster, target), cluster.endpoints(), serving=serving,
        extra_checks=lambda before, after: [
            proxy_replaced(before, after, target),
            killed_proxy_outage(run, target),
        ])


def killed_proxy_outage(run: ScenarioRun, target: str) -> Verdict:
    """The killed proxy's own endpoint: its outage, measured, and it serves again by the end."""
    history = run.history().select([target])
    outage = longest_outage(history, max_outage_s=float("inf"))
    figures = {f"killed_proxy.{k}": v for k, v in outage.figures.items()}
    last = history.requests[-5:]
    if not last:
        return Verdict("killed_proxy_endpoint", Status.UNKNOWN, f"no traffic to {target}", figures)
    if not all(r.ok for r in last):
        return Verdict("killed_proxy_endpoint", Status.FAIL, f"{target}'s endpoint still fails at the end", figures)
    return Verdict("killed_proxy_endpoint", Status.PASS,
                   f"{target}'s endpoint served again; its outage: {outage.reason}", figures)


def health_check_failure(run: ScenarioRun, cluster: Cluster, target: str) -> ScenarioResult:
    """Make one replica's check_health fail; the controller replaces it; the time to detect is measured
    against the configured period and timeout."""
    endpoints = cluster.endpoints(route=HEALTH_ROUTE)
    url = next(e.url for e in endpoints if e.node == target)
    replicas = _health_replicas(cluster)
    return guide_procedure(
        run, FailHealthCheck(cluster, url, HEALTH_DEPLOYMENT, replicas), endpoints,
        serving=[e.node for e in endpoints], max_detection_s=run.budget.max_detection_s,
        extra_checks=lambda before, after: [replica_count(after, HEALTH_DEPLOYMENT, replicas)])


def replica_spread(run: ScenarioRun, cluster: Cluster, target: str, max_per_node: int) -> ScenarioResult:
    """With max_replicas_per_node, no node holds more than the limit; losing a node keeps the app available."""
    others = _others(cluster, target)
    expected = _expected_replicas(cluster)
    spread = placement(cluster.status(), APP_DEPLOYMENT, max_per_node, min_nodes=2)
    return guide_procedure(
        run, KillWorkerPod(cluster, target), cluster.endpoints(), serving=others,
        extra_checks=lambda before, after: [spread, replica_count(after, APP_DEPLOYMENT, expected)])
