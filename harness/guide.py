"""The fault-tolerance guide's failures, each a value: the fault (from the catalogue), whose endpoints must keep
serving, what must and must not have changed (identity checks on the history's before/after snapshots), and
the follow-up checks once the stack recovered. ``run_guide`` runs one through the guide's procedure (arrange,
traffic, inject, confirm, recover, observe, after recovery, verdict; ``harness.scenario.run_procedure``).

    result = run_guide(GUIDE["head_failure"], run, cluster)

The seed scenarios call them on a healthy stack and expect a pass; the controls call the same ones on a stack
whose property is broken and expect a fail. The functions below (``head_failure(run, cluster)`` ...) are the
same values, spelled as the tests call them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from harness.checkers.evidence import (
    controller_replaced,
    placement,
    proxy_replaced,
    replica_count,
    replicas_kept,
    replicas_replaced,
)
from harness.checkers.traffic import longest_outage
from harness.faults import DegradeNetwork, HeldFault, KillReplica, TargetKind, fault_kind
from harness.records import ScenarioResult
from harness.routing import routing_verdict
from harness.scenario import (
    Evidence,
    EvidenceCheck,
    FollowUp,
    Procedure,
    ScenarioRun,
    run_procedure,
)
from harness.stack.app import AppUnderTest
from harness.stack.cluster import Cluster, Endpoint, StackStatus
from harness.stack.config import RequestConfig
from harness.traffic import PidBody, ResponseCheck
from harness.verdict import Status, Verdict, combine
from harness.waiting import WaitTimeout, wait_until


class Serving(StrEnum):
    """Whose endpoints must keep serving while the fault is in effect."""

    ALL = "every proxy"
    OTHERS = "every proxy but the target's"
    WORKERS = "the workers' proxies"


def _running(status: StackStatus, deployment: str) -> int:
    return len(status.running(deployment))


def _each_deployment(name: str, e: Evidence, check: Callable[[str], Verdict],
                     holds: Callable[[str], bool] = lambda d: True) -> Verdict:
    """``check`` on every watched deployment that ``holds`` (e.g. had a replica on the target): one verdict as
    it is, several combined (each part named after its deployment); none at all is UNKNOWN, never a pass."""
    deployments = [d for d in e.watched if holds(d)]
    if not deployments:
        watched = ", ".join(e.watched) or "none"
        return Verdict(name, Status.UNKNOWN, f"nothing to look at: no replica of the watched deployments "
                                             f"({watched}) where this check looks, in the snapshot before the fault")
    if len(deployments) == 1:
        return check(deployments[0])
    parts = [dataclasses.replace(v, name=f"{name}[{d}]") for d in deployments for v in (check(d),)]
    combined = combine(name, parts)
    return dataclasses.replace(combined, reason="; ".join(f"{v.name}: {v.status}: {v.reason}" for v in parts))


def _on(e: Evidence, nodes: Sequence[str]) -> Callable[[str], bool]:
    return lambda d: any(r.deployment == d and r.node in nodes for r in e.before.replicas)


def target_replicas_replaced(e: Evidence) -> Verdict:
    """The replicas that ran on the killed node are gone; new ones (new ids) run instead."""
    return _each_deployment("replicas_replaced", e,
                            lambda d: replicas_replaced(e.before, e.after, e.fault.target, d), _on(e, [e.fault.target]))


def other_replicas_kept(e: Evidence) -> Verdict:
    """Replicas on the nodes the fault did not touch keep their replica id and PID."""
    others = [n.name for n in e.before.nodes if n.name != e.fault.target]
    return _each_deployment("replicas_kept", e, lambda d: replicas_kept(e.before, e.after, others, d), _on(e, others))


def every_replica_kept(e: Evidence) -> Verdict:
    """No replica anywhere was replaced (replica id and PID), e.g. through a hung proxy, which holds none."""
    nodes = [n.name for n in e.before.nodes]
    return _each_deployment("replicas_kept", e, lambda d: replicas_kept(e.before, e.after, nodes, d), _on(e, nodes))


def worker_replicas_kept(e: Evidence) -> Verdict:
    workers = [n.name for n in e.before.nodes if n.role == "worker"]
    return _each_deployment("replicas_kept", e, lambda d: replicas_kept(e.before, e.after, workers, d),
                            _on(e, workers))


def all_replicas_back(e: Evidence) -> Verdict:
    """As many RUNNING replicas of the app as before."""
    return _each_deployment("replicas_running", e,
                            lambda d: replica_count(e.after, d, _running(e.before, d)))


def all_health_replicas_back(e: Evidence) -> Verdict:
    health = e.app.health
    if health is None:
        return Verdict("replicas_running", Status.UNKNOWN, f"no health-check target: {e.app.no_health_reason}")
    return replica_count(e.after, health.deployment, _running(e.before, health.deployment))


def new_controller(e: Evidence) -> Verdict:
    return controller_replaced(e.before, e.after)


def target_proxy_replaced(e: Evidence) -> Verdict:
    return proxy_replaced(e.before, e.after, e.fault.target)


def victim_replaced(e: Evidence) -> Verdict:
    """The killed replica is gone and a new one (new id) runs."""
    name = "replica_replaced"
    victim = getattr(e.fault, "victim", None)
    if victim is None:
        return Verdict(name, Status.UNKNOWN, "no replica was killed")
    new = {r.replica_id for r in e.after.running()} - {r.replica_id for r in e.before.replicas}
    gone = all(r.replica_id != victim.replica_id for r in e.after.replicas)
    if gone and new:
        return Verdict(name, Status.PASS, f"replica {victim.replica_id} (pid {victim.pid}) replaced by {sorted(new)}")
    return Verdict(name, Status.FAIL, f"replica {victim.replica_id} gone={gone}, new replicas {sorted(new)}")


def killed_proxy_outage(e: Evidence) -> Verdict:
    """The killed proxy's own endpoint: its outage, measured, and it serves again by the end."""
    return target_endpoint_outage(e, "killed_proxy_endpoint", "killed_proxy")


