"""Failures the guide does not cover but users hit: a hung node or proxy, a node cut off from the head, the head
cut off from Redis, a slow and lossy link, Redis down (with and without a head failure in the middle), a node
drained by SIGTERM as Kubernetes deletes a pod. Each is a value like the guide's (``harness.guide.GuideScenario``): the fault (a *held* one,
from the catalogue: it lasts the budget's ``hold_s``, then the harness ends it), whose endpoints must keep
serving, and what must and must not have changed. They run through the same procedure, with a ``hold`` phase
between "taken effect" and "recovered".

What Ray 2.60 does in each (measured, with figures) is in docs/findings.md; the budgets beside them in
cluster/budgets.toml.
"""

from __future__ import annotations

import dataclasses

from harness.guide import (
    GuideScenario,
    Serving,
    all_replicas_back,
    changes_accepted,
    every_replica_kept,
    faulted_endpoint_outage,
    new_controller,
    other_replicas_kept,
    run_guide,
    target_replicas_replaced,
    worker_replicas_kept,
)
from harness.history import EventKind
from harness.records import ScenarioResult
from harness.scenario import Evidence, ScenarioRun
from harness.stack.cluster import Cluster
from harness.verdict import Status, Verdict


def versions_answered(e: Evidence) -> Verdict:
    """Through a rolling upgrade, every request after the injection was answered by the old version (a replica
    the snapshot before lists) or the new one (a replica the snapshot after lists), and none by anything else;
    the switch-over window is from the first answer of the new version to the last of the old. Responses that
    do not name their replica (an app without the PID body) cannot say which: UNKNOWN."""
    name = "versions_answered"
    deployment = e.app.deployment
    old = {r.pid for r in e.before.replicas if r.deployment == deployment and r.pid is not None}
    new = {r.pid for r in e.after.running(deployment) if r.pid is not None} - old
    injected = min((ev.t_mono for ev in e.history.events if ev.kind is EventKind.INJECT), default=None)
    if injected is None or not old or not new:
        return Verdict(name, Status.UNKNOWN, f"nothing to compare: {len(old)} old and {len(new)} new replica PIDs, "
                                             f"injection {'seen' if injected is not None else 'not seen'}")
    answered = [r for r in e.history.requests if r.ok and r.t_mono >= injected]
    named = [r for r in answered if r.pid is not None]
    if not named:
        return Verdict(name, Status.UNKNOWN, f"{len(answered)} answers after the upgrade, none naming its replica "
                                             f"(the app's response check gives no PID)")
    by_old = [r for r in named if r.pid in old]
    by_new = [r for r in named if r.pid in new]
    strangers = sorted({r.pid for r in named if r.pid not in old | new})
    first_new = min((r.t_mono for r in by_new), default=None)
    last_old = max((r.t_mono for r in by_old), default=None)
    figures: dict[str, float] = {"answers_old_version": len(by_old), "answers_new_version": len(by_new),
                                 "answers_unknown_replica": len(named) - len(by_old) - len(by_new)}
    if first_new is not None:
        figures["first_new_version_answer_s"] = first_new - injected
    if last_old is not None:
        figures["last_old_version_answer_s"] = last_old - injected
    if first_new is not None and last_old is not None:
        figures["switch_over_s"] = max(0.0, last_old - first_new)
    if strangers:
        return Verdict(name, Status.FAIL, f"{len(named) - len(by_old) - len(by_new)} answers from PIDs of neither "
                                          f"version: {strangers[:5]}", figures)
    if not by_new:
        return Verdict(name, Status.FAIL, f"no answer from the new version in {len(named)} answers", figures)
    window = f"{figures['switch_over_s']:.2f}s" if "switch_over_s" in figures else "none (a clean cut)"
    return Verdict(name, Status.PASS, f"{len(by_old)} answers by the old version, {len(by_new)} by the new; both "
                                      f"versions answered for {window}", figures)


def every_replica_upgraded(e: Evidence) -> Verdict:
    """No replica of the old version is left: every replica the snapshot before lists is gone, as many run."""
    deployment = e.app.deployment
    old = {r.replica_id for r in e.before.running(deployment)}
    now = {r.replica_id for r in e.after.running(deployment)}
    left = sorted(old & {r.replica_id for r in e.after.replicas})
    if left or len(now) < len(old):
        return Verdict("replicas_upgraded", Status.FAIL, f"{len(left)} old replicas still listed {left[:3]}, "
                                                         f"{len(now)} of {len(old)} running")
    return Verdict("replicas_upgraded", Status.PASS, f"all {len(old)} replicas of {deployment} replaced; "
                                                     f"{len(now)} run")

