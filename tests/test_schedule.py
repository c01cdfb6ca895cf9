"""Random fault schedules (harness/schedules/) against FakeCluster, with real Traffic on its loopback ports.

- a known bad combination (both workers killed in one step, on a fake whose replicas run only on workers)
  breaks the availability invariant; its replays fail too (deterministic), and it is shrunk to exactly that
  step; schedule.json holds the original, its replays and the minimal schedule, which replays to the same
  failure;
- a failure that does not come back on every replay is reported as flaky, with its count, and not shrunk;
- a healthy stack passes random schedules of every fault kind;
- the same seed draws the same schedules whatever the live stack is like; a drawn node that is gone is
  resolved to the node at its place, and the resolution is recorded;
- a fault that never recovers breaks the recovery invariant, and teardown still heals and stops traffic;
- a schedule that shows a pinned known issue is reported as that issue; an unreadable routing is UNKNOWN;
- what a step may be, shrinking candidates, budgets, profiles and seeds, without a cluster.

No test sleeps: the schedules wait on probes and on recorded traffic. Delays and budgets are tiny.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.checkers.schedule import owed_answer, serving_at
from harness.history import ErrorKind, History, RequestRecord, TrafficMark, TrafficPhase
from harness.known_issues import STALE_PROXIES, Outcome
from harness.routing import RoutingUnavailable
from harness.schedules import (
    FAULT_KINDS,
    HELD_FAULT_KINDS,
    PROFILE_ENV,
    PROFILES,
    SEED_ENV,
    SEED_FAULT_KINDS,
    ExampleOutcome,
    FaultSpec,
    Role,
    ScheduleConfig,
    ScheduleProfile,
    ScheduleResult,
    Topology,
    candidates,
    fault_specs,
    load_schedule,
    load_schedule_budgets,
    replay_schedule,
    run_schedule,
    selected_profile,
    selected_seed,
    step_problem,
)
from harness.schedules.draw import draw_schedules
from harness.testing.fake import HEAD, FakeApp, FakeCluster, FakeConfig
from harness.verdict import Status

TABLES = ("worker_pod_failure", "replica_failure", "proxy_failure", "controller_failure", "head_failure",
          "health_check_failure")


def budgets_toml(*, min_availability: float, max_outage_s: float, max_recovery_s: float = 2.0) -> str:
    tables = "\n".join(f"[{t}]" for t in TABLES)
    return f"""
