"""The held faults (beyond the guide: a hung node, a hung proxy, a partition) against the FakeCluster: each
takes effect, does not recover while held, recovers once healed, and its heal is idempotent and ends exactly
what it started. The real effect of each (Ray's answer to a hang or a cut) is the scenarios' job, on the real
stack (scenarios/test_beyond.py); the real primitives are tested in tests/test_local_primitives.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from harness.faults import (
    FaultError,
    FreezeNode,
    FreezeProxy,
    HeldFault,
    PartitionNode,
    make_fault,
)
from harness.testing.fake import FakeCluster
from harness.waiting import hold_for, wait_until

PROBE_TIMEOUT_S = 5.0


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with FakeCluster() as fake:
        fake.wait_healthy()
        yield fake


def url_of(cluster: FakeCluster, node: str) -> str:
    return next(e.url for e in cluster.endpoints() if e.node == node)


def held(fault: HeldFault) -> None:
    """Inject, see it take effect, see it not recover while held, heal, see it recover; heal again is a no-op."""
    fault.inject()
    wait_until(f"{fault.name} to take effect", fault.taken_effect, timeout_s=PROBE_TIMEOUT_S, interval_s=0.02)
    hold_for(f"{fault.name} not to recover while held", lambda: not fault.recovered(), seconds=0.3, interval_s=0.05)
    fault.heal()
    wait_until(f"{fault.name} to recover", fault.recovered, timeout_s=PROBE_TIMEOUT_S, interval_s=0.02)
    fault.heal()


def test_every_held_fault_of_the_catalogue_says_how_long_it_is_held(cluster: FakeCluster):
    for name, target in (("FreezeNode", "worker1"), ("FreezeProxy", "worker1"), ("PartitionNode", "worker1"),
                         ("PartitionRedis", "head")):
        fault = make_fault(name, cluster, target)
        assert isinstance(fault, HeldFault) and fault.hold_s > 0 and fault.name == name
    assert not isinstance(make_fault("KillReplica", cluster, "worker1"), HeldFault)


def test_freeze_node_holds_its_answers_then_the_node_rides_it_out(cluster: FakeCluster):
    url = url_of(cluster, "worker1")
    fault = FreezeNode(cluster, "worker1")
    fault.inject()
    wait_until("every process stopped", fault.taken_effect, timeout_s=PROBE_TIMEOUT_S, interval_s=0.02)
    assert all(p.stopped for p in cluster.node_processes("worker1"))
    with pytest.raises(requests.Timeout):
        requests.get(url, timeout=0.3)
    fault.heal()
    wait_until("recovered", fault.recovered, timeout_s=PROBE_TIMEOUT_S, interval_s=0.02)
    assert not any(p.stopped for p in cluster.node_processes("worker1"))
    assert requests.get(url, timeout=2).status_code == 200
    assert fault.findings == ["worker1 kept its Ray node id (Ray rode the fault out)"]
    fault.heal()
    assert [e.kind for e in cluster.events() if e.target == "worker1" and e.source == "harness"][-2:] == \
        ["node_frozen", "node_thawed"], "a second heal sends nothing"


def test_freeze_proxy_stops_only_the_proxy(cluster: FakeCluster):
    proxy = next(p for p in cluster.status().proxies if p.node == "worker1")
    fault = FreezeProxy(cluster, "worker1")
    fault.inject()
    wait_until("the proxy stopped", fault.taken_effect, timeout_s=PROBE_TIMEOUT_S, interval_s=0.02)
    stopped = [p.ns_pid for p in cluster.node_processes("worker1") if p.stopped]
    assert stopped == [proxy.pid]
    with pytest.raises(requests.Timeout):
        requests.get(url_of(cluster, "worker1"), timeout=0.3)
    assert requests.get(url_of(cluster, "worker2"), timeout=2).status_code == 200, "other proxies serve"
    fault.heal()
    wait_until("recovered", fault.recovered, timeout_s=PROBE_TIMEOUT_S, interval_s=0.02)
    assert fault.findings == ["proxy on worker1 survived the hang (same process)"]


def test_freeze_proxy_refuses_a_node_without_a_proxy(cluster: FakeCluster):
    with pytest.raises(FaultError, match="no proxy"):
        FreezeProxy(cluster, "nope").inject()


@pytest.mark.parametrize("peer", ["head", "redis"])
def test_partition_is_in_place_until_healed_and_heal_removes_exactly_it(cluster: FakeCluster, peer: str):
    target = "worker1" if peer == "head" else "head"
    other = PartitionNode(cluster, "worker2", "head")
    other.inject()
    fault = PartitionNode(cluster, target, peer)
    held(fault)
    assert peer not in cluster.partitioned_from(target)
    assert cluster.partitioned_from("worker2") == ("head",), "healing one cut leaves the other in place"
    other.heal()
    assert cluster.partitioned_from("worker2") == ()


def test_partition_of_an_unknown_node_is_refused(cluster: FakeCluster):
    with pytest.raises(FaultError, match="no node named 'nope'"):
        PartitionNode(cluster, "nope").inject()


def test_freeze_node_is_held_and_healed(cluster: FakeCluster):
    held(FreezeNode(cluster, "worker2"))
