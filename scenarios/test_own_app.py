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
from harness.pytest_plugin import assert_passed, local_stack
from harness.records import Judged
from harness.stack.config import REPO_ROOT, load_config

pytestmark = pytest.mark.stack
EXAMPLE = REPO_ROOT / "cluster" / "examples" / "recommender"
serve_chaos_budgets = "../cluster/examples/recommender/budgets.toml"  # this module's budgets (the plugin reads it)


@pytest.fixture(scope="module")
def example(pytestconfig: pytest.Config) -> Iterator[LocalCluster]:
    """The example's stack, up for this module's scenarios and torn down after them (even after a failure)."""
    yield from local_stack(load_config(EXAMPLE / "stack.toml"), pytestconfig, "example")


def assert_passed_on_figures(judged: Judged) -> None:
    """A pass (or a flaky failure whose replays passed: it warns), and one that saw the app: requests were judged
    by the app's own body check, and every identity check looked at a deployment of the app (none of them is
    UNKNOWN, none has nothing to look at)."""
    assert_passed(judged)
    result = judged.first if judged.passed else judged.replayed[-1]
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


def test_example_replica_failure_of_the_inner_deployment(example, serve_chaos_replay):
    """Kill a replica of Ranker (reached only through the ingress's handle); the ingress keeps answering JSON."""
    app = example.app()
    assert app.deployment == "Ranker"
    judged = serve_chaos_replay(example, "replica_failure",
                                lambda run: guide.replica_failure(run, example, node_with(example, app.deployment)))
    assert_passed_on_figures(judged)
    result = judged.first
    assert "Ranker" in result.verdict.reason or any("Ranker" in p.reason for p in result.verdict.parts)


def test_example_worker_pod_failure(example, serve_chaos_replay):
    target = example.worker_names()[-1]
    assert_passed_on_figures(serve_chaos_replay(example, "worker_pod_failure",
                                                lambda run: guide.worker_pod_failure(run, example, target)))


def test_example_head_failure(example, serve_chaos_replay):
    assert_passed_on_figures(serve_chaos_replay(example, "head_failure", lambda run: guide.head_failure(run, example)))


def test_example_proxy_failure(example, serve_chaos_replay):
    target = example.worker_names()[0]
    assert_passed_on_figures(serve_chaos_replay(example, "proxy_failure",
                                                lambda run: guide.proxy_failure(run, example, target)))


def test_example_health_check_failure_on_its_own_check_health(example, serve_chaos_replay):
    """The app's own toggle (GET /admin/fail-ranker-health, through the ingress) fails a Ranker replica's
    check_health; Serve replaces it."""
    health = example.app().health
    assert health is not None and not health.beside and health.deployment == "Ranker"
    target = example.worker_names()[0]
    assert_passed_on_figures(serve_chaos_replay(example, "health_check_failure",
                                                lambda run: guide.health_check_failure(run, example, target)))