[defaults]
rate_per_endpoint = 40.0   # 25 ms resolution
timeout_s = 1.0            # generous: a loaded machine must not turn a slow answer into a failure
baseline_s = 0.05
observe_s = 0.05           # 2 requests per endpoint past each step's convergence
confirm_s = 2.0
min_availability = {min_availability}
max_outage_s = {max_outage_s}
max_recovery_s = {max_recovery_s}
{tables}
"""


FAST = dict(restart_delay_s=0.15, replica_start_s=0.02, proxy_start_s=0.05, actor_restart_s=0.05,
            operator_grace_s=0.1, health_detect_s=0.1, join_delay_s=0.1)
# The fake's own probes poll fast; recovery may overrun its budget by 0.5 s before the wait gives up.
TOPOLOGY = Topology.planned(2)
FAST_SCHEDULE = dict(topology=TOPOLOGY, poll_interval_s=0.02, probe_interval_s=0.02, recovery_grace_s=0.5,
                     settle_margin_s=0.05)

# As the guide's stack: 2 replicas of the app per node (a restarted node gets its replicas back), and the
# health-check app on every node, so that no step of at most two faults leaves an endpoint nothing to serve.
HEALTHY = FakeConfig(apps=(FakeApp("app", "/", "SleepyPid", 6, max_replicas_per_node=2),
                           FakeApp("health", "/health", "HealthToggle", 3, max_replicas_per_node=1,
                                   health_toggle=True)), **FAST)


class WorkersOnlyFake(FakeCluster):
    """Replicas run on the workers only (3 per worker): the head's proxy routes to the workers' replicas, so
    losing both workers at once leaves it nothing to serve, while losing one keeps every endpoint serving."""

    def _place_replica(self, app, now):
        head = self._nodes[HEAD]
        frozen, head.frozen = head.frozen, True  # placement skips frozen nodes; _lock is held by the caller
        try:
            return super()._place_replica(app, now)
        finally:
            head.frozen = frozen


WORKERS_ONLY = FakeConfig(apps=(FakeApp("app", "/", "SleepyPid", 6, max_replicas_per_node=3),), **FAST)
BOTH_WORKERS = {FaultSpec("KillWorkerPod", "worker1"), FaultSpec("KillWorkerPod", "worker2")}
BAD_SEED = 4  # its 4th schedule is {KillProxy(worker2) + both workers}; {KillWorkerPod(worker2)} (hypothesis 6.170.17)
BAD_CONFIG = ScheduleConfig(faults=("KillProxy", "KillWorkerPod"), allow_all_workers_down=True, **FAST_SCHEDULE)
BAD_PROFILE = ScheduleProfile("test", max_examples=10, max_steps=2, max_faults_per_step=3, replays=2,
                              shrink_budget_s=120.0)


def quiet(msg: str) -> None:
    pass


def steps_of(result_steps) -> list[set[FaultSpec]]:
    return [set(step.faults) for step in result_steps]


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ScheduleResult, Path, Path]]:
    """One run on the workers-only fake that may kill both workers in one step: it fails, is replayed, and is
    shrunk. Budgets: the head's endpoint must not be out longer than 80 ms (both workers down: 150 ms+)."""
    folder = tmp_path_factory.mktemp("bad")
    budgets = folder / "budgets.toml"
    budgets.write_text(budgets_toml(min_availability=0.5, max_outage_s=0.08))
    with WorkersOnlyFake(WORKERS_ONLY) as cluster:
        cluster.wait_healthy()
        result = run_schedule(cluster, folder / "schedule", profile=BAD_PROFILE, config=BAD_CONFIG, seed=BAD_SEED,
                              budgets=budgets, progress=quiet)
        cluster.wait_healthy(timeout_s=5)  # teardown left the stack healthy
        yield result, budgets, folder


def test_both_workers_killed_in_one_step_is_replayed_then_shrunk_to_exactly_that_step(bad_run):
    result, _, _ = bad_run
    assert result.verdict is Status.FAIL, result.explain()
    assert result.minimal is not None and result.original is not None
    assert steps_of(result.minimal.steps) == [BOTH_WORKERS], result.explain()
    # the original did more than that, and contains the bad combination
    assert any(BOTH_WORKERS <= set(step) for step in result.original.schedule)
    assert sum(len(step) for step in result.original.schedule) > 2, result.explain()
    # replayed before shrinking: the same schedule failed every time
    assert result.replays is not None and (result.replays.failed, result.replays.of) == (2, 2)
    assert "deterministic: failed 2 of 2 replays" in result.explain() and not result.flaky
    replays = [e for e in result.examples if e.role is Role.REPLAY]
    assert [e.schedule for e in replays] == [result.original.schedule] * 2 and all(e.of == result.original.number
                                                                                  for e in replays)
    # it is the availability invariant that broke, on the head's endpoint (the only one that had to serve)
    assert "traffic_within_budget" in result.minimal.reason and "head" in result.minimal.reason, result.minimal.reason
    assert result.minimal.steps[0].serving == ("head",) and result.minimal.role is Role.SHRINK


