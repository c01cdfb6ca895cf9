"""The scenario machinery without a cluster: the real guide procedures against FakeCluster, with real
Traffic on its loopback ports and tiny budgets; and the scenario's own checks on hand-built histories.

No test sleeps: the only pauses are the scenarios' own observation windows (baseline and observe, 0.5 s).
"""

from __future__ import annotations

import dataclasses
import json
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from history_builders import event, steady

from harness import beyond, guide
from harness.checkers.faults import fault_took_effect, traffic_coverage
from harness.checkers.traffic import checker
from harness.faults import Fault
from harness.history import EventKind, History, HistoryWriter, TrafficPhase
from harness.known_issues import DEATH_AFTER_HEAL
from harness.records import Budget, BudgetError, ScenarioResult, load_budget
from harness.scenario import Evidence, Procedure, ScenarioRun, run_procedure
from harness.stack.cluster import NodeInfo, StackStatus
from harness.testing.fake import (
    CONTROLLER_ACTOR_NAME,
    HEALTH_APP,
    SLEEPY_APP,
    FakeCluster,
    FakeConfig,
)
from harness.verdict import Status, Verdict, explain
from harness.waiting import wait_until

BUDGETS = """
[defaults]
rate_per_endpoint = 20.0
timeout_s = 1.0
baseline_s = 0.5
observe_s = 0.5
confirm_s = 2.0
min_availability = 1.0     # the fake's surviving proxies never fail a request
max_outage_s = 0.0
max_recovery_s = 3.0
max_detection_s = 2.0

[worker_pod_failure]
[worker_node_failure]
[head_failure]
[controller_failure]
[replica_failure]
[proxy_failure]
[health_check_failure]
[replica_spread]
[node_freeze]
hold_s = 0.5
[proxy_freeze]
hold_s = 0.5
[node_partition]
hold_s = 0.5
[redis_partition]
hold_s = 0.5
[slow_network]
hold_s = 0.5
[slow_network_severe]
hold_s = 0.5
link_rate_kbit = 100
link_loss = 0.5
[rolling_upgrade]
max_recovery_s = 10.0

[never_recovers]
max_recovery_s = 1.0

[never_takes_effect]
confirm_s = 0.5
"""

FULL_PHASES = ["arrange", "traffic", "inject", "confirm", "recover", "observe", "after recovery", "verdict"]
VERDICT_KEYS = {"scenario", "status", "reason", "verdict", "budget", "identities", "findings", "phases"}


@pytest.fixture(scope="session")
def budgets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("budgets") / "budgets.toml"
    path.write_text(BUDGETS)
    return path


@pytest.fixture
def make_cluster() -> Iterator[Callable[..., FakeCluster]]:
    clusters: list[FakeCluster] = []

    def make(config: FakeConfig | None = None) -> FakeCluster:
        cluster = FakeCluster(config)
        clusters.append(cluster)
        cluster.up()
        cluster.wait_healthy()
        return cluster

    yield make
    for cluster in clusters:
        cluster.down()


@pytest.fixture
def cluster(make_cluster: Callable[..., FakeCluster]) -> FakeCluster:
    return make_cluster()


@pytest.fixture
def make_run(tmp_path: Path, budgets: Path) -> Iterator[Callable[..., ScenarioRun]]:
    """Factory of ScenarioRuns in tmp_path; every run is closed at teardown (heals, stops traffic)."""
    runs: list[ScenarioRun] = []

    def make(cluster: FakeCluster, name: str, budget: str | None = None, cls: type[ScenarioRun] = ScenarioRun,
             progress: Callable[[str], None] = lambda msg: None) -> ScenarioRun:
        run = cls(name, cluster, tmp_path / name, load_budget(budget or name, budgets),
                  allowed_networks=cluster.allowed_networks(), progress=progress)
        runs.append(run)
        return run

    yield make
    for run in reversed(runs):
        run.close()


def parts(result: ScenarioResult) -> dict[str, Verdict]:
    return {v.name: v for v in result.verdict.parts}


def failing(result: ScenarioResult) -> set[str]:
    return {v.name for v in result.verdict.parts if v.status is not Status.PASS}


def phase_names(run: ScenarioRun) -> list[str]:
    return [p.name for p in run.phases]


