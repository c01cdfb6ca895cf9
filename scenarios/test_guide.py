"""The seed scenarios: each failure of the Ray Serve fault-tolerance guide, on the shared local stack.

Run one with ``pytest scenarios/ -k head_failure``. Each reads as the guide's procedure (see
``harness/guide.py``) and passes only on figures: availability and longest outage on the endpoints that
must keep serving, time to recover, and identity evidence (PIDs before and after).
"""

from __future__ import annotations

import pytest

from harness import guide
from harness.known_issues import STALE_PROXIES, Outcome
from harness.records import ScenarioResult
from harness.verdict import Status, explain

pytestmark = pytest.mark.stack


def assert_passed(result: ScenarioResult) -> None:
    assert result.verdict.status is Status.PASS, f"{result.scenario}: {explain(result.verdict)}"


def assert_known_issue(result: ScenarioResult, check: str) -> None:
    """On a Ray version the issue was seen on, the scenario fails on exactly the check that shows the defect (a
    FAIL carrying the issue's figure), and passes every other: an UNKNOWN or another failure is not the known
    issue, and a pass is an unexpected pass (the defect may be fixed: drop the expectation). On another version
    it runs as a plain scenario and must pass."""
    failed = sorted(v.name for v in result.verdict.parts if v.status is not Status.PASS)
    issue = result.known_issue
    assert issue is not None
    if not issue.applies_to(result.ray_version):
        assert result.outcome is Outcome.PASSED, f"{result.scenario}: {result.known_issue_note}; {explain(result.verdict)}"
        return
    assert result.outcome is Outcome.EXPECTED_FAILURE and failed == [check], (
        f"{result.scenario}: {result.outcome}: expected to fail on {check} alone ({issue.label}), but failed on "
        f"{failed}: {explain(result.verdict)}" if failed else
        f"{result.scenario}: {check} passed: {result.known_issue_note}")


def test_worker_pod_failure(stack, scenario):
    target = stack.worker_names()[-1]
    assert_passed(guide.worker_pod_failure(scenario(stack, "worker_pod_failure"), stack, target))


def test_replica_failure(stack, scenario):
    assert_passed(guide.replica_failure(scenario(stack, "replica_failure"), stack, stack.worker_names()[0]))


def test_proxy_failure(stack, scenario):
    assert_passed(guide.proxy_failure(scenario(stack, "proxy_failure"), stack, stack.worker_names()[0]))


def test_controller_failure(stack, scenario):
    # the guide's claim holds (no failed request, a new controller, a killed replica replaced), but the
    # surviving proxies never route to the replacement: routing_after_recovery fails, as the known issue says
    run = scenario(stack, "controller_failure", known_issue=STALE_PROXIES)
    assert_known_issue(guide.controller_failure(run, stack), "routing_after_recovery")


def test_health_check_failure(stack, scenario):
    assert_passed(guide.health_check_failure(scenario(stack, "health_check_failure"), stack, stack.worker_names()[0]))


def test_replica_spread(stack, scenario):
    # the limit is the app's deployment's max_replicas_per_node (the stack config's, else its Serve config's)
    assert_passed(guide.replica_spread(scenario(stack, "replica_spread"), stack, stack.worker_names()[-1]))


def test_head_failure(stack, scenario):
    assert_passed(guide.head_failure(scenario(stack, "head_failure"), stack))


def test_worker_node_failure(stack, scenario):
    # last: the lost node stays lost, and its replacement serves from then on
    target = stack.worker_names()[-1]
    assert_passed(guide.worker_node_failure(scenario(stack, "worker_node_failure"), stack, target))