def test_schedule_json_holds_the_original_its_replays_and_the_minimal_schedule(bad_run):
    result, _, _ = bad_run
    data = json.loads(result.path.read_text())
    assert data["seed"] == BAD_SEED and data["verdict"] == "fail"
    assert [{(f["fault"], f["target"]) for f in s["faults"]} for s in data["minimal"]] == \
        [{("KillWorkerPod", "worker1"), ("KillWorkerPod", "worker2")}]
    assert [s["faults"] for s in data["original"]] == [[f.to_json() for f in s.faults] for s in result.original.steps]
    assert data["replays"] == {"failed": 2, "of": 2, "text": "deterministic: failed 2 of 2 replays"}
    assert data["minimal"][0]["status"] == "fail"
    assert "traffic_within_budget" in data["minimal"][0]["reason"] and "on head" in data["minimal"][0]["reason"]
    assert data["original_example"] < data["minimal_example"]
    # one History per schedule run, each ending with its traffic stopped (teardown ran, even on failure)
    folders = [result.path.parent / e["folder"] for e in data["examples"]]
    assert len(set(folders)) == len(folders) >= 4
    for folder in folders:
        marks = [m.phase for m in History.load(folder / "history.jsonl").traffic if isinstance(m, TrafficMark)]
        assert marks[0] is TrafficPhase.STARTED and marks[-1] in (TrafficPhase.STOPPED, TrafficPhase.FINISHED), folder
    # the minimal schedule's run is the scenario folder's own history, verdict and timeline, for the report
    verdict = json.loads((result.path.parent / "verdict.json").read_text())
    assert verdict["scenario"] == "random_schedule" and verdict["status"] == "fail" and verdict["outcome"] == "failed"
    assert (result.path.parent / "history.jsonl").stat().st_size > 0
    assert (result.path.parent / "logs").is_dir(), "a failing schedule collects the stack's logs"


def test_the_minimal_schedule_replays_to_the_same_failure(bad_run, tmp_path):
    result, budgets, _ = bad_run
    steps = load_schedule(result.path, "minimal")
    assert [set(s) for s in steps] == [BOTH_WORKERS]
    with WorkersOnlyFake(WORKERS_ONLY) as cluster:
        cluster.wait_healthy()
        replay = replay_schedule(cluster, tmp_path, steps, config=BAD_CONFIG, budgets=budgets, progress=quiet)
    assert replay.verdict is Status.FAIL, replay.explain()
    assert steps_of(replay.minimal.steps) == [BOTH_WORKERS]
    assert "traffic_within_budget" in replay.reason and "head" in replay.reason


class BothWorkersOnSomeKills(WorkersOnlyFake):
    """A flaky stack: on the pod kills of worker1 that ``takes_both`` picks (by their count), worker2 goes down
    with it."""

    kills = 0

    @staticmethod
    def takes_both(kill: int) -> bool:
        raise NotImplementedError

    def kill_node(self, node: str) -> None:
        super().kill_node(node)
        if node == "worker1":
            type(self).kills += 1
            if self.takes_both(type(self).kills):
                super().kill_node("worker2")


class SometimesBothWorkers(BothWorkersOnSomeKills):
    """Every other pod kill of worker1 takes worker2 down with it."""

    takes_both = staticmethod(lambda kill: kill % 2 == 1)


class OnceBothWorkers(BothWorkersOnSomeKills):
    """Only the first pod kill of worker1 takes worker2 down with it."""

    takes_both = staticmethod(lambda kill: kill == 1)


def flaky_schedule(tmp_path: Path, stack: type[BothWorkersOnSomeKills], replays: int):
    """Pod kills of worker1 on ``stack``, from the first seed whose first schedule kills it, ``replays`` replays."""
    budgets = tmp_path / "budgets.toml"
    budgets.write_text(budgets_toml(min_availability=0.5, max_outage_s=0.08))
    config = ScheduleConfig(faults=("KillWorkerPod",), **FAST_SCHEDULE)
    profile = ScheduleProfile("test", max_examples=3, max_steps=1, max_faults_per_step=1, replays=replays,
                              shrink_budget_s=60.0)
    stack.kills = 0
    with stack(WORKERS_ONLY) as cluster:
        cluster.wait_healthy()
        seed = next(s for s in range(100) if any(FaultSpec("KillWorkerPod", "worker1") in step
                                                 for step in draw_schedules(s, config, profile)[0]))
        result = run_schedule(cluster, tmp_path / "run", profile=profile, config=config, seed=seed, budgets=budgets,
                              progress=quiet)
        cluster.wait_healthy(timeout_s=5)
    return result