@dataclass
class StubFault:
    """A fault whose behaviour a test chooses: it takes effect (or never does) and recovers at once."""

    target: str = "worker1"
    name: str = "StubFault"
    takes_effect: bool = True
    inject_error: Exception | None = None
    heal_error: Exception | None = None
    findings: list[str] = field(default_factory=list)
    injected: bool = False
    heals: int = 0

    def inject(self) -> None:
        if self.inject_error is not None:
            raise self.inject_error
        self.injected = True

    def heal(self) -> None:
        self.heals += 1
        if self.heal_error is not None:
            raise self.heal_error

    def taken_effect(self) -> bool:
        return self.injected and self.takes_effect

    def recovered(self) -> bool:
        return self.injected


class BoundedRecoveryRun(ScenarioRun):
    """ScenarioRun.recover waits 1.25 x max_recovery_s + 5 s before it gives up; a test of a stack that never
    recovers waits only the budgeted 1.25 x max_recovery_s. Nothing else differs."""

    def recover(self, fault: Fault, timeout_s: float | None = None) -> bool:
        return super().recover(fault, timeout_s or 1.25 * self.budget.max_recovery_s)


# -- the guide's scenarios on a healthy fake pass -------------------------------------------------------

SPREAD = FakeConfig(apps=(dataclasses.replace(SLEEPY_APP, max_replicas_per_node=2), HEALTH_APP))
SCENARIOS: dict[str, tuple[Callable[[ScenarioRun, FakeCluster], ScenarioResult], FakeConfig | None]] = {
    "worker_pod_failure": (lambda run, c: guide.worker_pod_failure(run, c, "worker2"), None),
    "worker_node_failure": (lambda run, c: guide.worker_node_failure(run, c, "worker2"), None),
    "head_failure": (lambda run, c: guide.head_failure(run, c), None),
    "controller_failure": (lambda run, c: guide.controller_failure(run, c), None),
    "proxy_failure": (lambda run, c: guide.proxy_failure(run, c, "worker1"), None),
    "health_check_failure": (lambda run, c: guide.health_check_failure(run, c, "worker1"), None),
    "replica_spread": (lambda run, c: guide.replica_spread(run, c, "worker2", 2), SPREAD),
}
EXTRA_PARTS = {
    "worker_pod_failure": {"replicas_replaced", "replicas_kept", "replicas_running"},
    "worker_node_failure": {"replicas_replaced", "replicas_kept", "replicas_running"},
    "head_failure": {"replicas_kept", "controller_replaced", "accepts_changes", "routing_after_recovery"},
    "controller_failure": {"controller_replaced", "health_checking_after_recovery", "routing_after_recovery"},
    "proxy_failure": {"proxy_replaced", "killed_proxy_endpoint"},
    "health_check_failure": {"replicas_running"},
    "replica_spread": {"placement", "replicas_running"},
}
STANDARD_PARTS = {"fault_took_effect", "availability", "longest_outage", "time_to_recover", "traffic_coverage"}


@pytest.mark.parametrize("name", SCENARIOS)
def test_a_healthy_fake_passes_the_guide_scenario(make_cluster, make_run, name: str):
    procedure, config = SCENARIOS[name]
    cluster = make_cluster(config)
    run = make_run(cluster, name)
    result = procedure(run, cluster)
    assert result.verdict.status is Status.PASS, explain(result.verdict)
    assert set(parts(result)) == STANDARD_PARTS | EXTRA_PARTS[name]
    availability = parts(result)["availability"]
    # counted from the injection on, on the serving endpoints (traffic_coverage, a passing part, proves the span)
    assert availability.figures["requests"] > 0 and availability.figures["failures"] == 0
    assert phase_names(run) == FULL_PHASES


BEYOND_PARTS = {
    "node_freeze": {"faulted_endpoint", "replicas_kept", "replicas_running", "node_kept"},
    "proxy_freeze": {"faulted_endpoint", "replicas_kept"},
    "node_partition": {"faulted_endpoint", "replicas_kept", "replicas_running", "node_kept"},
    "redis_partition": {"replicas_kept", "accepts_changes"},
}
HELD_PHASES = [*FULL_PHASES[:4], "hold", *FULL_PHASES[4:]]


