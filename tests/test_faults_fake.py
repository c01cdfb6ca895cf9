"""Every fault of harness/faults.py against the FakeCluster: inject, taken effect, recovered, idempotent heal,
FaultError on a missing target; and the fake itself, whose ports are real HTTP servers on 127.0.0.1.

No test sleeps: they wait for observed facts with ``wait_until`` or hold a property with ``hold_for``.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterator

import pytest
import requests

from harness.faults import (
    FailHealthCheck,
    Fault,
    FaultError,
    KillController,
    KillHead,
    KillProxy,
    KillReplica,
    KillWorkerPod,
    LoseWorkerNode,
)
from harness.stack.cluster import Cluster, StackStatus
from harness.testing.fake import (
    HEAD,
    FakeApiUnavailable,
    FakeCluster,
    FakeConfig,
    FakeStackError,
)
from harness.waiting import WaitTimeout, hold_for, wait_until

PROBE_TIMEOUT_S = 5.0


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with FakeCluster() as fake:
        fake.wait_healthy()
        yield fake


def url_of(cluster: FakeCluster, node: str, route: str | None = None) -> str:
    return next(e.url for e in cluster.endpoints(route) if e.node == node)


def running(status: StackStatus, deployment: str = "SleepyPid") -> dict[str, tuple[str | None, int | None]]:
    return {r.replica_id: (r.node, r.pid) for r in status.replicas
            if r.deployment == deployment and r.state == "RUNNING"}


def node_id(status: StackStatus, node: str) -> str | None:
    return next(n.ray_node_id for n in status.nodes if n.name == node)


def inject_and_recover(fault: Fault) -> None:
    fault.inject()
    wait_until(f"{fault.name} to take effect", fault.taken_effect, timeout_s=PROBE_TIMEOUT_S, interval_s=0.02)
    wait_until(f"{fault.name} to recover", fault.recovered, timeout_s=PROBE_TIMEOUT_S, interval_s=0.02)


# -- the fake itself -----------------------------------------------------------------------------


def test_fake_has_every_member_of_the_cluster_protocol():
    members = {name for name, _ in inspect.getmembers(Cluster, inspect.isfunction) if not name.startswith("_")}
    members |= set(Cluster.__annotations__)
    missing = sorted(m for m in members if not hasattr(FakeCluster(), m))
    assert missing == []


def test_each_port_answers_with_the_pid_of_a_replica_on_its_node(cluster: FakeCluster):
    status = cluster.status()
    for endpoint in cluster.endpoints():
        local = {pid for node, pid in running(status).values() if node == endpoint.node}
        answers = {int(requests.get(endpoint.url, timeout=2).text) for _ in range(4)}
        assert local, f"the fake placed no replica on {endpoint.node}"
        assert answers <= local, f"{endpoint.node} answered {answers}, its replicas are {local}"


def test_a_killed_node_refuses_connections_and_returns_as_a_new_node(cluster: FakeCluster):
    before = cluster.status()
    url = url_of(cluster, "worker2")
    cluster.kill_node("worker2")
    assert cluster.node_processes("worker2") == ()
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=1)
    after = cluster.wait_healthy()
    assert node_id(after, "worker2") not in (None, node_id(before, "worker2"))
    lost = {rid for rid, (node, _) in running(before).items() if node == "worker2"}
    assert lost and not lost & set(running(after)), "the replicas of the killed node must be replaced"
    assert len(running(after)) == len(running(before))
    assert requests.get(url, timeout=2).status_code == 200
    kinds = [(e.source, e.kind) for e in cluster.events()
             if e.target == "worker2" and e.source in ("harness", "supervisor")]
    assert kinds[-4:] == [("harness", "node_killed"), ("supervisor", "node_exited"),
                          ("supervisor", "node_restarting"), ("supervisor", "node_started")]


def test_a_node_with_restart_policy_never_stays_down_until_started(cluster: FakeCluster):
    cluster.set_restart_policy("worker2", "never")
    cluster.kill_node("worker2")
    hold_for("worker2 to stay down", lambda: not cluster.node_alive("worker2"),
             seconds=2 * cluster.config.restart_delay_s, interval_s=0.05)
    cluster.start_node("worker2")
    assert cluster.node_alive("worker2")
    cluster.wait_healthy()


def test_the_head_down_takes_the_apis_with_it(cluster: FakeCluster):
    cluster.set_restart_policy("head", "never")
    cluster.kill_node("head")
    status = cluster.status()
    assert not status.serve_api_reachable and status.controller is None and status.replicas == ()
    with pytest.raises(FakeApiUnavailable):
        cluster.actors()
    assert requests.get(url_of(cluster, "worker1"), timeout=2).status_code == 200, "worker proxies keep serving"
    assert cluster.kill_actor("SERVE_CONTROLLER_ACTOR").returncode != 0


def test_a_frozen_node_holds_its_answers_until_thawed(cluster: FakeCluster):
    url = url_of(cluster, "worker1")
    cluster.freeze_node("worker1")
    with pytest.raises(requests.Timeout):
        requests.get(url, timeout=0.3)
    cluster.thaw_node("worker1")
    assert requests.get(url, timeout=2).status_code == 200


def test_unknown_nodes_and_dead_targets_are_refused(cluster: FakeCluster):
    with pytest.raises(FakeStackError, match="no node named 'nope'"):
        cluster.kill_node("nope")
    result = cluster.kill_actor("SERVE_REPLICA::nope")
    assert result.returncode != 0 and "Failed to look up actor" in result.stderr


def test_scale_changes_the_running_replicas_and_back(cluster: FakeCluster):
    cluster.scale("health", "HealthToggle", 3)
    wait_until("3 HealthToggle replicas", lambda: len(running(cluster.status(), "HealthToggle")) == 3, timeout_s=5,
               interval_s=0.02)
    cluster.scale("health", "HealthToggle", None)
    wait_until("2 HealthToggle replicas", lambda: len(running(cluster.status(), "HealthToggle")) == 2, timeout_s=5,
               interval_s=0.02)
    with pytest.raises(FakeStackError):
        cluster.scale("health", "SleepyPid", 1)


# -- every fault: inject -> taken effect -> recovered, with the identity evidence it claims --------------

FAULTS: dict[str, Callable[[FakeCluster], Fault]] = {
    "KillWorkerPod": lambda c: KillWorkerPod(c, "worker2"),
    "LoseWorkerNode": lambda c: LoseWorkerNode(c, "worker2"),
    "KillHead": lambda c: KillHead(c),
    "KillController": lambda c: KillController(c),
    "KillReplica": lambda c: KillReplica(c, "worker1", "SleepyPid"),
    "KillProxy": lambda c: KillProxy(c, "worker1"),
    "FailHealthCheck": lambda c: FailHealthCheck(c, url_of(c, "worker1", "/health"), "HealthToggle", 2),
}


@pytest.mark.parametrize("kind", FAULTS)
def test_fault_takes_effect_then_recovers_and_heal_is_idempotent(cluster: FakeCluster, kind: str):
    before = cluster.status()
    fault = FAULTS[kind](cluster)
    inject_and_recover(fault)
    after = cluster.status()
    fault.heal()
    fault.heal()
    cluster.wait_healthy()
    if kind in ("KillWorkerPod", "KillHead"):
        target = fault.target
        assert node_id(after, target) != node_id(before, target)
        on_target = {rid for rid, (node, _) in running(before).items() if node == target}
        assert on_target and not on_target & set(running(after))
        survivors = {rid: v for rid, v in running(before).items() if v[0] != target}
        assert {rid: running(after).get(rid) for rid in survivors} == survivors, "replicas elsewhere keep their PIDs"
    if kind == "KillHead":
        assert before.controller and after.controller
        assert (after.controller.actor_id, after.controller.pid != before.controller.pid) == \
            (before.controller.actor_id, True), "Ray restarts the detached controller: same actor, new PID"
    if kind == "LoseWorkerNode":
        assert isinstance(fault, LoseWorkerNode)
        assert fault.replacement == "worker3" and cluster.worker_names() == ("worker1", "worker3")
        assert not cluster.node_alive("worker2")
    if kind == "KillController":
        assert before.controller and after.controller and after.controller.actor_id != before.controller.actor_id
    if kind == "KillReplica":
        assert isinstance(fault, KillReplica) and fault.victim is not None
        assert fault.victim.replica_id not in running(after) and len(running(after)) == len(running(before))
    if kind == "KillProxy":
        b = next(p for p in before.proxies if p.node == "worker1")
        a = next(p for p in after.proxies if p.node == "worker1")
        assert (a.actor_id, a.pid != b.pid) == (b.actor_id, True)
        assert fault.findings == [f"proxy on worker1 restarted by Ray (same actor id): pid {b.pid} -> {a.pid}"]
    if kind == "FailHealthCheck":
        assert isinstance(fault, FailHealthCheck) and fault.victim in running(before, "HealthToggle")
        assert fault.victim not in {r.replica_id for r in after.replicas}


@pytest.mark.parametrize("kind", ["KillReplica", "FailHealthCheck", "KillProxy", "KillController"])
def test_a_probe_that_cannot_see_answers_not_yet(cluster: FakeCluster, kind: str):
    """Issue 12.5: while the head's API does not answer, a status lists no replicas; "is the victim gone?" must
    not be answered "yes" from that, or the detection time would be met without an observation."""
    fault = FAULTS[kind](cluster)
    cluster.set_restart_policy("head", "never")
    fault.inject()
    cluster.kill_node("head")
    assert not cluster.status().serve_api_reachable

    def answer(probe: Callable[[], bool]) -> str:
        try:
            return "yes" if probe() else "not yet"
        except Exception as exc:  # noqa: BLE001 - a probe that raises is "not yet" to every wait
            return f"not yet ({type(exc).__name__})"

    assert answer(fault.taken_effect).startswith("not yet")
    assert answer(fault.recovered).startswith("not yet")
    cluster.set_restart_policy("head", "always")
    cluster.start_node("head")


@pytest.mark.parametrize("kind", FAULTS)
def test_heal_before_inject_is_harmless(cluster: FakeCluster, kind: str):
    before = cluster.status()
    fault = FAULTS[kind](cluster)
    fault.heal()
    fault.heal()
    after = cluster.wait_healthy()
    assert [n.ray_node_id for n in after.nodes] == [n.ray_node_id for n in before.nodes]
    assert running(after) == running(before)
    assert not [e for e in cluster.events() if e.source == "harness" and e.kind.endswith("killed")]


def test_heal_brings_back_a_controller_the_operator_does_not(cluster: FakeCluster):
    cluster.set_operator(False)
    fault = KillController(cluster)
    fault.inject()
    wait_until("the controller to be dead", fault.taken_effect, timeout_s=PROBE_TIMEOUT_S, interval_s=0.02)
    hold_for("no controller without the operator", lambda: not fault.recovered(),
             seconds=2 * cluster.config.operator_grace_s, interval_s=0.05)
    fault.heal()
    wait_until("a new controller after heal", fault.recovered, timeout_s=PROBE_TIMEOUT_S, interval_s=0.02)
    fault.heal()  # nothing left to heal: a second controller must not appear
    assert len(cluster.actors(class_name="ServeController", state="ALIVE")) == 1


def test_heal_starts_a_worker_whose_pod_never_restarts(cluster: FakeCluster):
    cluster.set_restart_policy("worker2", "never")
    fault = KillWorkerPod(cluster, "worker2")
    fault.inject()
    wait_until("worker2's processes gone", fault.taken_effect, timeout_s=PROBE_TIMEOUT_S, interval_s=0.02)
    hold_for("worker2 not back on its own", lambda: not fault.recovered(),
             seconds=2 * cluster.config.restart_delay_s, interval_s=0.05)
    fault.heal()
    wait_until("worker2 back after heal", fault.recovered, timeout_s=PROBE_TIMEOUT_S, interval_s=0.02)


def test_a_worker_is_not_recovered_while_serve_still_lists_its_dead_replicas():
    """Serve lists a dead node's replicas as RUNNING for a while; the node back alone is not a recovery."""
    with FakeCluster(FakeConfig(restart_delay_s=0.05, stale_listing_s=1.0)) as cluster:
        cluster.wait_healthy()
        before = cluster.status()
        old = {rid for rid, (node, _) in running(before).items() if node == "worker2"}
        fault = KillWorkerPod(cluster, "worker2")
        fault.inject()
        wait_until("worker2 back as a new node and nothing else amiss",
                   lambda: node_id(cluster.status(), "worker2") not in (None, node_id(before, "worker2"))
                   and cluster.health_problem() is None, timeout_s=PROBE_TIMEOUT_S, interval_s=0.02)
        assert old <= set(running(cluster.status())), "the dead replicas are still listed RUNNING"
        assert not fault.recovered()
        wait_until("worker2 recovered", fault.recovered, timeout_s=PROBE_TIMEOUT_S, interval_s=0.02)
        assert not old & set(running(cluster.status()))