def test_a_failure_that_does_not_come_back_is_flaky_with_its_count_and_is_not_shrunk(tmp_path):
    result = flaky_schedule(tmp_path, SometimesBothWorkers, replays=3)
    assert result.verdict is Status.FAIL and result.replays is not None, result.explain()
    assert (result.replays.failed, result.replays.of) == (1, 3) and not result.replays.deterministic
    assert "flaky: failed 1 of 3 replays" in result.explain()
    assert not result.flaky  # it came back in a replay: the test fails on it (only 0 of N is flaky, and warns)
    assert result.minimal is result.original  # not shrunk
    assert not [e for e in result.examples if e.role is Role.SHRINK]


def test_a_failure_no_replay_repeats_is_flaky_and_the_scenario_test_warns_instead_of_failing(tmp_path):
    result = flaky_schedule(tmp_path, OnceBothWorkers, replays=2)
    assert result.verdict is Status.FAIL and result.flaky, result.explain()  # a FAIL on record, flaky
    assert "flaky: failed 0 of 2 replays" in result.explain()


@pytest.fixture(scope="module")
def healthy_budgets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("healthy") / "budgets.toml"
    # an outage budget of 0.5 s also tolerates holes of that long in the sends of a busy machine (checkers.py)
    path.write_text(budgets_toml(min_availability=0.9, max_outage_s=0.5))
    return path


def test_a_healthy_stack_passes_random_schedules_drawn_from_every_fault_kind(healthy_budgets, tmp_path):
    profile = ScheduleProfile("test", max_examples=3, max_steps=3, max_faults_per_step=2, replays=1,
                              shrink_budget_s=30.0)
    with FakeCluster(HEALTHY) as cluster:
        cluster.wait_healthy()
        result = run_schedule(cluster, tmp_path, profile=profile, config=ScheduleConfig(**FAST_SCHEDULE), seed=7,
                              budgets=healthy_budgets, progress=quiet)
        assert cluster.health_problem() is None
    assert result.verdict is Status.PASS, result.explain()
    assert result.original is None and result.minimal is None
    assert result.examples and all(e.outcome is ExampleOutcome.PASS for e in result.examples)
    steps = [s for e in result.examples for s in e.steps]
    assert all(s.status is Status.PASS for s in steps), [s.reason for s in steps]
    # hypothesis's first schedule is its simplest (the mildest fault alone); the others are random
    assert steps_of(result.examples[0].steps) == [{FaultSpec("KillReplica", "head")}]
    kinds = {f.fault for e in result.examples[1:] for s in e.steps for f in s.faults}
    assert len(kinds) >= 3, f"the random schedules drew only {kinds}"
    data = json.loads(result.path.read_text())
    assert data["verdict"] == "pass" and data["original"] is None and data["minimal"] is None
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert verdict["status"] == "pass"
    figures = verdict["verdict"]["figures"]  # what the report's summary reads
    assert figures["availability"] == 1.0 and figures["requests"] > 0
    assert "with_retries.availability_retry_3x_exponential" in figures and "time_to_recover_s" in figures


def test_the_same_seed_draws_the_same_schedules_whatever_the_live_stack(healthy_budgets, tmp_path):
    profile = ScheduleProfile("test", max_examples=2, max_steps=2, max_faults_per_step=2, replays=1,
                              shrink_budget_s=30.0)
    config = ScheduleConfig(**FAST_SCHEDULE)
    drawn = draw_schedules(20261125, config, profile)
    assert drawn == draw_schedules(20261125, config, profile) and drawn != draw_schedules(20261126, config, profile)
    assert len(drawn) == 2 and drawn[0] == ((FaultSpec("KillReplica", "head"),),)  # the simplest first
    schedules = []
    for run, fake in (("first", HEALTHY), ("second", dataclasses.replace(HEALTHY, workers=3))):
        with FakeCluster(fake) as cluster:  # the second stack runs a third worker: it draws nothing else
            cluster.wait_healthy()
            result = run_schedule(cluster, tmp_path / run, profile=profile, config=config, seed=20261125,
                                  budgets=healthy_budgets, progress=quiet)
        assert result.verdict is Status.PASS, result.explain()
        schedules.append([e.schedule for e in result.examples])
    assert schedules[0] == schedules[1] == list(drawn)


