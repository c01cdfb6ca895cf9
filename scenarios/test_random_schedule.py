"""Random fault schedules on the real stack: hypothesis draws schedules of the seed scenarios' faults (several
at once in a step), runs them with traffic throughout, checks after every step that the stack recovered and
that the endpoints that had to keep serving stayed within the faults' budgets, and shrinks a failing schedule
to the smallest one that still fails (see ``harness/schedule.py`` and ``docs/random-schedules.md``).

    pytest scenarios/ -k random_schedule                                  # the short profile, a new seed
    SERVE_CHAOS_SCHEDULE_SEED=1234 pytest scenarios/ -k random_schedule   # the same schedules again
    pytest scenarios/ -k random_schedule --hypothesis-seed=1234           # the same
    SERVE_CHAOS_SCHEDULE_PROFILE=nightly pytest scenarios/ -k random_schedule
    pytest scenarios/ -k random_schedule --schedule-profile=nightly         # the same
    SERVE_CHAOS_SCHEDULE_REPLAY=reports/<run>/test_random_schedule/schedule.json pytest scenarios/ -k random_schedule

The seed and every schedule are printed as they run; ``schedule.json`` in the test's report folder holds the
original and the minimal failing schedule.
"""

from __future__ import annotations

import os
import time

import pytest

from harness import guide
from harness.checkers import Status
from harness.pytest_plugin import progress_writer, restore
from harness.known_issues import STALE_PROXIES, KnownIssue
from harness.schedule import (
    REPLAY_ENV, FaultSpec, ScheduleConfig, load_schedule, replay_schedule, run_schedule, selected_profile,
    selected_seed,
)

pytestmark = pytest.mark.stack


def stack_schedule_config(stack_config, known_issue: KnownIssue | None = None) -> ScheduleConfig:
    """The schedule's settings for the guide's stack: its app's deployment and the health-check app."""
    return ScheduleConfig(deployment=stack_config.app.deployment, health_route=guide.HEALTH_ROUTE,
                          health_deployment=guide.HEALTH_DEPLOYMENT, known_issue=known_issue)


def test_random_schedule(stack, stack_config, report_dir, pytestconfig):
    say = progress_writer(pytestconfig)
    config = stack_schedule_config(stack_config)
    folder = report_dir / "test_random_schedule"
    budgets = pytestconfig.getoption("--budgets")
    started = time.monotonic()
    if replay := os.environ.get(REPLAY_ENV):
        result = replay_schedule(stack, folder, load_schedule(replay, "minimal"), config=config, budgets=budgets,
                                 prepare=lambda cluster: restore(cluster, say), progress=say)
    else:
        seed = selected_seed(pytestconfig.getoption("hypothesis_seed", None))
        profile = selected_profile(pytestconfig.getoption("--schedule-profile"))
        result = run_schedule(stack, folder, profile=profile, config=config, seed=seed, budgets=budgets,
                              prepare=lambda cluster: restore(cluster, say), progress=say)
    elapsed = time.monotonic() - started
    assert result.verdict is Status.PASS, result.explain()
    # the bound is stated before the run starts (printed with the seed): the profile's schedules, each at its
    # waits' deadlines, plus shrinking for the profile's shrink budget and hypothesis's final replay
    assert elapsed <= result.bound_s, f"the random schedule took {elapsed:.0f}s, bound {result.bound_s:.0f}s"


# The control: a schedule that breaks the property the invariants check. On Ray 2.60 the proxies that outlive a
# replaced controller never hear of new replicas (ray-project/ray#63784, harness/routing.py), so a replica
# killed after a controller kill is replaced but never routed to: step 2 must fail, on routing.
CONTROL_SCHEDULE = [(FaultSpec("KillController", "controller"),), (FaultSpec("KillReplica", "any"),)]


@pytest.mark.control
def test_random_schedule_control(stack, stack_config, report_dir, pytestconfig):
    say = progress_writer(pytestconfig)
    config = stack_schedule_config(stack_config, known_issue=STALE_PROXIES)
    result = replay_schedule(stack, report_dir / "test_random_schedule_control", CONTROL_SCHEDULE, config=config,
                             budgets=pytestconfig.getoption("--budgets"),
                             prepare=lambda cluster: restore(cluster, say), progress=say)
    assert result.verdict is Status.FAIL, f"the control schedule did not fail: {result.explain()}"
    first, second = result.examples[-1].steps
    assert first.status is Status.PASS, f"the controller step alone must pass: {first.reason}"
    assert second.status is Status.FAIL and "routing_converged: fail" in second.reason, (
        f"step 2 must fail on routing ({STALE_PROXIES.label}): {second.reason}")