@pytest.mark.parametrize("name", BEYOND_PARTS)
def test_a_healthy_fake_passes_the_beyond_scenario_with_its_hold(make_cluster, make_run, name: str):
    """The fake serves through a freeze from its other nodes (a partition changes nothing there): the scenario's
    machinery (the hold, the heal before "recovered", the recovery figure from the heal) is what is tested."""
    cluster = make_cluster()
    run = make_run(cluster, name)
    target = None if name == "redis_partition" else "worker2"
    result = beyond.run_beyond(name, run, cluster, target)
    assert result.verdict.status is Status.PASS, explain(result.verdict)
    assert set(parts(result)) == STANDARD_PARTS | BEYOND_PARTS[name]
    assert phase_names(run) == HELD_PHASES
    hold = next(p for p in run.phases if p.name == "hold")
    assert hold.seconds >= 0.5
    recovery = parts(result)["time_to_recover"].figures
    fault = f"{run.faults[0].name}@{run.faults[0].target}"
    assert 0 <= recovery[f"time_to_recover_after_heal_s.{fault}"] < recovery[f"time_to_recover_s.{fault}"]
    kinds = [e.kind for e in run.history().events if e.name == run.faults[0].name]
    assert kinds[:4] == [EventKind.INJECT, EventKind.TAKEN_EFFECT, EventKind.HEALED, EventKind.RECOVERED]


def test_a_rolling_upgrade_on_the_fake_is_answered_by_both_versions_and_replaces_every_replica(make_cluster,
                                                                                                make_run):
    cluster = make_cluster()
    run = make_run(cluster, "rolling_upgrade")
    result = beyond.run_beyond("rolling_upgrade", run, cluster)
    assert result.verdict.status is Status.PASS, explain(result.verdict)
    assert set(parts(result)) == STANDARD_PARTS | {"versions_answered", "replicas_upgraded"}
    assert phase_names(run) == FULL_PHASES
    versions = parts(result)["versions_answered"].figures
    assert versions["answers_old_version"] > 0 and versions["answers_new_version"] > 0
    assert versions["answers_unknown_replica"] == 0 and versions["switch_over_s"] > 0


def test_controller_failure_fails_on_routing_when_proxies_outlive_the_controller(make_cluster, make_run):
    """Ray 2.60's defect, modelled by the fake: the proxies that outlive a replaced controller keep their old
    replica sets. Every other check passes; routing_after_recovery names the stale proxies."""
    cluster = make_cluster(FakeConfig(stale_proxies_after_new_controller=True))
    result = guide.controller_failure(make_run(cluster, "controller_failure"), cluster)
    failed = {v.name: v for v in result.verdict.parts if v.status is not Status.PASS}
    assert set(failed) == {"routing_after_recovery"}, explain(result.verdict)
    reason = failed["routing_after_recovery"].reason
    assert "no longer runs" in reason and "ray-project/ray#63784" in reason
    assert all(f"proxy on {node} " in reason for node in ("head", "worker1", "worker2")), reason


def replace_controller(cluster: FakeCluster) -> None:
    """The controller killed for good; the fake's operator starts a new one (a new actor)."""
    cluster.kill_actor(CONTROLLER_ACTOR_NAME)
    wait_until("a new controller", lambda: cluster.status().controller is not None and
               not cluster.health_problem(), timeout_s=10)


def test_replica_failure_fails_on_routing_when_a_proxy_is_stale(make_cluster, make_run):
    """After a controller replacement on the defective fake, a replica killed and replaced is not routed to."""
    cluster = make_cluster(FakeConfig(stale_proxies_after_new_controller=True))
    replace_controller(cluster)
    result = guide.replica_failure(make_run(cluster, "replica_failure"), cluster, "worker1")
    assert {v.name for v in result.verdict.parts if v.status is not Status.PASS} == {"replacement_routed"}


def test_restore_replaces_stale_proxies(make_cluster):
    """The shared stack's restore finds the stale proxies and replaces them: afterwards routing converges."""
    from harness.checkers.routing import stale_routes
    from harness.repair import restore

    cluster = make_cluster(FakeConfig(stale_proxies_after_new_controller=True))
    before = {p.node: p.actor_id for p in cluster.status().proxies}
    replace_controller(cluster)
    victim = next(r for r in cluster.status().replicas if r.deployment == "HealthToggle")
    cluster.kill_actor(next(a.name for a in cluster.actors() if a.actor_id == victim.actor_id))
    wait_until("the stale routing", lambda: stale_routes(cluster.status(), cluster.proxy_routing(("/health",))),
               timeout_s=10)
    restore(cluster)
    status = cluster.status()
    assert not stale_routes(status, cluster.proxy_routing(("/", "/health")))
    assert all(before[p.node] != p.actor_id for p in status.proxies)  # every proxy knew the dead replica