def faulted_endpoint_outage(e: Evidence) -> Verdict:
    """The faulted node's own endpoint (a frozen or cut-off node, a frozen proxy): its outage, measured (not
    budgeted), and it serves again by the end."""
    return target_endpoint_outage(e, "faulted_endpoint", "faulted")


def target_endpoint_outage(e: Evidence, name: str, prefix: str) -> Verdict:
    target = e.fault.target
    history = e.history.select([target])
    outage = longest_outage(history, max_outage_s=float("inf"))
    figures = {f"{prefix}.{k}": v for k, v in outage.figures.items()}
    last = history.requests[-5:]
    if not last:
        return Verdict(name, Status.UNKNOWN, f"no traffic to {target}", figures)
    if not all(r.ok for r in last):
        return Verdict(name, Status.FAIL, f"{target}'s endpoint still fails at the end", figures)
    return Verdict(name, Status.PASS, f"{target}'s endpoint served again; its outage: {outage.reason}", figures)


def spread_at_most(max_per_node: int) -> EvidenceCheck:
    def spread(e: Evidence) -> Verdict:
        """Before the fault, at most ``max_per_node`` replicas per node, on at least two nodes."""
        return placement(e.before, e.app.deployment, max_per_node, min_nodes=2)

    return spread


# --- follow-ups, once the stack recovered ----------------------------------------------------------------------

def scaled_deployment(app: AppUnderTest) -> tuple[str, str]:
    """What accepts_changes scales: the health-check target (so the app under test keeps its size), else the
    app's own deployment."""
    return (app.health.application, app.health.deployment) if app.health else (app.application, app.deployment)


def accepts_changes(cluster: Cluster, timeout_s: float = 60) -> Verdict:
    """Prove the controller takes changes: scale a deployment up by one, see it run, scale it back."""
    name = "accepts_changes"
    application, deployment = scaled_deployment(cluster.app())

    def replicas() -> int:
        return _running(cluster.status(), deployment)

    base = replicas()
    try:
        cluster.scale(application, deployment, base + 1)
        wait_until(f"{base + 1} RUNNING replicas of {deployment} after scaling up",
                   lambda: replicas() == base + 1, timeout_s=timeout_s)
    except Exception as exc:  # noqa: BLE001 - a refused change is this check's failure
        failure = Verdict(name, Status.FAIL, f"scaling {deployment} {base} -> {base + 1} failed: {exc}")
    else:
        failure = None
    try:
        cluster.scale(application, deployment, None)  # back to the stack's own config
    except Exception as exc:  # noqa: BLE001
        return failure or Verdict(name, Status.FAIL, f"scaling {deployment} back to {base} failed: {exc}")
    if failure is not None:
        return failure
    try:
        wait_until(f"{base} RUNNING replicas of {deployment} after scaling back",
                   lambda: replicas() == base, timeout_s=timeout_s)
    except WaitTimeout as exc:
        return Verdict(name, Status.FAIL, str(exc))
    return Verdict(name, Status.PASS, f"scaled {deployment} {base} -> {base + 1} -> {base} after recovery")


def changes_accepted(run: ScenarioRun) -> list[Verdict]:
    return [accepts_changes(run.cluster)]


def routed(name: str) -> FollowUp:
    def routing(run: ScenarioRun) -> list[Verdict]:
        """Every proxy routes every route to exactly the replicas the controller runs."""
        return [routing_verdict(run.cluster, name)]

    routing.__name__ = name
    return routing