def test_a_drawn_node_that_is_gone_is_resolved_to_the_node_at_its_place_and_recorded(healthy_budgets, tmp_path):
    with FakeCluster(HEALTHY) as cluster:
        cluster.wait_healthy()
        cluster.stop_node("worker2")  # lost for good; worker3 replaces it
        cluster.add_worker()
        cluster.wait_healthy()
        result = replay_schedule(cluster, tmp_path, [(FaultSpec("KillWorkerPod", "worker2"),)],
                                 config=ScheduleConfig(**FAST_SCHEDULE), budgets=healthy_budgets, progress=quiet)
    assert result.verdict is Status.PASS, result.explain()
    (step,) = result.examples[0].steps
    assert step.faults == (FaultSpec("KillWorkerPod", "worker2"),) and step.injected == (FaultSpec("KillWorkerPod", "worker3"),)
    assert step.resolutions == ("KillWorkerPod(worker2) resolved to KillWorkerPod(worker3): worker2 is not a node now",)
    data = json.loads(result.path.read_text())
    assert data["examples"][0]["steps"][0]["injected"] == [{"fault": "KillWorkerPod", "target": "worker3"}]


def test_a_step_of_held_faults_holds_them_ends_them_then_awaits_recovery(tmp_path):
    """A hung proxy and a partition in one step: both take effect, are held for the longer of their hold_s (from
    their scenarios' budgets), are ended (healed) together, and only then is recovery awaited."""
    budgets = tmp_path / "budgets.toml"
    budgets.write_text(budgets_toml(min_availability=0.9, max_outage_s=0.5, max_recovery_s=2.0)
                       + "[proxy_freeze]\nhold_s = 0.3\n[node_partition]\nhold_s = 0.6\n")
    step = (FaultSpec("PartitionNode", "worker1"), FaultSpec("FreezeProxy", "worker2"))
    with FakeCluster(HEALTHY) as cluster:
        cluster.wait_healthy()
        result = replay_schedule(cluster, tmp_path / "run", [step], config=ScheduleConfig(**FAST_SCHEDULE,
                                 faults=("PartitionNode", "FreezeProxy")), budgets=budgets, progress=quiet)
        assert cluster.partitioned_from("worker1") == () and not any(p.stopped for p in cluster.node_processes("worker2"))
    assert result.verdict is Status.PASS, result.explain()
    events = History.load(tmp_path / "run" / "history.jsonl").events
    kinds = [(e.kind.value, e.name) for e in events if e.name in ("PartitionNode", "FreezeProxy")]
    assert [k for k, _ in kinds[:2]] == ["inject", "inject"] and {k for k, _ in kinds[2:4]} == {"taken_effect"}
    healed = [e.t_mono for e in events if e.kind.value == "healed"]
    injected = min(e.t_mono for e in events if e.kind.value == "inject")
    assert len(healed) >= 2 and min(healed) - injected >= 0.6, "held for the longer hold_s before ending both"
    recovered = [e.t_mono for e in events if e.kind.value == "recovered"]
    assert recovered and min(recovered) >= min(healed), "recovery is awaited once the faults are ended"