def test_replica_failure_passes_and_writes_the_documented_verdict(cluster: FakeCluster, make_run, budgets: Path):
    run = make_run(cluster, "replica_failure")
    result = guide.replica_failure(run, cluster, "worker1")
    assert result.verdict.status is Status.PASS, explain(result.verdict)
    saved = json.loads((run.out_dir / "verdict.json").read_text())
    assert VERDICT_KEYS <= set(saved)
    assert (saved["scenario"], saved["status"], saved["reason"]) == ("replica_failure", "pass", result.verdict.reason)
    assert saved["verdict"]["name"] == "replica_failure"
    assert {p["name"] for p in saved["verdict"]["parts"]} == \
        STANDARD_PARTS | {"replicas_running", "replica_replaced", "replacement_routed"}
    assert saved["budget"] == dataclasses.asdict(load_budget("replica_failure", budgets))
    victim = result.findings[0].split()[2]
    rows = {row["what"]: row for row in saved["identities"] if row["kind"] == "replica"}
    killed = next(row for what, row in rows.items() if f" {victim} " in what)
    assert killed["before"] and killed["after"] == "" and killed["changed"]
    assert saved["findings"] == list(result.findings) and result.findings[0].startswith("killed replica")
    assert not (run.out_dir / "logs").exists(), "diagnostics are collected only when the verdict is not a pass"


def test_phases_are_recorded_in_the_guides_order(cluster: FakeCluster, make_run):
    run = make_run(cluster, "replica_failure")
    result = guide.replica_failure(run, cluster, "worker1")
    assert phase_names(run) == FULL_PHASES
    assert all(p.outcome == "ok" for p in run.phases)
    starts = [p.start_mono for p in run.phases]
    assert starts == sorted(starts)
    # verdict.json is written inside the verdict phase, so it holds every phase before it
    assert [p.name for p in result.phases] == FULL_PHASES[:-1]
    saved = json.loads((run.out_dir / "verdict.json").read_text())
    assert [p["name"] for p in saved["phases"]] == FULL_PHASES[:-1]
    phases = [(e.name, e.target) for e in run.history().phases()]  # typed events, not notes
    assert phases == [(name, "replica_failure") for name in FULL_PHASES]
    # and the snapshots every identity check reads are in the history
    history = run.history()
    assert history.snapshot("before") is not None and history.snapshot("after") is not None
    assert [s.label for s in history.snapshots] == ["before", "after"]


def test_the_history_notes_how_each_kill_went_out_and_only_the_kills_the_injection_caused(cluster: FakeCluster,
                                                                                          make_run):
    cluster.kill_actor("SERVE_PROXY_ACTOR-stale", no_restart=True)  # before the scenario: not its kill
    run = make_run(cluster, "replica_failure")
    guide.replica_failure(run, cluster, "worker1")
    notes = [e for e in run.history().events if e.kind is EventKind.NOTE and e.detail.startswith("actor_")]
    assert len(notes) == 1, [e.detail for e in notes]  # the scenario's one kill (not the one before it)
    (note,) = notes
    assert note.name == "KillReplica" and note.target == "worker1"
    assert note.detail.startswith("actor_killed SERVE_REPLICA::") and "after the harness asked)" in note.detail
    inject = next(e for e in run.history().events if e.kind is EventKind.INJECT)
    assert inject.t_mono <= note.t_mono


# -- what must fail fails ------------------------------------------------------------------------------


def test_a_node_that_never_comes_back_fails_time_to_recover(cluster: FakeCluster, make_run):
    cluster.set_restart_policy("worker2", "never")
    run = make_run(cluster, "worker_pod_failure", budget="never_recovers", cls=BoundedRecoveryRun)
    result = guide.worker_pod_failure(run, cluster, "worker2")
    assert result.verdict.status is Status.FAIL
    assert "time_to_recover" in failing(result)
    assert "no recovery recorded for KillWorkerPod@worker2" in parts(result)["time_to_recover"].reason
    # the surviving proxies kept serving: availability is judged on them only, and held
    assert parts(result)["availability"].status is Status.PASS
    assert "after recovery" not in phase_names(run) and "recover" in phase_names(run)
    assert not cluster.node_alive("worker2")
    assert (run.out_dir / "logs" / "events.jsonl").exists(), "a failed verdict collects diagnostics"
    assert json.loads((run.out_dir / "verdict.json").read_text())["status"] == "fail"