def health_checking_after_recovery(run: ScenarioRun) -> list[Verdict]:
    """The recovered controller checks health again: a replica killed now (a follow-up fault, injected through
    the run: recorded, healed) is replaced."""
    name = "health_checking_after_recovery"
    deployment = run.app.deployment
    target = next((r.node for r in run.cluster.status().running(deployment) if r.node), None)
    if target is None:
        return [Verdict(name, Status.UNKNOWN, f"no RUNNING replica of {deployment} to kill after recovery")]
    fault = KillReplica(run.cluster, target, deployment)
    try:
        run.inject(fault, follow_up=True)
    except Exception as exc:  # noqa: BLE001
        return [Verdict(name, Status.UNKNOWN, f"could not kill a replica after recovery: {exc}")]
    if not run.confirm(fault) or not run.recover(fault, timeout_s=60):
        return [Verdict(name, Status.FAIL, f"the new controller did not replace the replica killed after recovery "
                        f"({'; '.join(fault.findings)})")]
    return [Verdict(name, Status.PASS, f"the new controller replaced {'; '.join(fault.findings)}")]


# --- the guide's failures --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GuideScenario:
    name: str
    fault: str  # a fault of the catalogue (harness/faults.py)
    serving: Serving
    evidence: tuple[EvidenceCheck, ...] = ()
    follow_ups: tuple[FollowUp, ...] = ()
    health: bool = False  # traffic to the health-check target's route, not the app's
    summary: str = field(default="", compare=False)


GUIDE: dict[str, GuideScenario] = {s.name: s for s in (
    GuideScenario("worker_pod_failure", "KillWorkerPod", Serving.OTHERS,
                  (target_replicas_replaced, other_replicas_kept, all_replicas_back),
                  summary="kill one worker's processes; the other proxies keep serving; the pod restarts; its "
                          "replicas are new, replicas on untouched nodes keep their PIDs; all replicas back"),
    GuideScenario("worker_node_failure", "LoseWorkerNode", Serving.OTHERS,
                  (target_replicas_replaced, other_replicas_kept, all_replicas_back),
                  summary="lose a worker for good; a replacement node joins; replicas respawn; the others serve"),
    GuideScenario("head_failure", "KillHead", Serving.WORKERS, (worker_replicas_kept, new_controller),
                  (changes_accepted, routed("routing_after_recovery")),
                  summary="kill the head; the worker proxies keep serving, worker replicas keep their PIDs, the "
                          "controller returns in a new process, and the cluster accepts changes again"),
    GuideScenario("controller_failure", "KillController", Serving.ALL, (new_controller,),
                  (health_checking_after_recovery, routed("routing_after_recovery")),
                  summary="ray.kill the controller for good; no failed request; a new controller comes back; "
                          "health checking works again (a replica killed afterwards is replaced) and every proxy "
                          "routes to the replacement"),
    GuideScenario("replica_failure", "KillReplica", Serving.ALL, (all_replicas_back, victim_replaced),
                  (routed("replacement_routed"),),
                  summary="ray.kill one replica for good; the others keep serving; a replacement with a new id "
                          "and PID, which every proxy routes to"),
    GuideScenario("proxy_failure", "KillProxy", Serving.OTHERS, (target_proxy_replaced, killed_proxy_outage),
                  summary="ray.kill one proxy; the other proxies serve with zero failures; the killed node's "
                          "outage is measured; the proxy comes back in a new process"),
    GuideScenario("health_check_failure", "FailHealthCheck", Serving.ALL, (all_health_replicas_back,),
                  health=True,
                  summary="make one replica's check_health fail; the controller replaces it within the "
                          "detection budget"),
)}


def serving_nodes(scenario: GuideScenario, cluster: Cluster, target: str,
                  endpoints: Sequence[Endpoint] | None = None) -> tuple[str, ...]:
    nodes = list(dict.fromkeys(e.node for e in (endpoints if endpoints is not None else cluster.endpoints())))
    match scenario.serving:
        case Serving.ALL:
            return tuple(nodes)
        case Serving.OTHERS:
            return tuple(n for n in nodes if n != target)
        case Serving.WORKERS:
            workers = set(cluster.worker_names())
            return tuple(n for n in nodes if n in workers)
    raise ValueError(scenario.serving)


def not_applicable(scenario: GuideScenario, app: AppUnderTest) -> str | None:
    """Why ``scenario`` cannot run against ``app`` (the test skips it with this reason), or None."""
    if scenario.health and app.health is None:
        return f"{scenario.name} does not apply: {app.no_health_reason}"
    return None


