"""The local backend's fault primitives and its two Kubernetes roles (pod restarts, the operator), for real."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.local import system
from harness.local.backend import LocalCluster, find_runs, leftovers
from harness.stack.config import load_config
from harness.waiting import hold_for, wait_until

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    state_dir = Path(tempfile.mkdtemp(prefix="sct-", dir="/tmp"))
    cluster = LocalCluster(load_config(overrides={"network": {"state_dir": str(state_dir)}}))
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down()
        assert not leftovers(state_dir), leftovers(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)


def ray_node_id(cluster: LocalCluster, node: str) -> str | None:
    return next(n.ray_node_id for n in cluster.status().nodes if n.name == node and n.ray_state == "ALIVE")


def events_since(cluster: LocalCluster, t_mono: float) -> list[tuple[str, str, str]]:
    return [(e.source, e.kind, e.target) for e in cluster.events() if e.t_mono >= t_mono]


def test_killed_worker_is_restarted_by_its_policy_and_rejoins(cluster):
    old_id = ray_node_id(cluster, "worker2")
    old_pids = {p.host_pid for p in cluster.node_processes("worker2")}
    mark = cluster.events()[-1].t_mono
    cluster.kill_node("worker2")
    wait_until("every old process of worker2 to be gone",
               lambda: not old_pids & {p.host_pid for p in cluster.node_processes("worker2")}, timeout_s=10, interval_s=0.05)
    wait_until("worker2 to rejoin Ray as a new node",
               lambda: ray_node_id(cluster, "worker2") not in (None, old_id), timeout_s=60)
    kinds = events_since(cluster, mark)
    for expected in [("harness", "node_killed", "worker2"), ("supervisor", "node_exited", "worker2"),
                     ("supervisor", "node_restarting", "worker2"), ("supervisor", "node_started", "worker2")]:
        assert expected in kinds, kinds
    cluster.wait_healthy()


def test_stopped_node_stays_down_until_started(cluster):
    cluster.stop_node("worker1")
    # restart_delay_s is 1 s: three times that without processes shows the policy does not apply to a stop
    hold_for("worker1 staying stopped", lambda: not cluster.node_processes("worker1"), seconds=3)
    cluster.start_node("worker1")
    assert cluster.node_alive("worker1")
    cluster.wait_healthy()


def test_controller_killed_for_good_comes_back_through_the_operator(cluster):
    before = cluster.status().controller
    assert before is not None
    mark = cluster.events()[-1].t_mono
    result = cluster.kill_actor("SERVE_CONTROLLER_ACTOR", no_restart=True)
    assert result.returncode == 0, result.stderr
    after = wait_until("a new Serve controller",
                       lambda: (c := cluster.status().controller) is not None and c.actor_id != before.actor_id and c,
                       timeout_s=60)
    assert after.pid is not None
    kinds = events_since(cluster, mark)
    assert ("operator", "serve_missing", "app") in kinds and ("operator", "serve_config_applied", "app") in kinds, kinds
    cluster.wait_healthy()


def test_freeze_and_thaw_a_node(cluster):
    procs = cluster.node_processes("worker1")
    cluster.freeze_node("worker1")
    try:
        # SIGSTOP lands asynchronously: every process must show as stopped within a second
        wait_until("every process of worker1 to be stopped",
                   lambda: {system.process_state(p.host_pid) for p in procs} == {"T"}, timeout_s=1, interval_s=0.05)
    finally:
        cluster.thaw_node("worker1")
    assert "T" not in {system.process_state(p.host_pid) for p in procs}


def test_freeze_and_thaw_one_process_by_the_pid_ray_reports(cluster):
    proxy = next(p for p in cluster.status().proxies if p.node == "worker1")
    assert proxy.pid is not None
    cluster.freeze_process("worker1", proxy.pid)
    try:
        wait_until("the proxy of worker1 to be stopped, and only it",
                   lambda: [p.ns_pid for p in cluster.node_processes("worker1") if p.stopped] == [proxy.pid],
                   timeout_s=1, interval_s=0.05)
    finally:
        cluster.thaw_process("worker1", proxy.pid)
    assert not any(p.stopped for p in cluster.node_processes("worker1"))
    with pytest.raises(Exception, match="has no process 999999"):
        cluster.freeze_process("worker1", 999999)


def tcp_connects(cluster: LocalCluster, node: str, address: str, port: int) -> bool:
    """From inside ``node``'s network namespace, does a TCP connection to address:port open within 1 s?"""
    probe = f"exec 3<>/dev/tcp/{address}/{port}"
    result = system.run(["ip", "netns", "exec", cluster.node(node).netns, "timeout", "1", "bash", "-c", probe],
                        check=False)
    return result.returncode == 0


def test_partition_cuts_both_ways_and_unpartition_removes_exactly_its_rules(cluster):
    head, worker = cluster.node("head"), cluster.node("worker1")
    gcs_port = cluster.config.gcs.port
    assert tcp_connects(cluster, "worker1", head.address, gcs_port)
    cluster.partition("worker1", "head")
    try:
        assert cluster.partitioned_from("worker1") == ("head",) and cluster.partitioned_from("head") == ("worker1",)
        assert not tcp_connects(cluster, "worker1", head.address, gcs_port), "worker1 -> head must be cut"
        assert not tcp_connects(cluster, "head", worker.address, cluster.config.app.serve_port), "head -> worker1 too"
        assert tcp_connects(cluster, "worker2", head.address, gcs_port), "other nodes still reach the head"
        cluster.partition("worker1", "head")  # twice: still one rule each way
        rules = system.run(["ip", "netns", "exec", worker.netns, "iptables", "-S", "INPUT"]).stdout
        assert rules.count("DROP") == 1, rules
    finally:
        cluster.unpartition("worker1", "head")
    assert cluster.partitioned_from("worker1") == () and cluster.partitioned_from("head") == ()
    assert tcp_connects(cluster, "worker1", head.address, gcs_port)
    cluster.unpartition("worker1", "head")  # idempotent
    cluster.wait_healthy()


def test_driver_runs_inside_the_head_like_kubectl_exec(cluster):
    result = cluster.run_driver("print(len([n for n in ray.nodes() if n['Alive']]))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "3"


def test_down_of_another_state_folder_leaves_a_live_stack_alone(cluster, tmp_path):
    """`down` sweeps leftovers machine-wide, but never a stack that is in use."""
    other = tmp_path / "other.toml"
    other.write_text('[network]\nstate_dir = "/tmp/sct-other"\n')
    res = subprocess.run([sys.executable, "-m", "harness", "down", "--stack-config", str(other)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert cluster.run_id not in res.stdout, res.stdout
    assert find_runs(Path("/tmp/sct-other")) == {cluster.run_id}  # what is labelled on the machine is the live stack
    assert all(n.alive for n in cluster.status().nodes)
    cluster.wait_healthy(timeout_s=10)