class LaggingTickerFake(FakeCluster):
    """Its ticker thread lags between advancing the model and opening the ports (as on a loaded machine): once it
    has made the head's new proxy ALIVE, it waits (bounded) until a status() read has happened. And a status()
    read pauses (bounded) between its own port sync and reading the model, so that the ticker's advance falls
    in between, if nothing orders the two."""

    armed = False

    def __init__(self, config: FakeConfig) -> None:
        super().__init__(config)
        self.ticker_advanced, self.read_done = threading.Event(), threading.Event()

    def _head_proxy_alive_port_shut(self) -> bool:
        with self._lock:
            proxy = self._actors.get(self._proxy_of.get(HEAD, ""))
            return proxy is not None and proxy.state == "ALIVE" and not self._servers[HEAD].listening

    def _sync_servers(self) -> None:
        if self.armed and threading.current_thread() is self._ticker and self._head_proxy_alive_port_shut():
            self.ticker_advanced.set()
            self.read_done.wait(timeout=1.0)
        super()._sync_servers()
        if self.armed and threading.current_thread() is not self._ticker:
            self.ticker_advanced.wait(timeout=0.3)


def test_a_proxy_reported_healthy_has_its_port_open_even_when_the_ticker_lags():
    """status() never reports a proxy HEALTHY whose port is still shut (the race that made the random schedule
    judge requests sent just after a proxy's recovery as failures)."""
    with LaggingTickerFake(FakeConfig(proxy_start_s=0.1)) as cluster:
        cluster.wait_healthy()
        fault = KillProxy(cluster, HEAD)
        fault.inject()
        cluster.armed = True
        try:
            seen = []
            def healthy_head() -> bool:
                proxy = next((p for p in cluster.status().proxies if p.node == HEAD), None)
                seen.append(proxy is not None and proxy.status == "HEALTHY" and cluster._servers[HEAD].listening)
                cluster.read_done.set()
                return proxy is not None and proxy.status == "HEALTHY"
            wait_until("the head's new proxy HEALTHY", healthy_head, timeout_s=PROBE_TIMEOUT_S, interval_s=0.01)
        finally:
            cluster.armed = False
            cluster.read_done.set()
        assert seen[-1], "status() reported the head's proxy HEALTHY while its port was shut"
        assert requests.get(url_of(cluster, HEAD), timeout=2).status_code == 200


