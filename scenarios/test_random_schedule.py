"""Random fault schedules on the real stack: schedules of the seed scenarios' faults (several at once in a step),
drawn from a seed and the stack's configuration, run with traffic throughout; after every step the stack must
have recovered and the endpoints that had to keep serving stayed within the faults' budgets. A failing schedule
is replayed (deterministic or flaky) and shrunk to the smallest one that still fails (``harness/schedules/``,
``docs/random-schedules.md``).

    pytest scenarios/ -k random_schedule                                  # the short profile, a fresh seed
    SERVE_CHAOS_SCHEDULE_SEED=1234 pytest scenarios/ -k random_schedule   # the same schedules again
    SERVE_CHAOS_SCHEDULE_PROFILE=nightly pytest scenarios/ -k random_schedule
    pytest scenarios/ -k random_schedule --schedule-profile=nightly         # the same
    pytest scenarios/ -k random_schedule --schedule-profile=beyond          # the guide's faults and the held ones
    SERVE_CHAOS_SCHEDULE_REPLAY=reports/<run>/test_random_schedule/schedule.json pytest scenarios/ -k random_schedule

The seed and every schedule are printed as they run; ``schedule.json`` in the test's report folder holds the
original failing schedule, its replays and the minimal one. A failure that no replay repeats is flaky: the test
warns with its figures (and the report shows it) instead of failing; one that a replay repeats fails it.
"""

from __future__ import annotations

import os
import warnings

import pytest

from harness.known_issues import STALE_PROXIES
from harness.pytest_plugin import FlakyVerdict, progress_writer
from harness.repair import restore
from harness.schedules import (
    FAULT_KINDS,
    REPLAY_ENV,
    SEED_FAULT_KINDS,
    ExampleOutcome,
    FaultSpec,
    ScheduleConfig,
    Topology,
    load_schedule,
    replay_schedule,
    run_schedule,
    selected_profile,
    selected_seed,
)
from harness.stack.app import app_under_test
from harness.verdict import Status

pytestmark = pytest.mark.stack


def stack_schedule_config(stack_config, held_faults: bool = True) -> ScheduleConfig:
    """The schedule's settings for the stack: the topology its configuration names, and the faults that apply to
    its app (no FailHealthCheck when the app has no health-check target); the faults beyond the guide only where
    asked (a profile that draws them, ``beyond``; a replay, which names its own)."""
    kinds = FAULT_KINDS if held_faults else SEED_FAULT_KINDS
    faults = tuple(f for f in kinds if f != "FailHealthCheck" or app_under_test(stack_config).health)
    return ScheduleConfig(topology=Topology.planned(stack_config.workers.count), faults=faults)


def test_random_schedule(stack, stack_config, report_dir, pytestconfig):
    say = progress_writer(pytestconfig)
    profile = selected_profile(pytestconfig.getoption("--schedule-profile"))
    config = stack_schedule_config(stack_config, held_faults=profile.held_faults or bool(os.environ.get(REPLAY_ENV)))
    folder = report_dir / "test_random_schedule"
    budgets = pytestconfig.getoption("--budgets")
    if replay := os.environ.get(REPLAY_ENV):
        result = replay_schedule(stack, folder, load_schedule(replay, "minimal"), config=config, budgets=budgets,
                                 known_issue=STALE_PROXIES, prepare=lambda cluster: restore(cluster, say),
                                 progress=say)
    else:
        seed = selected_seed(pytestconfig.getoption("hypothesis_seed", None))
        result = run_schedule(stack, folder, config=config, profile=profile, seed=seed, budgets=budgets,
                              known_issue=STALE_PROXIES, prepare=lambda cluster: restore(cluster, say), progress=say)
    if result.flaky:  # failed once, passed every replay: reported as found (figures in the report), not a failure
        warnings.warn(FlakyVerdict(f"flaky: {result.explain()}"), stacklevel=1)
        return
    # a schedule that hits the pinned known issue is that issue (an expected failure), not a failure
    assert result.verdict is Status.PASS or (result.original is None and result.known_issue_hits), result.explain()


# The control: a schedule that breaks the property the invariants check. On Ray 2.60 the proxies that outlive a
# replaced controller never hear of new replicas (ray-project/ray#63784, harness/routing.py), so a replica
# killed after a controller kill is replaced but never routed to: step 2 must fail, on routing. Without the
# known issue pinned, that is a failure of the schedule; with it, the known issue.
CONTROL_SCHEDULE = [(FaultSpec("KillController", "controller"),), (FaultSpec("KillReplica", "head"),)]


@pytest.mark.control
def test_random_schedule_control(stack, stack_config, report_dir, pytestconfig):
    say = progress_writer(pytestconfig)
    result = replay_schedule(stack, report_dir / "test_random_schedule_control", CONTROL_SCHEDULE,
                             config=stack_schedule_config(stack_config), budgets=pytestconfig.getoption("--budgets"),
                             known_issue=STALE_PROXIES, prepare=lambda cluster: restore(cluster, say), progress=say)
    assert result.verdict is Status.FAIL, f"the control schedule did not fail: {result.explain()}"
    steps = result.examples[-1].steps
    assert len(steps) == 2, f"the control schedule stopped after {len(steps)} of 2 steps: {result.explain()}"
    first, second = steps
    assert first.status is Status.PASS, f"the controller step alone must pass: {first.reason}"
    assert second.status is Status.FAIL and "routing_converged: fail" in second.reason, (
        f"step 2 must fail on routing ({STALE_PROXIES.label}): {second.reason}")
    assert "routes to" in second.reason or "does not know" in second.reason, second.reason  # a stale route, named
    assert result.known_issue_hits and result.examples[-1].outcome is ExampleOutcome.KNOWN_ISSUE, result.explain()