def test_a_fault_that_never_recovers_fails_the_recovery_invariant_and_is_still_healed(tmp_path):
    budgets = tmp_path / "budgets.toml"
    budgets.write_text(budgets_toml(min_availability=0.9, max_outage_s=0.5, max_recovery_s=0.4))
    with FakeCluster(HEALTHY) as cluster:
        cluster.wait_healthy()
        cluster.set_restart_policy("worker1", "never")  # its pod is not restarted: only a heal starts it
        result = replay_schedule(cluster, tmp_path / "run", [(FaultSpec("KillWorkerPod", "worker1"),)],
                                 config=ScheduleConfig(**FAST_SCHEDULE), budgets=budgets, progress=quiet)
        assert cluster.node_alive("worker1"), "teardown did not heal the killed worker"
    assert result.verdict is Status.FAIL, result.explain()
    assert "recovered_within_budget" in result.reason and "no recovery recorded for KillWorkerPod@worker1" in result.reason
    history = History.load(tmp_path / "run" / "history.jsonl")
    assert history.traffic[-1].phase is TrafficPhase.STOPPED
    assert [(e.kind.value, e.name) for e in history.events if e.kind.value == "healed"] == [("healed", "KillWorkerPod")]


def test_a_replaced_controller_then_a_replica_kill_shows_the_known_issue_not_a_failure(healthy_budgets, tmp_path):
    """Ray 2.60's defect (the fake models it): the proxies that outlive a replaced controller never hear of
    new replicas. The controller step alone passes; the replica step after it fails the recovery invariant on
    routing, naming the stale proxies: with the known issue pinned, that is the known issue (an expected
    failure), not a failure; without it, a failure; the same schedule on a sound fake passes."""
    steps = [(FaultSpec("KillController", "controller"),), (FaultSpec("KillReplica", "worker1"),)]
    results = {}
    for name, stale, issue in (("sound", False, STALE_PROXIES), ("stale", True, STALE_PROXIES), ("plain", True, None)):
        with FakeCluster(dataclasses.replace(HEALTHY, stale_proxies_after_new_controller=stale)) as cluster:
            cluster.wait_healthy()
            config = ScheduleConfig(**FAST_SCHEDULE, routing_timeout_s=0.5)
            results[name] = replay_schedule(cluster, tmp_path / name, steps, config=config, known_issue=issue,
                                            budgets=healthy_budgets, progress=quiet)
    assert results["sound"].verdict is Status.PASS, results["sound"].explain()
    shown = results["stale"]
    assert shown.verdict is Status.FAIL and shown.original is None and len(shown.known_issue_hits) == 1, shown.explain()
    first, second = shown.examples[-1].steps
    assert first.status is Status.PASS and second.status is Status.FAIL, (first.reason, second.reason)
    assert "routing_converged" in second.reason and "ray-project/ray#63784" in second.reason
    assert shown.examples[-1].outcome is ExampleOutcome.KNOWN_ISSUE
    verdict = json.loads((tmp_path / "stale" / "verdict.json").read_text())
    assert (verdict["outcome"], verdict["known_issue"]["id"]) == (str(Outcome.EXPECTED_FAILURE), STALE_PROXIES.id)
    plain = results["plain"]
    assert plain.verdict is Status.FAIL and plain.original is not None and not plain.known_issue_hits
    assert json.loads((tmp_path / "plain" / "verdict.json").read_text())["outcome"] == str(Outcome.FAILED)
    assert json.loads((tmp_path / "sound" / "verdict.json").read_text())["outcome"] == str(Outcome.PASSED)


class UnreadableRouting(FakeCluster):
    def proxy_routing(self, routes):
        raise RoutingUnavailable("could not read the proxies' routing (driver exit 1): no such method")


def test_a_routing_that_cannot_be_read_makes_the_schedule_unknown_never_a_pass(healthy_budgets, tmp_path):
    with UnreadableRouting(HEALTHY) as cluster:
        cluster.wait_healthy()
        result = replay_schedule(cluster, tmp_path, [(FaultSpec("KillReplica", "worker1"),)],
                                 config=ScheduleConfig(**FAST_SCHEDULE, routing_timeout_s=0.3),
                                 budgets=healthy_budgets, progress=quiet)
    assert result.verdict is Status.UNKNOWN, result.explain()
    assert result.examples[0].outcome is ExampleOutcome.UNKNOWN and "no such method" in result.reason


# --- without a cluster ---------------------------------------------------------------------------

def spec(text: str) -> FaultSpec:
    return FaultSpec.parse(text)


