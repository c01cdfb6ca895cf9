"""The kind backend against a real kind cluster: up, status, a pod kill and its recovery, exec, the relays to
the pods, the fault agent in the head pod, down.

Marked ``kind`` and left out of ``make test``; ``make test-kind`` runs it with the offline settings (images
built by ``make kind-images``, kind from its cache on PATH):
``pytest tests/test_kube_live.py -m kind --kube-config cluster/kube/kind-offline.toml``.
A missing prerequisite (docker's engine, kind, helm where the settings install KubeRay with it, the built
manifest) FAILS the module with its reason: a live test never skips. It takes minutes.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import requests

from harness.faults import fault_kind
from harness.kube.agent import PID_FILE
from harness.kube.kind import KindCluster, kind_for
from harness.kube.settings import KubeSettings, load_settings
from harness.stack.config import load_config
from harness.waiting import wait_until

pytestmark = pytest.mark.kind


def missing(settings: KubeSettings) -> str | None:
    tools = ("docker", "kind", *(("helm",) if settings.kind.kuberay_install == "helm" else ()))
    absent = [tool for tool in tools if shutil.which(tool) is None]
    if absent:
        return f"{', '.join(absent)} not on PATH (make test-kind puts the built kind first on PATH)"
    if subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode != 0:
        return "the Docker engine does not answer `docker info` (make kind-images starts it)"
    if settings.kind.kuberay_install == "manifest" and not settings.kind.kuberay_manifest_path().is_file():
        return f"no KubeRay manifest at {settings.kind.kuberay_manifest_path()}: run make kind-images"
    return None


@pytest.fixture(scope="module")
def settings(pytestconfig) -> KubeSettings:
    loaded = load_settings(pytestconfig.getoption("--kube-config"))
    reason = missing(loaded)
    if reason:
        pytest.fail(f"the kind live tests cannot run: {reason}", pytrace=False)
    return loaded


@pytest.fixture(scope="module")
def kind_stack(settings):
    cluster = KindCluster(load_config(), settings)
    try:
        report = cluster.up(progress=lambda msg: print(f"[kind {cluster.run_id}] {msg}", flush=True))
        print(" ".join(f"{p.name} {p.seconds:.1f}s" for p in report.phases), flush=True)
        yield cluster
    finally:
        cluster.down()


def test_up_gives_the_guides_stack(kind_stack):
    status = kind_stack.status()
    assert [n.name for n in status.nodes] == ["head", "worker1", "worker2"]
    assert all(n.alive and n.ray_state == "ALIVE" for n in status.nodes)
    assert sum(1 for r in status.replicas if r.deployment == "SleepyPid" and r.state == "RUNNING") == 6
    for endpoint in kind_stack.endpoints():
        assert int(requests.get(endpoint.url, timeout=5).text) > 0


def test_exec_runs_in_the_pod_and_reports_its_exit_status(kind_stack):
    ok = kind_stack.run_driver("print(len(ray.nodes()))", timeout_s=120)
    assert ok.returncode == 0 and int(ok.stdout.strip().splitlines()[-1]) == 3, ok.stderr[-500:]
    failed = kind_stack.run_driver("raise SystemExit(3)", timeout_s=120)
    assert failed.returncode == 3
    procs = kind_stack.node_processes("head")
    assert any(p.name == "gcs_server" for p in procs), [p.name for p in procs]


def test_the_fault_agent_in_the_head_pod_kills_in_milliseconds_and_falls_back_when_killed(kind_stack):
    """The agent answers through a port-forward to the head pod's loopback; a replica kill goes out by it well
    under the one-shot exec's seconds; killed (its group, in the pod), the next driver falls back to an exec and
    the agent is started again."""
    stats = kind_stack.agent.stats()
    assert stats.pid > 1 and abs(kind_stack.agent.clock_offset_s) < 0.5
    fault = fault_kind("kill-replica").build(kind_stack, "worker1", kind_stack.app())
    called = time.time()
    fault.inject()
    killed = [e for e in kind_stack.events() if e.kind == "actor_killed"][-1]
    assert "sent by the fault agent" in killed.detail, killed.detail
    print(f"call -> kill sent by the agent: {killed.t_wall - called:.3f}s", flush=True)
    assert killed.t_wall - called < 1.0
    wait_until("the killed replica to be replaced", fault.recovered, timeout_s=180, interval_s=1.0)
    kind_stack.wait_healthy()
    head = kind_stack._head_pod()
    kind_stack._agent_exec(head, ("sh", "-c", f"kill -9 -$(cat {PID_FILE})"), 30.0)
    fell_back = kind_stack.run_driver("print(len(ray.nodes()))", timeout_s=120)
    assert fell_back.returncode == 0 and any(e.kind == "agent_fallback" for e in kind_stack.events())
    wait_until("the agent to be started again and to answer", lambda: kind_stack.agent.stats().pid != stats.pid,
               timeout_s=120, interval_s=1.0)


def test_a_killed_worker_pod_comes_back_under_its_name(kind_stack):
    before = {n.name: n.ray_node_id for n in kind_stack.status().nodes}
    old_pod = kind_stack.forwards.target("worker2")
    kind_stack.kill_node("worker2")
    wait_until("worker2 back as a new Ray node",
               lambda: any(n.name == "worker2" and n.alive and n.ray_state == "ALIVE" and n.ray_node_id != before["worker2"]
                           for n in kind_stack.status().nodes), timeout_s=300)
    kind_stack.wait_healthy()
    endpoint = next(e for e in kind_stack.endpoints() if e.node == "worker2")
    assert int(requests.get(endpoint.url, timeout=5).text) > 0  # the same local port, now the new pod's
    assert kind_stack.forwards.target("worker2") != old_pod


def test_down_deletes_the_kind_cluster(kind_stack, settings):
    """Last in the module: the fixture's own down then finds nothing left, which is not an error."""
    name = kind_for(settings, kind_stack.run_id).name
    assert name in subprocess.run(["kind", "get", "clusters"], capture_output=True, text=True, check=True).stdout.split()
    kind_stack.down()
    clusters = subprocess.run(["kind", "get", "clusters"], capture_output=True, text=True, check=True).stdout.split()
    assert name not in clusters
    assert not kind_stack.run_dir.exists()