# -- FaultError on a missing target ---------------------------------------------------------------


def _stopped_node_health_url(c: FakeCluster) -> str:
    url = url_of(c, "worker2", "/health")
    c.stop_node("worker2")
    return url


MISSING: dict[str, Callable[[FakeCluster], Fault]] = {
    "KillWorkerPod-unknown-node": lambda c: KillWorkerPod(c, "nope"),
    "KillWorkerPod-node-down": lambda c: (c.stop_node("worker2"), KillWorkerPod(c, "worker2"))[1],
    "LoseWorkerNode-unknown-node": lambda c: LoseWorkerNode(c, "nope"),
    "KillHead-unknown-node": lambda c: KillHead(c, "nope"),
    "KillController-none": lambda c: (c.set_operator(False), c.kill_actor("SERVE_CONTROLLER_ACTOR"),
                                      KillController(c))[-1],
    "KillReplica-no-replica-on-node": lambda c: KillReplica(c, "nope", "SleepyPid"),
    "KillProxy-no-proxy-on-node": lambda c: KillProxy(c, "nope"),
    "FailHealthCheck-port-refuses": lambda c: FailHealthCheck(c, _stopped_node_health_url(c), "HealthToggle"),
}
@pytest.mark.parametrize("case", list(MISSING))
def test_fault_error_on_a_missing_target(cluster: FakeCluster, case: str):
    fault = MISSING[case](cluster)
    with pytest.raises(FaultError):
        fault.inject()