@pytest.mark.parametrize(("faults", "allow", "problem"), [
    (["KillWorkerPod(worker1)"], False, None),
    (["KillWorkerPod(worker1)", "KillWorkerPod(worker2)"], False, "kills every worker"),
    (["KillWorkerPod(worker1)", "KillWorkerPod(worker2)"], True, None),
    (["KillWorkerPod(worker1)", "KillWorkerPod(worker2)", "KillHead(head)"], True, "no endpoint"),
    (["KillProxy(head)", "KillProxy(worker1)", "KillProxy(worker2)"], False, "no endpoint"),
    (["FailHealthCheck(head)", "FailHealthCheck(worker1)"], False, "at most one FailHealthCheck"),
    (["KillHead(head)", "KillController(controller)", "KillReplica(worker1)"], False, None),
    ([], False, "at least one fault"),
])
def test_what_a_step_may_be(faults, allow, problem):
    found = step_problem([spec(f) for f in faults], TOPOLOGY, allow)
    assert (found is None) if problem is None else (found is not None and problem in found), found


@dataclasses.dataclass(frozen=True)
class Window:
    start: float
    converged: float
    serving: tuple[str, ...]


LABELS = ("head", "worker1", "worker2")


def sent(node: str, t: float, latency_s: float) -> RequestRecord:
    return RequestRecord(t, t, node, f"http://127.0.0.1/{node}", latency_s, None, ErrorKind.CONNECTION_REFUSED)


def test_which_endpoint_owes_an_answer_to_a_request():
    """Step 1 kills head's proxy at t=10 and converges at 12; step 2 kills worker1 at 20, converges at 25."""
    steps = [Window(10.0, 12.0, ("worker1", "worker2")), Window(20.0, 25.0, ("head", "worker2"))]
    assert serving_at(steps, LABELS, 5.0) == LABELS  # before the first step
    assert serving_at(steps, LABELS, 11.0) == ("worker1", "worker2")
    assert serving_at(steps, LABELS, 12.0) == LABELS  # converged: every endpoint again
    assert serving_at(steps, LABELS, 21.0) == ("head", "worker2")
    assert owed_answer(steps, LABELS, sent("head", 9.0, 0.5))  # answered (or not) before the kill
    assert not owed_answer(steps, LABELS, sent("head", 9.99, 0.02))  # in flight when its proxy was killed
    assert owed_answer(steps, LABELS, sent("worker1", 9.99, 0.02))  # in flight, but its endpoint was spared
    assert not owed_answer(steps, LABELS, sent("head", 11.0, 0.01))  # sent while its proxy was down
    assert owed_answer(steps, LABELS, sent("head", 12.0, 0.01))  # sent once step 1 converged
    assert not owed_answer(steps, LABELS, sent("worker1", 19.5, 1.0))  # in flight when step 2 killed worker1
    assert owed_answer(steps, LABELS, sent("head", 19.5, 1.0))


def test_every_fault_kind_is_drawn_on_every_target_it_has():
    specs = fault_specs(TOPOLOGY, ScheduleConfig(TOPOLOGY))
    assert {s.fault for s in specs} == set(SEED_FAULT_KINDS), "by default, the guide's faults only"
    held = fault_specs(TOPOLOGY, ScheduleConfig(TOPOLOGY, faults=FAULT_KINDS))
    assert held[:len(specs)] == specs, "the held faults come after the guide's: the guide's draws do not change"
    assert [str(s) for s in held[len(specs):]] == [
        "DegradeNetwork(worker1)", "DegradeNetwork(worker2)", "FreezeProxy(head)", "FreezeProxy(worker1)",
        "FreezeProxy(worker2)", "PartitionNode(worker1)", "PartitionNode(worker2)", "FreezeNode(worker1)",
        "FreezeNode(worker2)"]
    assert set(HELD_FAULT_KINDS) == {s.fault for s in held} - set(SEED_FAULT_KINDS)
    assert [str(s) for s in specs if s.fault in ("KillWorkerPod", "KillHead", "KillController")] == \
        ["KillController(controller)", "KillWorkerPod(worker1)", "KillWorkerPod(worker2)", "KillHead(head)"]
    assert str(specs[0]) == "KillReplica(head)"  # mildest first: the simplest schedule is made of it
    assert len([s for s in specs if s.fault == "KillProxy"]) == 3
    assert fault_specs(TOPOLOGY, ScheduleConfig(TOPOLOGY, faults=("KillProxy",))) == tuple(
        FaultSpec("KillProxy", n) for n in TOPOLOGY.nodes)
    with pytest.raises(ValueError, match="unknown"):
        ScheduleConfig(TOPOLOGY, faults=("KillEverything",))


