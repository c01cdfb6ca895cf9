"""The guide's scenarios against a user's application: the composed example in cluster/examples/recommender/ (a
FastAPI ingress calling a model deployment through a handle, JSON answers, its own check_health), on its own
real stack, configured by its stack.toml alone (docs/own-app.md). The scenarios are the guide's, unchanged; the
app under test (routes, request, body check, watched deployments, the deployment replica faults kill, the
health toggle) comes from the configuration.

    pytest scenarios/test_own_app.py                       # this subset, as `make test` runs it
    pytest scenarios/test_guide.py --stack-config cluster/examples/recommender/stack.toml   # every scenario
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness import guide
from harness.local.backend import LocalCluster
from harness.pytest_plugin import local_stack
from harness.records import ScenarioResult
from harness.stack.config import REPO_ROOT, load_config
from harness.verdict import Status, explain

pytestmark = pytest.mark.stack
EXAMPLE = REPO_ROOT / "cluster" / "examples" / "recommender"
serve_chaos_budgets = "../cluster/examples/recommender/budgets.toml"  # this module's budgets (the plugin reads it)


@pytest.fixture(scope="module")
def example(pytestconfig: pytest.Config) -> Iterator[LocalCluster]:
    """The example's stack, up for this module's scenarios and torn down after them (even after a failure)."""
    yield from local_stack(load_config(EXAMPLE / "stack.toml"), pytestconfig, "example")


def assert_passed_on_figures(result: ScenarioResult) -> None:
    """A pass, and one that saw the app: requests were judged by the app's own body check, and every identity
    check looked at a deployment of the app (none of them is UNKNOWN, none has nothing to look at)."""
    assert result.verdict.status is Status.PASS, f"{result.scenario}: {explain(result.verdict)}"
    figures = result.verdict.figures
    assert figures.get("requests", 0) > 0, f"{result.scenario}: no request was judged: {figures}"
    print(f"{result.scenario}: {result.verdict.reason}; availability {figures.get('availability')}, "
          f"{figures.get('requests')} requests, {figures.get('failures')} failed, "
          f"recovered in {figures.get('time_to_recover_s')}")


def node_with(cluster: LocalCluster, deployment: str) -> str:
    """A worker (else any node) that runs a replica of ``deployment`` now."""
    nodes = [r.node for r in cluster.status().running(deployment) if r.node]
    assert nodes, f"no RUNNING replica of {deployment}"
    workers = [n for n in nodes if n in cluster.worker_names()]
    return sorted(workers or nodes)[0]


def test_example_replica_failure_of_the_inner_deployment(example, scenario):
    """Kill a replica of Ranker (reached only through the ingress's handle); the ingress keeps answering JSON."""
    app = example.app()
    assert app.deployment == "Ranker"
    result = guide.replica_failure(scenario(example, "replica_failure"), example, node_with(example, app.deployment))
    assert_passed_on_figures(result)
    assert "Ranker" in result.verdict.reason or any("Ranker" in p.reason for p in result.verdict.parts)


def test_example_worker_pod_failure(example, scenario):
    assert_passed_on_figures(guide.worker_pod_failure(scenario(example, "worker_pod_failure"), example,
                                                      example.worker_names()[-1]))


def test_example_head_failure(example, scenario):
    assert_passed_on_figures(guide.head_failure(scenario(example, "head_failure"), example))


def test_example_proxy_failure(example, scenario):
    assert_passed_on_figures(guide.proxy_failure(scenario(example, "proxy_failure"), example,
                                                 example.worker_names()[0]))


def test_example_health_check_failure_on_its_own_check_health(example, scenario):
    """The app's own toggle (GET /admin/fail-ranker-health, through the ingress) fails a Ranker replica's
    check_health; Serve replaces it."""
    health = example.app().health
    assert health is not None and not health.beside and health.deployment == "Ranker"
    assert_passed_on_figures(guide.health_check_failure(scenario(example, "health_check_failure"), example,
                                                        example.worker_names()[0]))