def test_a_toggle_that_toggles_nothing_never_takes_effect(cluster: FakeCluster):
    """A toggle route that answers 2xx without naming its replica (a user's own toggle may) is accepted, and the
    victim is whichever replica Serve stops listing RUNNING: on a route that toggles nothing, none ever does,
    so the fault never takes effect (the scenario's fault_took_effect fails), it is never assumed."""
    fault = FailHealthCheck(cluster, url_of(cluster, "worker1", "/"), "HealthToggle")
    fault.inject()
    assert fault.victim is None and "did not say which" in fault.findings[0]
    with pytest.raises(WaitTimeout):
        wait_until("the toggled replica to stop RUNNING", fault.taken_effect, timeout_s=1.0, interval_s=0.1)
    assert fault.victim is None and not fault.recovered()


def test_a_toggle_that_does_not_name_its_replica_takes_effect_on_the_one_serve_drops(cluster: FakeCluster):
    """The victim of an anonymous toggle is the replica that stops RUNNING after it."""
    fault = FailHealthCheck(cluster, url_of(cluster, "worker1", "/health"), "HealthToggle",
                            toggle_path="/fail-anonymously")
    before = {r.replica_id for r in cluster.status().running("HealthToggle")}
    fault.inject()
    wait_until("the toggled replica to stop RUNNING", fault.taken_effect, timeout_s=10, interval_s=0.05)
    assert fault.victim in before and "stopped RUNNING" in fault.findings[-1]


def test_fail_health_check_with_no_healthy_replica_left_is_a_fault_error():
    with FakeCluster(FakeConfig(health_detect_s=30.0)) as cluster:
        cluster.wait_healthy()
        url = url_of(cluster, "worker1", "/health")
        first, second = FailHealthCheck(cluster, url, "HealthToggle"), FailHealthCheck(cluster, url, "HealthToggle")
        first.inject()
        second.inject()
        assert first.victim != second.victim
        with pytest.raises(FaultError, match="HTTP 503"):
            FailHealthCheck(cluster, url, "HealthToggle").inject()