def test_shrinking_candidates_are_smaller_schedules_smallest_first():
    a, b, c = spec("KillReplica(head)"), spec("KillProxy(worker1)"), spec("KillWorkerPod(worker2)")
    found = list(candidates(((a, b), (c,))))
    assert found[0] == ((c,),) and ((a, b),) in found and ((a,), (c,)) in found and ((b,), (c,)) in found
    sizes = [sum(len(step) for step in s) for s in found]
    assert sizes == sorted(sizes) and max(sizes) < 3
    assert list(candidates(((a,),))) == []


def test_a_step_budget_is_composed_of_its_faults_seed_budgets(tmp_path):
    path = tmp_path / "budgets.toml"
    path.write_text("""
[defaults]
rate_per_endpoint = 10.0
timeout_s = 3.0
[random_schedule]
observe_s = 4.0
[worker_pod_failure]
min_availability = 0.98
max_outage_s = 2.0
max_recovery_s = 60.0
[proxy_failure]
min_availability = 1.0
max_outage_s = 0.0
max_recovery_s = 60.0
confirm_s = 5.0
[head_failure]
min_availability = 0.9
max_outage_s = 8.0
max_recovery_s = 90.0
""")
    budgets = load_schedule_budgets(("KillWorkerPod", "KillProxy", "KillHead"), path)
    step = budgets.for_step(["KillProxy", "KillWorkerPod"])
    assert (step.min_availability, step.max_outage_s, step.max_recovery_s) == (0.98, 2.0, 60.0)
    assert step.confirm_s == 30.0  # the default of worker_pod_failure's budget, the larger
    assert (step.rate_per_endpoint, step.timeout_s, step.observe_s) == (10.0, 3.0, 4.0)
    assert budgets.for_step(["KillProxy"]).max_outage_s == 0.0
    everything = budgets.traffic
    assert (everything.min_availability, everything.max_outage_s, everything.max_recovery_s) == (0.9, 8.0, 90.0)
    path.write_text(path.read_text().replace("observe_s = 4.0", "observe_s = 4.0\nmax_outage_s = 1.0"))
    with pytest.raises(ValueError, match=r"only traffic settings"):
        load_schedule_budgets(("KillWorkerPod",), path)


def test_profiles_and_seeds_come_from_the_environment(monkeypatch):
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    monkeypatch.delenv(SEED_ENV, raising=False)
    assert selected_profile() is PROFILES["short"]
    assert PROFILES["short"].max_examples <= 2 and PROFILES["short"].max_steps <= 3
    assert PROFILES["nightly"].max_examples > 1 and PROFILES["nightly"].max_steps > PROFILES["short"].max_steps
    monkeypatch.setenv(PROFILE_ENV, "nightly")
    assert selected_profile() is PROFILES["nightly"]
    assert selected_profile("short") is PROFILES["short"]
    monkeypatch.setenv(PROFILE_ENV, "weekly")
    with pytest.raises(ValueError, match="weekly"):
        selected_profile()
    assert PROFILES["short"].replays >= 2 and PROFILES["nightly"].replays >= 3
    assert isinstance(selected_seed(), int)
    monkeypatch.setenv(SEED_ENV, "4242")
    assert selected_seed() == 4242 and selected_seed("17") == 17 and selected_seed(5) == 5
    with pytest.raises(ValueError, match="integer"):
        selected_seed("abc")
