"""Controls: the seed scenarios, unchanged, against stacks where the property they check is broken.

A scenario that passes on a broken stack proves nothing; each control must fail, and for the reason its
property names. The fragile stack (cluster/controls/fragile.toml) has one replica pinned to worker1 and a
health check that never fails; the no-GCS-FT stack runs the head without Redis; on the shared stack, the
operator is disarmed (nothing brings a killed controller back) or traffic goes only to the killed proxy.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import guide
from harness.checkers import Status
from harness.local.backend import LocalCluster
from harness.local.config import REPO_ROOT, load_config
from harness.pytest_plugin import progress_writer, remember_secret
from harness.scenario import ScenarioResult, explain

pytestmark = [pytest.mark.stack, pytest.mark.control]
CONTROLS = REPO_ROOT / "cluster" / "controls"


@pytest.fixture
def control(scenario):
    """A scenario run that is expected to fail: its verdict.json says so, and the report shows it as a control."""
    return lambda cluster, name: scenario(cluster, name, expected=Status.FAIL)


def assert_failed(result: ScenarioResult, *properties: str) -> None:
    """The verdict is a fail, and at least one of ``properties`` is among the failing checks."""
    failing = {v.name for v in result.verdict.parts if v.status is Status.FAIL}
    assert result.verdict.status is Status.FAIL, f"control {result.scenario} did not fail: {result.verdict.reason}"
    assert failing & set(properties), (f"control {result.scenario} failed, but not on {properties}: "
                                       f"{explain(result.verdict)}")
    print(f"control {result.scenario} failed as it must: {explain(result.verdict)}")


def control_stack(name: str, pytestconfig: pytest.Config) -> Iterator[LocalCluster]:
    cluster = LocalCluster(load_config(CONTROLS / name))
    remember_secret(pytestconfig, cluster.secret)
    say = progress_writer(pytestconfig)
    try:
        cluster.up(progress=lambda msg: say(f"[{name} {cluster.run_id}] {msg}"))
        yield cluster
    finally:
        cluster.down()


# --- the shared stack, with the repairing part switched off ------------------------------------------------

def test_controller_failure_control(stack, control):
    """Without the operator, nothing brings a controller killed with no_restart=True back."""
    run = control(stack, "controller_failure")
    stack.set_operator(False)
    run.add_cleanup("re-arm the operator", lambda: stack.set_operator(True))
    result = guide.controller_failure(run, stack)
    assert_failed(result, "time_to_recover")


def test_proxy_failure_control(stack, control):
    """A client with no other proxy to go to sees the killed proxy's outage."""
    target = stack.worker_names()[0]
    result = guide.proxy_failure(control(stack, "proxy_failure"), stack, target, serving=[target])
    assert_failed(result, "availability", "longest_outage")


# Class-scoped stacks: each is torn down before the next comes up, so that at most two stacks (this and the
# shared one) run at a time on a small machine.
@pytest.fixture(scope="class")
def fragile_stack(pytestconfig) -> Iterator[LocalCluster]:
    yield from control_stack("fragile.toml", pytestconfig)


@pytest.fixture(scope="class")
def no_ft_stack(pytestconfig) -> Iterator[LocalCluster]:
    yield from control_stack("no_gcs_ft.toml", pytestconfig)


class TestFragileStack:
    """One replica, pinned to worker1."""

    def test_worker_pod_failure_control(self, fragile_stack, control):
        result = guide.worker_pod_failure(control(fragile_stack, "worker_pod_failure"), fragile_stack, "worker1")
        assert_failed(result, "availability", "longest_outage")

    def test_replica_failure_control(self, fragile_stack, control):
        result = guide.replica_failure(control(fragile_stack, "replica_failure"), fragile_stack, "worker1")
        assert_failed(result, "availability", "longest_outage")

    def test_replica_spread_control(self, fragile_stack, control, stack_config):
        result = guide.replica_spread(control(fragile_stack, "replica_spread"), fragile_stack, "worker1",
                                      stack_config.app.max_replicas_per_node)
        assert_failed(result, "placement")

    def test_health_check_failure_control(self, fragile_stack, control):
        result = guide.health_check_failure(control(fragile_stack, "health_check_failure"), fragile_stack, "head")
        assert_failed(result, "fault_took_effect")

    def test_worker_node_failure_control(self, fragile_stack, control):
        # last on this stack: worker1 is lost for good, and the replacement has no `pinned` resource
        result = guide.worker_node_failure(control(fragile_stack, "worker_node_failure"), fragile_stack, "worker1")
        assert_failed(result, "availability", "time_to_recover")


# --- the head without GCS fault tolerance: the guide's own control ------------------------------------------

class TestNoGcsFt:

    def test_head_failure_without_gcs_ft(self, no_ft_stack, control):
        """Kill the head of a stack without GCS FT: the harness must see the outage, the workers restart, and
        the app go away until the operator redeploys it."""
        run = control(no_ft_stack, "head_failure")
        result = guide.head_failure(run, no_ft_stack)
        assert_failed(result, "availability", "longest_outage", "replicas_kept")
        injected = next(e.t_wall for e in run.history().events if e.kind == "inject")
        after = [(e.source, e.kind, e.target) for e in no_ft_stack.events() if e.t_wall >= injected]
        restarted = {t for s, k, t in after if s == "supervisor" and k == "node_started" and t.startswith("worker")}
        assert restarted, f"no worker restarted after the head came back without its GCS data: {after}"
        assert ("operator", "serve_missing", "app") in after and ("operator", "serve_config_applied", "app") in after, \
            f"the app did not go away and come back through a redeploy: {after}"