def scenario_traffic(scenario: GuideScenario, cluster: Cluster) -> tuple[tuple[Endpoint, ...], ResponseCheck | None,
                                                                          RequestConfig | None]:
    """Where a scenario's traffic goes, and with which body check and request (None: the app's): every route of
    the app on every proxy, or the health-check target's route (the harness's own toggle app answers a GET with
    its PID, whatever the app under test answers)."""
    app = cluster.app()
    if scenario.health:
        assert app.health is not None, "not_applicable() says why"
        endpoints = cluster.endpoints(route=app.health.route)
        return (tuple(endpoints), PidBody(), RequestConfig()) if app.health.beside else (tuple(endpoints), None, None)
    return tuple(e for route in app.routes for e in cluster.endpoints(route=route)), None, None


DEFAULT_TARGETS = {TargetKind.HEAD: "head", TargetKind.CONTROLLER: "controller", TargetKind.REDIS: "redis"}


def run_guide(scenario: GuideScenario, run: ScenarioRun, cluster: Cluster, target: str | None = None, *,
              serving: Sequence[str] | None = None,
              extra_evidence: Sequence[EvidenceCheck] = ()) -> ScenarioResult:
    """One guide scenario through the procedure; ``target`` is the node (the head for KillHead, none for the
    controller); ``serving`` overrides whose endpoints must keep serving (a control may narrow it)."""
    app = cluster.app()
    if reason := not_applicable(scenario, app):
        raise NotApplicable(reason)
    kind = fault_kind(scenario.fault)
    target = target or (app.application if kind.target is TargetKind.APP else DEFAULT_TARGETS.get(kind.target,
                                                                                                    "controller"))
    fault = kind.build(cluster, target, app)
    if isinstance(fault, HeldFault):
        fault.hold_s = run.budget.hold_s
    if isinstance(fault, DegradeNetwork):
        fault.rate_kbit, fault.loss = run.budget.link_rate_kbit, run.budget.link_loss
    endpoints, check, request = scenario_traffic(scenario, cluster)
    procedure = Procedure(
        fault, endpoints,
        tuple(serving) if serving is not None else serving_nodes(scenario, cluster, target, endpoints),
        (*scenario.evidence, *extra_evidence), scenario.follow_ups,
        max_detection_s=run.budget.max_detection_s if scenario.fault == "FailHealthCheck" else None,
        check=check, request=request)
    return run_procedure(run, procedure)


class NotApplicable(Exception):
    """The scenario cannot apply to the app under test; the message says why (a test skips with it)."""


# --- as the tests call them ------------------------------------------------------------------------------------

def worker_pod_failure(run: ScenarioRun, cluster: Cluster, target: str) -> ScenarioResult:
    return run_guide(GUIDE["worker_pod_failure"], run, cluster, target)


def worker_node_failure(run: ScenarioRun, cluster: Cluster, target: str) -> ScenarioResult:
    return run_guide(GUIDE["worker_node_failure"], run, cluster, target)


def head_failure(run: ScenarioRun, cluster: Cluster) -> ScenarioResult:
    return run_guide(GUIDE["head_failure"], run, cluster)


def controller_failure(run: ScenarioRun, cluster: Cluster) -> ScenarioResult:
    return run_guide(GUIDE["controller_failure"], run, cluster)


def replica_failure(run: ScenarioRun, cluster: Cluster, target: str) -> ScenarioResult:
    return run_guide(GUIDE["replica_failure"], run, cluster, target)


def proxy_failure(run: ScenarioRun, cluster: Cluster, target: str, serving: list[str] | None = None) -> ScenarioResult:
    return run_guide(GUIDE["proxy_failure"], run, cluster, target, serving=serving)


def health_check_failure(run: ScenarioRun, cluster: Cluster, target: str) -> ScenarioResult:
    return run_guide(GUIDE["health_check_failure"], run, cluster, target)


REPLICA_SPREAD = GuideScenario("replica_spread", "KillWorkerPod", Serving.OTHERS, (all_replicas_back,),
                               summary="with max_replicas_per_node, no node holds more than the limit; losing a "
                                       "node keeps the app available")


def replica_spread(run: ScenarioRun, cluster: Cluster, target: str, max_per_node: int | None = None
                   ) -> ScenarioResult:
    """``max_per_node`` defaults to the app's deployment's max_replicas_per_node; without one the scenario does
    not apply (there is no spread to check)."""
    limit = max_per_node or cluster.app().max_replicas_per_node
    if not limit:
        raise NotApplicable(f"replica_spread does not apply: deployment {cluster.app().deployment!r} sets no "
                            f"max_replicas_per_node")
    return run_guide(REPLICA_SPREAD, run, cluster, target, extra_evidence=(spread_at_most(limit),))

