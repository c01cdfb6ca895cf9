"""The identity checks of harness/evidence.py on hand-built StackStatus snapshots: pass, fail and unknown
cases of each, and properties over generated snapshots (hypothesis)."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.checkers.evidence import (
    controller_replaced,
    placement,
    proxy_replaced,
    replica_count,
    replicas_kept,
    replicas_replaced,
)
from harness.identity import identities
from harness.stack.cluster import (
    ControllerInfo,
    NodeInfo,
    ProxyInfo,
    ReplicaInfo,
    StackStatus,
)
from harness.verdict import Status, Verdict

APP = "SleepyPid"
NODES = ("head", "worker1", "worker2")
NODE_IDS = {"head": "h" * 56, "worker1": "a" * 56, "worker2": "b" * 56}


def replica(rid: str, node: str | None, pid: int | None, state: str = "RUNNING", deployment: str = APP) -> ReplicaInfo:
    return ReplicaInfo(rid, deployment, node, pid, state, f"actor-{rid}")


def proxy(node: str, pid: int, actor: str | None = None, status: str = "HEALTHY") -> ProxyInfo:
    return ProxyInfo(node, f"http://10.0.0.1:8000/{node}", status, actor or f"proxy-actor-{node}", pid)


def stack(*replicas: ReplicaInfo, controller: ControllerInfo | None = ControllerInfo(100, "head", "c" * 32),
          proxies: tuple[ProxyInfo, ...] = (), node_ids: dict[str, str] | None = None,
          reachable: bool = True) -> StackStatus:
    ids = node_ids or NODE_IDS
    nodes = tuple(NodeInfo(n, "head" if n == "head" else "worker", f"10.0.0.{i}", True, ids.get(n), "ALIVE")
                  for i, n in enumerate(NODES, start=1))
    return StackStatus("run", nodes, controller, proxies, replicas, (), reachable)


BEFORE = stack(replica("h1", "head", 11), replica("h2", "head", 12), replica("a1", "worker1", 21),
               replica("a2", "worker1", 22), replica("b1", "worker2", 31), replica("b2", "worker2", 32),
               proxies=(proxy("head", 51), proxy("worker1", 52), proxy("worker2", 53)))


def with_replicas(status: StackStatus, *replicas: ReplicaInfo) -> StackStatus:
    return dataclasses.replace(status, replicas=replicas)


def after_worker2_replaced(*, new_state: str = "RUNNING") -> StackStatus:
    kept = [r for r in BEFORE.replicas if r.node != "worker2"]
    return with_replicas(BEFORE, *kept, replica("n1", "head", 41, new_state), replica("n2", "worker1", 42, new_state))


def assert_status(verdict: Verdict, status: Status, *words: str) -> None:
    assert verdict.status is status, f"{verdict.name}: {verdict.status}: {verdict.reason}"
    for word in words:
        assert word in verdict.reason, f"{word!r} not in {verdict.reason!r}"


# -- replicas_kept ----------------------------------------------------------------------------------


def test_replicas_kept_passes_when_the_watched_replicas_keep_id_and_pid():
    after = after_worker2_replaced()  # worker2's replicas changed, but only head and worker1 are watched
    verdict = replicas_kept(BEFORE, after, ["head", "worker1"], APP)
    assert_status(verdict, Status.PASS, "all 4 replicas")
    assert verdict.figures == {"replicas_watched": 4.0, "replicas_changed": 0.0}


@pytest.mark.parametrize("change", ["new pid", "gone", "no longer running"])
def test_replicas_kept_fails_when_a_watched_replica_changed(change: str):
    a1 = {"new pid": [replica("a1", "worker1", 99)], "gone": [],
          "no longer running": [replica("a1", "worker1", 21, "STARTING")]}[change]
    after = with_replicas(BEFORE, *[r for r in BEFORE.replicas if r.replica_id != "a1"], *a1)
    verdict = replicas_kept(BEFORE, after, ["worker1"], APP)
    assert_status(verdict, Status.FAIL, "a1@worker1 pid 21")
    assert verdict.figures["replicas_changed"] == 1.0


@pytest.mark.parametrize("nodes, deployment", [(["nope"], APP), (["worker1"], "HealthToggle"), ([], APP)])
def test_replicas_kept_is_unknown_when_nothing_was_watched(nodes: list[str], deployment: str):
    assert_status(replicas_kept(BEFORE, BEFORE, nodes, deployment), Status.UNKNOWN, "no replica")


def test_replicas_kept_watches_only_replicas_that_were_running():
    before = with_replicas(BEFORE, replica("a1", "worker1", 21), replica("s1", "worker1", 23, "STARTING"))
    after = with_replicas(BEFORE, replica("a1", "worker1", 21))  # the STARTING one is gone: not watched
    assert_status(replicas_kept(before, after, ["worker1"], APP), Status.PASS, "all 1 replicas")


# -- replicas_replaced ------------------------------------------------------------------------------


def test_replicas_replaced_passes_when_the_nodes_replicas_are_gone_and_new_ones_run():
    verdict = replicas_replaced(BEFORE, after_worker2_replaced(), "worker2", APP)
    assert_status(verdict, Status.PASS, "the 2 replicas of worker2 were replaced by 2 new ones")
    assert verdict.figures == {"replicas_on_target_before": 2.0, "new_replicas": 2.0}


def test_replicas_replaced_fails_when_an_old_replica_still_runs():
    after = with_replicas(after_worker2_replaced(), *after_worker2_replaced().replicas, replica("b1", "worker2", 31))
    assert_status(replicas_replaced(BEFORE, after, "worker2", APP), Status.FAIL, "['b1']", "still run")


def test_replicas_replaced_fails_when_fewer_new_replicas_run_than_were_lost():
    after = with_replicas(BEFORE, *[r for r in BEFORE.replicas if r.node != "worker2"], replica("n1", "head", 41))
    assert_status(replicas_replaced(BEFORE, after, "worker2", APP), Status.FAIL, "2 replicas", "only 1 new")


def test_replicas_replaced_is_unknown_without_replicas_on_the_node_before():
    before = with_replicas(BEFORE, *[r for r in BEFORE.replicas if r.node != "worker2"])
    assert_status(replicas_replaced(before, after_worker2_replaced(), "worker2", APP), Status.UNKNOWN, "no replica")


# -- controller_replaced ----------------------------------------------------------------------------


def test_controller_replaced_passes_on_a_new_pid():
    after = dataclasses.replace(BEFORE, controller=ControllerInfo(101, "head", "c" * 32))
    assert_status(controller_replaced(BEFORE, after), Status.PASS, "pid 100", "pid 101")


def test_controller_replaced_passes_on_the_same_pid_in_a_new_head_node():
    """PID namespaces restart small: a restarted head may give the controller the same PID."""
    after = dataclasses.replace(BEFORE, nodes=stack(node_ids={**NODE_IDS, "head": "f" * 56}).nodes)
    assert_status(controller_replaced(BEFORE, after), Status.PASS)


def test_controller_replaced_fails_on_the_same_process():
    assert_status(controller_replaced(BEFORE, BEFORE), Status.FAIL, "it is the same")


def test_controller_replaced_fails_without_a_controller_after():
    after = dataclasses.replace(BEFORE, controller=None)
    assert_status(controller_replaced(BEFORE, after), Status.FAIL, "no controller after")


def test_controller_replaced_is_unknown_without_a_controller_before():
    before = dataclasses.replace(BEFORE, controller=None)
    assert_status(controller_replaced(before, BEFORE), Status.UNKNOWN, "no controller before")


# -- proxy_replaced ---------------------------------------------------------------------------------


def with_proxy(status: StackStatus, new: ProxyInfo | None, node: str = "worker1") -> StackStatus:
    proxies = tuple(p for p in status.proxies if p.node != node) + ((new,) if new else ())
    return dataclasses.replace(status, proxies=proxies)


def test_proxy_replaced_passes_when_ray_restarted_it():
    after = with_proxy(BEFORE, proxy("worker1", 60))
    assert_status(proxy_replaced(BEFORE, after, "worker1"), Status.PASS, "restarted by Ray", "52 -> 60")


def test_proxy_replaced_passes_when_the_controller_replaced_it():
    after = with_proxy(BEFORE, proxy("worker1", 60, actor="another-actor"))
    assert_status(proxy_replaced(BEFORE, after, "worker1"), Status.PASS, "replaced by the controller")


@pytest.mark.parametrize("new, words", [
    (proxy("worker1", 52), ("same process",)),
    (proxy("worker1", 60, status="UNHEALTHY"), ("no HEALTHY proxy",)),
    (None, ("no HEALTHY proxy",)),
])
def test_proxy_replaced_fails(new: ProxyInfo | None, words: tuple[str, ...]):
    assert_status(proxy_replaced(BEFORE, with_proxy(BEFORE, new), "worker1"), Status.FAIL, *words)


def test_proxy_replaced_is_unknown_without_a_proxy_before():
    assert_status(proxy_replaced(with_proxy(BEFORE, None), BEFORE, "worker1"), Status.UNKNOWN, "no proxy on worker1")


# -- replica_count and placement ---------------------------------------------------------------------


def test_replica_count_counts_running_replicas_of_the_deployment_only():
    after = with_replicas(BEFORE, *BEFORE.replicas, replica("x", "head", 70, deployment="HealthToggle"),
                          replica("y", "head", 71, "STARTING"))
    verdict = replica_count(after, APP, 6)
    assert_status(verdict, Status.PASS, "expected 6", "saw 6")
    assert verdict.figures == {"replicas_running": 6.0}
    assert_status(replica_count(after, APP, 7), Status.FAIL, "expected 7", "saw 6")


def test_placement_passes_when_spread():
    verdict = placement(BEFORE, APP, max_per_node=2, min_nodes=3)
    assert_status(verdict, Status.PASS, "head: 2, worker1: 2, worker2: 2")
    assert verdict.figures == {"nodes_with_replicas": 3.0, "max_replicas_on_a_node": 2.0}


def test_placement_fails_with_too_many_on_a_node_or_too_few_nodes():
    crowded = with_replicas(BEFORE, *BEFORE.replicas, replica("h3", "head", 13))
    assert_status(placement(crowded, APP, max_per_node=2, min_nodes=2), Status.FAIL, "head: 3")
    narrow = with_replicas(BEFORE, *[r for r in BEFORE.replicas if r.node == "head"])
    assert_status(placement(narrow, APP, max_per_node=2, min_nodes=2), Status.FAIL, "at least 2 nodes")
    assert_status(placement(with_replicas(BEFORE), APP, max_per_node=2, min_nodes=1), Status.FAIL, "empty")


def test_placement_ignores_replicas_that_are_not_running():
    status = with_replicas(BEFORE, *BEFORE.replicas, replica("h3", "head", 13, "STARTING"))
    assert_status(placement(status, APP, max_per_node=2, min_nodes=3), Status.PASS)


# -- a snapshot taken while Serve's API did not answer judges nothing ----------------------------------

UNREACHABLE = StackStatus("run", BEFORE.nodes, None, (), (), (), False)
BLIND_CHECKS = {
    "replicas_kept": lambda after: replicas_kept(BEFORE, after, ["worker1"], APP),
    "replicas_replaced": lambda after: replicas_replaced(BEFORE, after, "worker2", APP),
    "controller_replaced": lambda after: controller_replaced(BEFORE, after),
    "proxy_replaced": lambda after: proxy_replaced(BEFORE, after, "worker1"),
    "replica_count": lambda after: replica_count(after, APP, 6),
    "placement": lambda after: placement(after, APP, 2, 3),
}


@pytest.mark.parametrize("check", BLIND_CHECKS)
def test_checks_on_an_unreachable_snapshot_are_unknown(check: str):
    assert BLIND_CHECKS[check](UNREACHABLE).status is Status.UNKNOWN


# -- identities ------------------------------------------------------------------------------------


def test_identities_show_what_changed_and_what_did_not():
    after = dataclasses.replace(after_worker2_replaced(), controller=ControllerInfo(101, "head", "d" * 32),
                                nodes=stack(node_ids={**NODE_IDS, "worker2": "e" * 56}).nodes)
    rows = {(r.kind, r.what): r for r in identities(BEFORE, after)}
    assert rows[("node", "worker2")].changed and not rows[("node", "worker1")].changed
    assert (rows[("node", "worker2")].before, rows[("node", "worker2")].after) == ("b" * 12, "e" * 12)
    assert rows[("controller", "Serve controller")].changed
    assert not any(r.changed for (kind, _), r in rows.items() if kind == "proxy")
    assert (rows[("replica", "SleepyPid b1 on worker2")].before, rows[("replica", "SleepyPid b1 on worker2")].after) \
        == ("pid 31", "")
    assert (rows[("replica", "SleepyPid n1 on head")].before, rows[("replica", "SleepyPid n1 on head")].after) \
        == ("", "pid 41")
    assert not rows[("replica", "SleepyPid a1 on worker1")].changed


REPLICA_IDS = st.text(alphabet="abc123", min_size=1, max_size=3)  # small: before and after share ids often
REPLICAS = st.lists(
    st.builds(ReplicaInfo, replica_id=REPLICA_IDS, deployment=st.sampled_from([APP, "HealthToggle"]),
              node=st.sampled_from([*NODES, None]), pid=st.one_of(st.none(), st.integers(1, 40)),
              state=st.sampled_from(["RUNNING", "STARTING", "UNHEALTHY"]), actor_id=st.none()),
    unique_by=lambda r: r.replica_id, max_size=8).map(tuple)
NODE_INFOS = st.lists(
    st.builds(NodeInfo, name=st.sampled_from(NODES), role=st.just("worker"), address=st.just("10.0.0.9"),
              alive=st.booleans(), ray_node_id=st.one_of(st.none(), st.sampled_from(["n1" * 28, "n2" * 28]))),
    unique_by=lambda n: n.name).map(tuple)
PROXIES = st.lists(
    st.builds(ProxyInfo, node=st.sampled_from(NODES), url=st.none(),
              status=st.sampled_from(["HEALTHY", "UNHEALTHY"]), actor_id=st.sampled_from(["p" * 32, "q" * 32]),
              pid=st.integers(1, 5)),
    unique_by=lambda p: p.node).map(tuple)
CONTROLLERS = st.one_of(st.none(), st.builds(ControllerInfo, pid=st.integers(1, 5), node=st.sampled_from(NODES),
                                             actor_id=st.sampled_from(["c" * 32, "d" * 32])))
STACKS = st.builds(StackStatus, run_id=st.just("run"), nodes=NODE_INFOS, controller=CONTROLLERS, proxies=PROXIES,
                   replicas=REPLICAS, apps=st.just(()), serve_api_reachable=st.just(True))


@settings(max_examples=300, deadline=None)
@given(STACKS, STACKS)
def test_identities_have_one_row_per_node_proxy_and_replica_of_before_and_after(before, after):
    rows = identities(before, after)
    by_kind = Counter(r.kind for r in rows)
    replica_rows = Counter(r.what.split(" ")[1] for r in rows if r.kind == "replica")
    assert replica_rows == Counter({r.replica_id for r in (*before.replicas, *after.replicas)})
    assert Counter(r.what for r in rows if r.kind == "node") == \
        Counter({n.name for n in (*before.nodes, *after.nodes)})
    assert Counter(r.what for r in rows if r.kind == "proxy") == \
        Counter({f"proxy on {p.node}" for p in (*before.proxies, *after.proxies)})
    assert by_kind["controller"] == 1
    for row in rows:
        assert row.changed or row.before == row.after, row
        assert row.before or row.after or row.kind in ("node", "controller"), row


@settings(max_examples=300, deadline=None)
@given(STACKS)
def test_nothing_changes_between_a_snapshot_and_itself(status):
    assert not [r for r in identities(status, status) if r.changed]
    assert replicas_kept(status, status, NODES, APP).status is not Status.FAIL
    assert controller_replaced(status, status).status is not Status.PASS
    for node in NODES:
        assert proxy_replaced(status, status, node).status is not Status.PASS
        assert replicas_replaced(status, status, node, APP).status is not Status.PASS


@settings(max_examples=300, deadline=None)
@given(STACKS, st.data())
def test_a_watched_replica_with_a_new_pid_fails_replicas_kept(status, data):
    watched = [r for r in status.replicas if r.deployment == APP and r.state == "RUNNING" and r.node is not None]
    if not watched:
        assert replicas_kept(status, status, NODES, APP).status is Status.UNKNOWN
        return
    victim = data.draw(st.sampled_from(watched))
    moved = dataclasses.replace(victim, pid=(victim.pid or 0) + 1000)
    after = with_replicas(status, *[moved if r is victim else r for r in status.replicas])
    verdict = replicas_kept(status, after, [victim.node], APP)
    assert verdict.status is Status.FAIL and victim.replica_id in verdict.reason