def node_kept(e: Evidence) -> Verdict:
    """The faulted node is the same Ray node at the end (the snapshot after the observation window) as before:
    Ray rode the hang, cut or slow link out. A node Ray declared dead, even one that came back as a new node by
    then, fails with ``node_declared_dead`` = 1 (the figure a known issue pins)."""
    name = "node_kept"
    target = e.fault.target
    old = next((n.ray_node_id for n in e.before.nodes if n.name == target), None)
    new = next((n for n in e.after.nodes if n.name == target), None)
    if old is None or new is None or new.ray_node_id is None:
        return Verdict(name, Status.UNKNOWN, f"{target}'s Ray node id not seen: before {old or 'unknown'}, after "
                                             f"{(new.ray_node_id if new else None) or 'unknown'}")
    if new.ray_node_id == old and new.ray_state == "ALIVE":
        return Verdict(name, Status.PASS, f"{target} is the same Ray node ({old[:8]}), ALIVE, at the end",
                       {"node_declared_dead": 0.0})
    return Verdict(name, Status.FAIL, f"{target} was declared dead by Ray: node {old[:8]} before, "
                                      f"{new.ray_node_id[:8]} ({new.ray_state}) at the end", {"node_declared_dead": 1.0})


# what a node that was hung, cut off or throttled must show afterwards
NODE_BACK = (faulted_endpoint_outage, other_replicas_kept, all_replicas_back, node_kept)

BEYOND: dict[str, GuideScenario] = {s.name: s for s in (
    GuideScenario("node_freeze", "FreezeNode", Serving.OTHERS,
                  NODE_BACK,
                  summary="SIGSTOP every process of a worker (a hung node) for the hold, then SIGCONT; the other "
                          "proxies keep serving; the node is back, its endpoint serves again; replicas elsewhere "
                          "keep their PIDs; all replicas back"),
    GuideScenario("proxy_freeze", "FreezeProxy", Serving.OTHERS, (faulted_endpoint_outage, every_replica_kept),
                  summary="SIGSTOP one worker's proxy for the hold, then SIGCONT; the other proxies keep serving; "
                          "the hung proxy's endpoint serves again; no replica changes"),
    GuideScenario("node_partition", "PartitionNode", Serving.OTHERS,
                  NODE_BACK,
                  summary="cut a worker off from the head (both ways) for the hold; the other proxies keep "
                          "serving; after the cut heals the node is back and all replicas run"),
    GuideScenario("redis_partition", "PartitionRedis", Serving.WORKERS, (worker_replicas_kept,),
                  (changes_accepted,),
                  summary="cut the head off from Redis (both ways) for the hold; the worker proxies keep serving; "
                          "the head is back and the cluster accepts changes again"),
    GuideScenario("slow_network", "DegradeNetwork", Serving.OTHERS,
                  NODE_BACK,
                  summary="a slow (tbf), lossy (random drop) link into a worker for the hold; the other proxies keep "
                          "serving; after it is restored the node's endpoint serves and all replicas run"),
    GuideScenario("redis_outage", "RedisDown", Serving.WORKERS, (worker_replicas_kept, new_controller),
                  (changes_accepted,),
                  summary="Redis down for the hold while the head runs: Ray 2.60's GCS exits within seconds, so "
                          "it is a head failure (docs/findings.md); the worker proxies keep serving, worker "
                          "replicas keep their PIDs, the head and a new controller come back once Redis does"),
    GuideScenario("head_failure_during_redis_outage", "RedisDownHeadKilled", Serving.WORKERS,
                  (worker_replicas_kept, new_controller), (changes_accepted,),
                  summary="Redis down, then the head killed; Redis back after the hold; the worker proxies keep "
                          "serving, the head comes back on Redis's data with a new controller"),
    GuideScenario("rolling_upgrade", "UpgradeApp", Serving.ALL, (versions_answered, every_replica_upgraded),
                  summary="apply a new version of the app's code under traffic (a RayService update); every request "
                          "is answered by the old or the new version and none fails; the switch-over window is "
                          "reported"),
    GuideScenario("graceful_drain", "DrainNode", Serving.OTHERS,
                  (target_replicas_replaced, other_replicas_kept, all_replicas_back),
                  summary="SIGTERM a worker as a pod deletion does; the other proxies keep serving; it comes back "
                          "as a new node; its replicas are replaced, the others keep their PIDs"),
)}


# The same hangs and cuts held past Ray's own detection (its GCS marks a node dead after missed heartbeats; Serve's
# controller health-checks proxies): `make nightly-beyond` runs them, each with its own budget table.
LONG_HOLD = ("node_freeze", "proxy_freeze", "node_partition", "redis_partition")
BEYOND.update({f"{n}_long_hold": dataclasses.replace(BEYOND[n], name=f"{n}_long_hold") for n in LONG_HOLD})


def run_beyond(name: str, run: ScenarioRun, cluster: Cluster, target: str | None = None) -> ScenarioResult:
    return run_guide(BEYOND[name], run, cluster, target)
