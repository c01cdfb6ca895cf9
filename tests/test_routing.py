"""harness/routing.py without a cluster: judging proxies' routing against the controller's replicas, and
reading a routing driver's answer."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from harness.cluster import AppInfo, DriverResult, ProxyInfo, ProxyRoute, ReplicaInfo, StackStatus
from harness.routing import MARKER, RoutingUnavailable, read_routing, routes_of, stale_routes


def replica(rid: str, deployment: str = "SleepyPid", app: str = "app", state: str = "RUNNING") -> ReplicaInfo:
    return ReplicaInfo(rid, deployment, "worker1", 100, state, f"actor-{rid}", app)


STATUS = StackStatus(
    "run", (), None,
    (ProxyInfo("head", "http://h/", "HEALTHY", "p-head", 1), ProxyInfo("worker1", "http://w/", "HEALTHY", "p-w1", 2)),
    (replica("a1"), replica("a2"), replica("h1", "HealthToggle", "health"), replica("h2", "HealthToggle", "health"),
     replica("h0", "HealthToggle", "health", state="STOPPING")),
    (AppInfo("app", "RUNNING", "/"), AppInfo("health", "RUNNING", "/health")),
    True,
)


def row(proxy: str, route: str, replicas: set[str] | None, deployment: str | None = None) -> ProxyRoute:
    deployments = frozenset({deployment}) if deployment else frozenset()
    return ProxyRoute(proxy, f"SERVE_PROXY_ACTOR-{proxy}", route, None if replicas is None else frozenset(replicas),
                      deployments)


def test_proxies_routing_to_the_running_replicas_are_not_stale():
    routing = [row("p-head", "/", {"a1", "a2"}, "SleepyPid"), row("p-w1", "/", {"a1", "a2"}, "SleepyPid"),
               row("p-head", "/health", {"h1", "h2"}, "HealthToggle"),
               row("p-w1", "/health", {"h1", "h2"}, "HealthToggle")]
    assert stale_routes(STATUS, routing) == ()
    assert routes_of(STATUS) == ("/", "/health")


def test_a_proxy_holding_dead_replicas_and_missing_new_ones_is_stale_and_named():
    routing = [row("p-head", "/health", {"h1", "h2"}, "HealthToggle"),
               row("p-w1", "/health", {"h0", "old"}, "HealthToggle")]
    stale = stale_routes(STATUS, routing)
    assert [(s.node, s.route) for s in stale] == [("worker1", "/health")]
    text = str(stale[0])
    assert "2 replica(s) the controller no longer runs (h0, old)" in text  # STOPPING is not running
    assert "does not know 2 running replica(s) (h1, h2)" in text


def test_a_proxy_that_knows_no_replica_is_stale_even_when_every_proxy_lost_them():
    # every proxy's set is empty, so no row names the deployment: the route's application decides
    routing = [row("p-head", "/health", set()), row("p-w1", "/health", set())]
    stale = stale_routes(STATUS, routing)
    assert {s.node for s in stale} == {"head", "worker1"}
    assert all(s.running == frozenset({"h1", "h2"}) for s in stale)


def test_unreadable_rows_are_not_judged():
    assert stale_routes(STATUS, [row("p-w1", "/", None)]) == ()


@dataclass
class DriverStub:
    """Test equipment: a cluster whose driver prints a canned answer (read_routing's parsing only)."""

    result: DriverResult
    snippet: str = ""

    def run_driver(self, snippet: str, timeout_s: float = 60.0) -> DriverResult:
        self.snippet = snippet
        return self.result


def test_read_routing_parses_the_drivers_answer():
    rows = [{"actor_id": "p-w1", "name": "SERVE_PROXY_ACTOR-x", "route": "/", "replicas": ["a1"],
             "deployments": ["SleepyPid"]},
            {"actor_id": "p-w1", "name": "SERVE_PROXY_ACTOR-x", "route": "/health", "error": "GetTimeoutError: slow"}]
    stub = DriverStub(DriverResult(0, "noise\n" + MARKER + json.dumps(rows) + "\n", ""))
    got = read_routing(stub, ["/", "/health", "/"])
    assert "ROUTES = ['/', '/health']" in stub.snippet
    assert got == (ProxyRoute("p-w1", "SERVE_PROXY_ACTOR-x", "/", frozenset({"a1"}), frozenset({"SleepyPid"})),
                   ProxyRoute("p-w1", "SERVE_PROXY_ACTOR-x", "/health", None, frozenset(), "GetTimeoutError: slow"))


@pytest.mark.parametrize(("result", "message"), [
    (DriverResult(1, "", "Traceback\nConnectionError: no GCS"), "driver exit 1): ConnectionError: no GCS"),
    (DriverResult(0, "nothing useful\n", ""), "driver exit 0"),
    (DriverResult(0, MARKER + "[{\"route\": 1}]\n", ""), "unreadable"),
])
def test_read_routing_raises_when_the_answer_is_missing_or_damaged(result, message):
    with pytest.raises(RoutingUnavailable, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_routing(DriverStub(result), ["/"])