def test_an_outage_on_a_serving_endpoint_fails_availability_and_longest_outage(make_cluster, make_run):
    cluster = make_cluster(FakeConfig(actor_restart_s=0.5))
    run = make_run(cluster, "proxy_failure")
    result = guide.proxy_failure(run, cluster, "worker1", serving=["head", "worker1", "worker2"])
    assert result.verdict.status is Status.FAIL
    assert {"availability", "longest_outage"} <= failing(result)
    figures = parts(result)["availability"].figures
    assert figures["availability.worker1"] < 1.0
    assert figures["availability.head"] == figures["availability.worker2"] == 1.0
    assert parts(result)["longest_outage"].figures["longest_outage_s.worker1"] > 0.2
    assert parts(result)["proxy_replaced"].status is Status.PASS


def test_a_fault_that_never_takes_effect_fails_the_verdict(cluster: FakeCluster, make_run):
    run = make_run(cluster, "never_takes_effect")
    fault = StubFault(takes_effect=False)
    result = run_procedure(run, Procedure(fault, cluster.endpoints(), ("head", "worker1", "worker2")))
    assert result.verdict.status is Status.FAIL
    took = parts(result)["fault_took_effect"]
    assert (took.status, took.reason) == (Status.FAIL, "never took effect: StubFault@worker1")
    assert phase_names(run) == ["arrange", "traffic", "inject", "confirm", "observe", "verdict"]
    notes = [e.detail for e in run.history().events if e.kind is EventKind.NOTE and e.name == "StubFault"]
    assert len(notes) == 1 and notes[0].startswith("did not take effect")
    run.close()
    assert fault.heals == 1


def test_a_fault_is_healed_even_when_its_injection_raises(cluster: FakeCluster, make_run):
    run = make_run(cluster, "never_takes_effect")
    fault = StubFault(inject_error=RuntimeError("inject refused"))
    with pytest.raises(RuntimeError, match="inject refused"):
        run_procedure(run, Procedure(fault, cluster.endpoints(), ("head",)))
    assert run.phases[-1].name == "inject" and run.phases[-1].outcome == "failed"
    run.close()
    assert fault.heals == 1
    assert run.traffic is not None and not run.traffic.running


# -- cleanups ----------------------------------------------------------------------------------------


def test_cleanups_run_last_first_and_all_run_when_one_raises(cluster: FakeCluster, make_run):
    run = make_run(cluster, "replica_failure")
    order: list[str] = []

    def fails() -> None:
        order.append("second")
        raise ZeroDivisionError("cleanup broke")

    run.add_cleanup("first", lambda: order.append("first"))
    run.add_cleanup("second", fails)
    run.add_cleanup("third", lambda: order.append("third"))
    with pytest.raises(RuntimeError, match="second: ZeroDivisionError: cleanup broke") as raised:
        run.close()
    assert order == ["third", "second", "first"]
    assert "first" not in str(raised.value) and "third" not in str(raised.value)
    with pytest.raises(ValueError, match="closed"):
        run.writer.note("after close")
    run.close()  # nothing left to clean up
    assert order == ["third", "second", "first"]


def test_a_heal_that_raises_does_not_stop_the_traffic_from_being_stopped(cluster: FakeCluster, make_run):
    run = make_run(cluster, "never_takes_effect")
    run.start_traffic(cluster.endpoints())
    fault = StubFault(heal_error=OSError("heal broke"))
    run.inject(fault)
    with pytest.raises(RuntimeError, match="heal StubFault@worker1: OSError: heal broke"):
        run.close()
    assert fault.heals == 1
    assert run.traffic is not None and not run.traffic.running
    assert [m.phase for m in History.load(run.history_path).traffic] == [TrafficPhase.STARTED, TrafficPhase.STOPPED]


# -- a checker that raises is unknown, never a pass --------------------------------------------------------


def test_a_checker_that_raises_makes_the_verdict_unknown(cluster: FakeCluster, make_run):
    run = make_run(cluster, "replica_failure")
    before = after = cluster.status()

    @checker
    def crashes(history: History) -> Verdict:
        raise KeyError("no such figure")

    passing = Verdict("passing", Status.PASS, "fine")
    result = run.finish([passing, crashes(History())], before, after, serving=["head"])
    assert result.verdict.status is Status.UNKNOWN
    assert parts(result)["crashes"].reason == "checker raised KeyError: 'no such figure'"
    assert json.loads((run.out_dir / "verdict.json").read_text())["status"] == "unknown"
    assert (run.out_dir / "logs" / "status.json").exists()


