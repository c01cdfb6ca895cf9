"""The kind backend against a real kind cluster: up, status, a pod kill and its recovery, down.

Marked ``kind``; skipped where docker (with a running engine), kind, kubectl or helm is missing. Run on a
machine that has them (the nightly workflow does): ``pytest tests/test_kube_live.py -m kind``.
It takes minutes (a kind cluster, the operator, the first pull of Ray's image).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from harness.kube.kind import KindCluster, kind_for
from harness.kube.settings import load_settings
from harness.stack.config import load_config
from harness.waiting import wait_until

TOOLS = ("docker", "kind", "kubectl", "helm")


def _missing() -> str | None:
    absent = [tool for tool in TOOLS if shutil.which(tool) is None]
    if absent:
        return f"docker engine / kind not found ({', '.join(absent)} not on PATH)"
    if subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode != 0:
        return "docker engine / kind not found (the Docker engine does not answer `docker info`)"
    return None


MISSING = _missing()
pytestmark = [pytest.mark.kind, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]


@pytest.fixture(scope="module")
def kind_stack():
    cluster = KindCluster(load_config(), load_settings())
    try:
        cluster.up(progress=lambda msg: print(f"[kind {cluster.run_id}] {msg}", flush=True))
        yield cluster
    finally:
        cluster.down()


def test_up_gives_the_guides_stack(kind_stack):
    status = kind_stack.status()
    assert [n.name for n in status.nodes] == ["head", "worker1", "worker2"]
    assert all(n.alive and n.ray_state == "ALIVE" for n in status.nodes)
    assert sum(1 for r in status.replicas if r.deployment == "SleepyPid" and r.state == "RUNNING") == 6
    for endpoint in kind_stack.endpoints():
        assert int(subprocess.run(["curl", "-sf", "-m", "5", endpoint.url], capture_output=True, text=True,
                                  check=True).stdout) > 0


def test_a_killed_worker_pod_comes_back_under_its_name(kind_stack):
    before = {n.name: n.ray_node_id for n in kind_stack.status().nodes}
    kind_stack.kill_node("worker2")
    wait_until("worker2 back as a new Ray node",
               lambda: any(n.name == "worker2" and n.alive and n.ray_state == "ALIVE" and n.ray_node_id != before["worker2"]
                           for n in kind_stack.status().nodes), timeout_s=300)
    kind_stack.wait_healthy()


def test_down_deletes_the_kind_cluster():
    cluster = KindCluster(load_config(), load_settings())
    cluster.up()
    cluster.down()
    clusters = subprocess.run(["kind", "get", "clusters"], capture_output=True, text=True, check=True).stdout.split()
    assert kind_for(load_settings(), cluster.run_id).name not in clusters
