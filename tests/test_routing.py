"""harness/routing.py without a cluster: judging proxies' routing against the controller's replicas, and
reading a routing driver's answer."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pytest

from harness.checkers.routing import reading, routes_of, stale_routes
from harness.routing import routing_verdict, wait_routing_converged
from harness.stack.cluster import (
    AppInfo,
    DriverResult,
    NodeInfo,
    ProxyInfo,
    ProxyRoute,
    ReplicaInfo,
    StackStatus,
)
from harness.stack.drivers import MARKER, RoutingUnavailable, read_routing
from harness.verdict import Status


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


GOOD = [row("p-head", "/", {"a1", "a2"}, "SleepyPid"), row("p-w1", "/", {"a1", "a2"}, "SleepyPid"),
        row("p-head", "/health", {"h1", "h2"}, "HealthToggle"), row("p-w1", "/health", {"h1", "h2"}, "HealthToggle")]


def test_unreadable_rows_are_not_stale_but_unread_and_the_reading_has_not_converged():
    routing = [*GOOD[:3], dataclasses.replace(row("p-w1", "/health", None), error="GetTimeoutError: slow")]
    assert stale_routes(STATUS, routing) == ()
    got = reading(STATUS, routing, ("/", "/health"))
    assert not got.converged and [str(u) for u in got.unread] == [
        "proxy on worker1 for /health: could not be read (GetTimeoutError: slow)"]
    assert reading(STATUS, GOOD, ("/", "/health")).converged


def test_a_healthy_proxy_missing_from_the_reading_or_a_blind_status_is_unread():
    missing = reading(STATUS, GOOD[:1] + GOOD[2:3], ("/", "/health"))  # worker1's proxy not read at all
    assert not missing.converged and {(u.node, u.route) for u in missing.unread} == {("worker1", "/"),
                                                                                     ("worker1", "/health")}
    blind = reading(dataclasses.replace(STATUS, serve_api_reachable=False), GOOD, ("/",))
    assert not blind.converged and "the Serve API did not answer" in str(blind)
    assert not reading(STATUS, [], ("/",)).converged


@dataclasses.dataclass
class RoutingStub:
    """Test equipment: a cluster whose status is STATUS and whose proxy_routing is ``answer``."""

    answer: Callable[[tuple[str, ...]], tuple[ProxyRoute, ...]]

    def status(self) -> StackStatus:
        return STATUS

    def proxy_routing(self, routes: Iterable[str]) -> tuple[ProxyRoute, ...]:
        return self.answer(tuple(routes))


def _raise(routes: tuple[str, ...]) -> tuple[ProxyRoute, ...]:
    raise RoutingUnavailable("could not read the proxies' routing (driver exit 1): AttributeError: no such method")


def test_a_wait_that_never_read_the_routing_raises_and_the_verdict_is_unknown_never_a_pass():
    with pytest.raises(RoutingUnavailable, match="no reading .* succeeded .*AttributeError: no such method"):
        wait_routing_converged(RoutingStub(_raise), timeout_s=0.3, interval_s=0.05)
    verdict = routing_verdict(RoutingStub(_raise), "replacement_routed", timeout_s=0.3)
    assert verdict.status is Status.UNKNOWN and "AttributeError: no such method" in verdict.reason


def test_every_proxy_timing_out_makes_the_verdict_unknown_naming_each_proxy():
    def timeouts(routes: tuple[str, ...]) -> tuple[ProxyRoute, ...]:
        return tuple(dataclasses.replace(r, replicas=None, error="GetTimeoutError: 5 s") for r in GOOD)

    verdict = routing_verdict(RoutingStub(timeouts), timeout_s=0.3)
    assert verdict.status is Status.UNKNOWN and verdict.figures["unread_routes"] == 4
    assert "proxy on worker1 for /health: could not be read (GetTimeoutError: 5 s)" in verdict.reason


def test_the_verdict_fails_only_on_a_stale_route_and_passes_only_on_a_full_match():
    stale = [*GOOD[:3], row("p-w1", "/health", {"h0"}, "HealthToggle")]
    fail = routing_verdict(RoutingStub(lambda routes: tuple(stale)), timeout_s=0.3)
    assert fail.status is Status.FAIL and fail.figures["stale_routes"] == 1 and "proxy on worker1" in fail.reason
    good = routing_verdict(RoutingStub(lambda routes: tuple(GOOD)), timeout_s=0.3)
    assert good.status is Status.PASS and good.figures == {"stale_routes": 0.0, "unread_routes": 0.0}


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
    got = read_routing(stub.run_driver, ["/", "/health", "/"])
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
        read_routing(DriverStub(result).run_driver, ["/"])


def test_the_routing_snippet_asks_every_proxy_class_haproxy_included(monkeypatch, capsys):
    """With RAY_SERVE_ENABLE_HA_PROXY=1 each node's proxy is an HAProxyManager, not a ProxyActor: the snippet, run
    here against a stubbed State API and actor handles, reads both."""
    import types

    import ray.util.state

    alive = {"ProxyActor": [types.SimpleNamespace(actor_id="p1", name="SERVE_PROXY_ACTOR-a")],
             "HAProxyManager": [types.SimpleNamespace(actor_id="h2", name="SERVE_PROXY_ACTOR-b")]}
    monkeypatch.setattr(ray.util.state, "list_actors",
                        lambda filters, limit: alive[{k: v for k, _, v in filters}["class_name"]])
    replica = types.SimpleNamespace(unique_id="r1", deployment_id=types.SimpleNamespace(name="SleepyPid"))
    handle = types.SimpleNamespace(_dump_ingress_replicas_for_testing=types.SimpleNamespace(
        remote=lambda route: [replica]))
    fake_ray = types.SimpleNamespace(get=lambda ref, timeout: ref, get_actor=lambda name, namespace: handle)
    stub = DriverStub(DriverResult(0, "", ""))
    with pytest.raises(RoutingUnavailable):
        read_routing(stub.run_driver, ["/"])  # only to capture the snippet it sends
    exec(stub.snippet, {"ray": fake_ray})  # noqa: S102 - the harness's own snippet, with stubs
    rows = json.loads(capsys.readouterr().out.split(MARKER, 1)[1])
    assert [(r["actor_id"], r["replicas"]) for r in rows] == [("p1", ["r1"]), ("h2", ["r1"])]


def test_haproxys_fallback_proxy_is_placed_on_its_node_by_the_ray_node_id_its_name_ends_with():
    """HAProxy mode runs a ProxyActor named SERVE_PROXY_ACTOR-fallback-<node id> on the head, which Serve's status
    does not list: a stale one is named on its node (the repair then waits for a proxy there, never on None)."""
    head_id = "8d0080cb537f9be94f62c1b3fb4233f7"
    status = dataclasses.replace(STATUS, nodes=(NodeInfo("head", "head", "10.0.0.10", True, head_id, "ALIVE"),))
    fallback = ProxyRoute("p-fb", f"SERVE_PROXY_ACTOR-fallback-{head_id}", "/", frozenset({"old"}),
                          frozenset({"SleepyPid"}))
    stranger = ProxyRoute("p-x", "SERVE_PROXY_ACTOR-fallback-ffff", "/", frozenset({"old"}), frozenset({"SleepyPid"}))
    assert [(s.node, s.proxy_actor_id) for s in stale_routes(status, [fallback, stranger])] == [("head", "p-fb"),
                                                                                               (None, "p-x")]