class Boom(Exception):
    pass


def _boom(*_: object) -> Sequence[Verdict]:
    raise Boom("the check itself crashed")


@pytest.mark.parametrize("where", ["evidence", "follow_ups"])
def test_a_scenario_check_that_raises_gives_unknown(cluster: FakeCluster, make_run, where: str):
    run = make_run(cluster, "replica_failure")
    result = run_procedure(run, Procedure(StubFault(), cluster.endpoints(), ("head",), **{where: (_boom,)}))
    assert result.verdict.status is Status.UNKNOWN
    assert json.loads((run.out_dir / "verdict.json").read_text())["status"] == "unknown"


# -- traffic_coverage and fault_took_effect on hand-built histories -------------------------------------------


def write_history(path: Path, *records) -> History:
    with HistoryWriter(path) as writer:
        writer.append(*records)
    return History.load(path)


def fault_events(inject: float, recovered: float | None) -> list:
    events = [event(inject, EventKind.INJECT, "KillWorkerPod", "worker2")]
    if recovered is not None:
        events.append(event(recovered, EventKind.RECOVERED, "KillWorkerPod", "worker2"))
    return events


def test_traffic_coverage_fails_when_traffic_stopped_before_recovery(tmp_path: Path):
    history = write_history(tmp_path / "h.jsonl", *steady("head", 0, 5, 0.05), *steady("worker1", 0, 5, 0.05),
                            *fault_events(inject=2.0, recovered=8.0))
    verdict = traffic_coverage(history, ["head", "worker1"], after_recovery_s=2.0)
    assert verdict.status is Status.FAIL
    assert "head: traffic ended 5.0s before 2s past recovery" in verdict.reason
    assert "worker1: traffic ended" in verdict.reason


def test_traffic_coverage_passes_when_traffic_ran_past_recovery(tmp_path: Path):
    history = write_history(tmp_path / "h.jsonl", *steady("head", 0, 11, 0.05),
                            *fault_events(inject=2.0, recovered=8.0))
    assert traffic_coverage(history, ["head"], after_recovery_s=2.0).status is Status.PASS


def test_traffic_coverage_fails_when_traffic_started_after_the_injection(tmp_path: Path):
    history = write_history(tmp_path / "h.jsonl", *steady("head", 3, 11, 0.05),
                            *fault_events(inject=2.0, recovered=8.0))
    verdict = traffic_coverage(history, ["head"], after_recovery_s=2.0)
    assert (verdict.status, verdict.reason) == (Status.FAIL, "traffic did not cover the fault: head: no request "
                                                             "before KillWorkerPod was injected")


def test_traffic_coverage_without_recovery_needs_traffic_past_the_injection(tmp_path: Path):
    covered = write_history(tmp_path / "a.jsonl", *steady("head", 0, 5, 0.05), *fault_events(2.0, None))
    assert traffic_coverage(covered, ["head"], after_recovery_s=2.0).status is Status.PASS
    short = write_history(tmp_path / "b.jsonl", *steady("head", 0, 2.5, 0.05), *fault_events(2.0, None))
    assert traffic_coverage(short, ["head"], after_recovery_s=2.0).status is Status.FAIL


def test_traffic_coverage_is_unknown_without_a_fault(tmp_path: Path):
    history = write_history(tmp_path / "h.jsonl", *steady("head", 0, 5, 0.05))
    assert traffic_coverage(history, ["head"], after_recovery_s=2.0).status is Status.UNKNOWN


def test_fault_took_effect_pass_fail_and_unknown():
    inject = event(1.0, EventKind.INJECT, "KillProxy", "worker1")
    effect = event(1.4, EventKind.TAKEN_EFFECT, "KillProxy", "worker1")
    other = event(1.2, EventKind.TAKEN_EFFECT, "KillProxy", "worker2")
    early = event(0.5, EventKind.TAKEN_EFFECT, "KillProxy", "worker1")
    passed = fault_took_effect(History.of([inject, effect]))
    assert passed.status is Status.PASS and passed.figures["time_to_take_effect_s"] == pytest.approx(0.4)
    assert fault_took_effect(History.of([inject, effect]), max_s=0.3).status is Status.FAIL
    assert fault_took_effect(History.of([inject, other, early])).status is Status.FAIL
    assert fault_took_effect(History.of([effect])).status is Status.UNKNOWN


# -- budgets ---------------------------------------------------------------------------------------------


def test_load_budget_overlays_the_scenario_on_the_defaults(budgets: Path, tmp_path: Path):
    budget = load_budget("never_recovers", budgets)
    assert budget == Budget(min_availability=1.0, max_outage_s=0.0, max_recovery_s=1.0, rate_per_endpoint=20.0,
                            timeout_s=1.0, baseline_s=0.5, observe_s=0.5, confirm_s=2.0, max_detection_s=2.0)
    with pytest.raises(BudgetError) as err:
        load_budget("nope", budgets)
    assert f"no budget for scenario 'nope' in {budgets}: add a [nope] table" in str(err.value)
    bad = tmp_path / "bad.toml"
    bad.write_text("[x]\nmin_availability = 1\nmax_outage_s = 0\nmax_recovery_s = 1\nmax_outages = 3\n")
    with pytest.raises(BudgetError, match="budget \\[x\\]"):
        load_budget("x", bad)



def test_a_budget_without_a_detection_time_sets_no_detection_budget(tmp_path: Path):
    path = tmp_path / "budgets.toml"
    path.write_text("[health_check_failure]\nmin_availability = 1\nmax_outage_s = 0\nmax_recovery_s = 5\n")
    budget = load_budget("health_check_failure", path)
    inject = event(1.0, EventKind.INJECT, "FailHealthCheck", "url")
    effect = event(7.0, EventKind.TAKEN_EFFECT, "FailHealthCheck", "url")
    assert fault_took_effect(History.of([inject, effect]), budget.max_detection_s).status is Status.PASS


def test_the_progress_line_counts_every_route_of_a_faulted_node_as_faulted():
    from harness.scenario import split_endpoints

    labels = ["head", "head/health", "worker1", "worker1/health", "worker3", "worker3/health"]
    assert split_endpoints(labels, {"worker3"}) == (["head", "head/health", "worker1", "worker1/health"],
                                                    ["worker3", "worker3/health"])
    assert split_endpoints(labels, {"controller"})[1] == []


def _status(node_id: str | None, state: str | None) -> StackStatus:
    return StackStatus("sc1", (NodeInfo("head", "head", "10.0.0.10", True, "h" * 12, "ALIVE"),
                               NodeInfo("worker2", "worker", "10.0.0.12", True, node_id, state)), None, (), (), (), True)


@pytest.mark.parametrize(("after_id", "after_state", "status", "dead"), [
    ("a" * 12, "ALIVE", Status.PASS, 0.0),  # rode it out
    ("b" * 12, "ALIVE", Status.FAIL, 1.0),  # declared dead, back as a new node by the end
    ("a" * 12, "DEAD", Status.FAIL, 1.0),  # declared dead, not back
    (None, None, Status.UNKNOWN, None),  # the head could not tell
])
def test_node_kept_fails_on_a_node_ray_declared_dead_with_the_figure_a_known_issue_pins(after_id, after_state,
                                                                                         status, dead):
    fault = types.SimpleNamespace(target="worker2")
    evidence = Evidence(fault, History(), _status("a" * 12, "ALIVE"), _status(after_id, after_state), None)
    verdict = beyond.node_kept(evidence)
    assert verdict.status is status, verdict.reason
    assert verdict.figures.get("node_declared_dead") == dead
    if status is Status.FAIL:
        assert DEATH_AFTER_HEAL.shown_by(Verdict("v", Status.FAIL, "", parts=(verdict,)))


@pytest.mark.parametrize(("budget", "link"), [("slow_network", "tbf 1000Kbit, random drop 5.0%"),
                                              ("slow_network_severe", "tbf 100Kbit, random drop 50.0%")])
def test_the_slow_link_is_the_one_the_budget_names(make_cluster, make_run, budget: str, link: str):
    """slow_network's link comes from its budget table (a control holds a worse one): the fake records it."""
    cluster = make_cluster()
    run = make_run(cluster, budget)
    result = guide.run_guide(beyond.BEYOND["slow_network"], run, cluster, "worker2")
    assert result.verdict.status is Status.PASS, explain(result.verdict)
    degraded = [e.detail for e in cluster.events() if e.kind == "network_degraded"]
    assert degraded == [link]
