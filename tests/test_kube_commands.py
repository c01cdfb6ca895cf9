"""The kind and kube backends without a cluster: the argv they hand to kind, helm and docker, the API calls
they make (against ``FakeApi``, in memory), the context allowlist, stable node names over pods, port-forward
bridges, sweeps, and where the Redis password goes."""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import json
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.faults import make_fault
from harness.kube.api import (
    CRDS,
    DEPLOYMENTS,
    NAMESPACES,
    NODES,
    PODS,
    RAYCLUSTERS,
    RAYSERVICES,
    KubeApiError,
    Resource,
    load_documents,
)
from harness.kube.backend import rayservice_is_ready, scale_patch
from harness.kube.forward import REREAD_MIN_S, DirectDialer, PodAddress, PortForwards, StreamDialer, free_local_port
from harness.kube.kind import KindCluster, remove_kind_run, sweep_kind
from harness.kube.routes import pod_subnet
from harness.kube.kube import KubeCluster, remove_namespace, sweep_namespaces
from harness.kube.manifests import (
    ANNOTATION_OWNER,
    ANNOTATION_STATE,
    HEAD_CONTAINER,
    LABEL_MANAGED_BY,
    LABEL_RAY_POD,
    LABEL_ROLE,
    LABEL_RUN_ID,
    MANAGED_BY,
    WORKER_CONTAINER,
    kind_config,
)
from harness.kube.runs import RunRecord, is_leftover
from harness.kube.safety import ContextNotAllowed, context_allowed, require_allowed
from harness.kube.settings import ALLOWED_CONTEXTS_ENV, load_settings
from harness.kube.slots import PodView, Slot, bind_slots, initial_slots
from harness.kube.tools import (
    Completed,
    Kind,
    KubeStackError,
    ToolMissing,
    helm_install_operator,
    require_docker_engine,
    require_tools,
)
from harness.secrets import Secret
from harness.stack.config import load_config
from harness.stack.errors import StackError
from harness.waiting import wait_until
from harness.testing.kubefake import ApiCall, FakeApi

RUN = "sc0a1b2c"
NS = f"serve-chaos-{RUN}"


# --- a fake runner: records argv and stdin, answers by the words in the argv --------------------------------

class FakeProc:
    def __init__(self) -> None:
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode

    def terminate(self) -> None:
        self.returncode = -15

    kill = terminate

    def wait(self, timeout: float | None = None) -> int:
        return self.returncode or 0


Answer = tuple[int, str, str] | Callable[[tuple[str, ...], str | None], tuple[int, str, str]]


class FakeRunner:
    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, ...], str | None]] = []
        self.spawned: list[tuple[tuple[str, ...], FakeProc]] = []
        self.answers: list[tuple[tuple[str, ...], Answer]] = []

    def on(self, words: tuple[str, ...], answer: Answer) -> None:
        """Answer every argv holding ``words`` in order (the last registered match wins)."""
        self.answers.append((words, answer))

    def run(self, argv, *, stdin=None, timeout_s=60.0) -> Completed:
        argv = tuple(argv)
        self.calls.append((argv, stdin))
        for words, answer in reversed(self.answers):
            if _subsequence(words, argv):
                rc, out, err = answer(argv, stdin) if callable(answer) else answer
                return Completed(argv, rc, out, err)
        return Completed(argv, 0, "{}", "")

    def spawn(self, argv, log_path) -> FakeProc:
        proc = FakeProc()
        self.spawned.append((tuple(argv), proc))
        return proc

    def argvs(self, *words: str) -> list[tuple[str, ...]]:
        return [argv for argv, _ in self.calls if _subsequence(words, argv)]


def _subsequence(words: tuple[str, ...], argv: tuple[str, ...]) -> bool:
    it = iter(argv)
    return all(any(w == a for a in it) for w in words)


def pod(name: str, role: str, ip: str, *, running: bool = True, terminating: bool = False,
        created: str = "2026-11-25T10:00:00Z", node: str = "serve-chaos-sc0a1b2c-worker") -> dict:
    container = HEAD_CONTAINER if role == "head" else WORKER_CONTAINER
    meta = {"name": name, "uid": f"uid-{name}", "creationTimestamp": created,
            "labels": {LABEL_RUN_ID: RUN, LABEL_ROLE: role, LABEL_RAY_POD: "true"}}
    if terminating:
        meta["deletionTimestamp"] = "2026-11-25T10:05:00Z"
    state = {"running": {}} if running else {"waiting": {"reason": "ContainerCreating"}}
    return {"metadata": meta, "spec": {"nodeName": node, "containers": [{"name": container}]},
            "status": {"phase": "Running" if running else "Pending", "podIP": ip,
                       "containerStatuses": [{"name": container, "state": state, "restartCount": 0}]}}


def drop_pod(api: FakeApi, name: str) -> Callable[[ApiCall], None]:
    """What KubeRay does after a scale-down patch of the RayCluster: it deletes the named pod."""
    def after(call: ApiCall) -> None:
        if call.plural == "rayclusters":
            api.objects.pop(("pods", NS, name), None)
    return after


def fake_api(pods: list[dict], context: str = "kind-serve-chaos-sc0a1b2c") -> FakeApi:
    api = FakeApi(context=context)
    for item in pods:
        api.put(PODS, item, NS)
    api.put(RAYSERVICES, {"metadata": {"name": "serve-chaos"},
                          "status": {"activeServiceStatus": {"rayClusterName": "rs-raycluster-q"}}}, NS)
    api.put(RAYCLUSTERS, {"metadata": {"name": "rs-raycluster-q"},
                          "spec": {"workerGroupSpecs": [{"groupName": "workers", "replicas": 2}]}}, NS)
    return api


def view(name: str, role: str = "worker", *, terminating: bool = False, created: str = "t1") -> PodView:
    return PodView(name, f"uid-{name}", role, "10.0.0.1", "n", "Running", True, terminating, created, 0)


@pytest.fixture
def settings(tmp_path):
    return load_settings(overrides={"kube": {"state_dir": str(tmp_path / "state")},
                                    "timeouts": {"operator_ready_s": 1.0, "pod_ready_s": 1.0, "api_call_s": 5.0}})


@pytest.fixture
def runner() -> FakeRunner:
    r = FakeRunner()
    r.on(("ip", "-j", "-4", "route", "show"), (0, "[]", ""))  # the host has no routes that matter here
    return r


@pytest.fixture
def api() -> FakeApi:
    return fake_api([pod("rs-head-x1", "head", "10.244.1.5"), pod("rs-workers-a", "worker", "10.244.2.5"),
                     pod("rs-workers-b", "worker", "10.244.3.5", created="2026-11-25T10:00:01Z")])


def kind_cluster(settings, runner, api: FakeApi, secret: Secret | None = None) -> KindCluster:
    return KindCluster(load_config(), settings, run_id=RUN, secret=secret or Secret.generate(), runner=runner, api=api)


def kube_cluster(settings, api: FakeApi, context: str) -> KubeCluster:
    api.context = context
    return KubeCluster(load_config(), settings, context=context, run_id=RUN, runner=FakeRunner(), api=api)


# --- argv --------------------------------------------------------------------------------------------------------

def test_kind_create_and_delete_argv():
    kind = Kind("serve-chaos-sc0a1b2c", "/tmp/run/kubeconfig")
    assert kind.create("/tmp/run/kind-config.yaml", wait_s=300) == (
        "kind", "create", "cluster", "--name", "serve-chaos-sc0a1b2c", "--config", "/tmp/run/kind-config.yaml",
        "--kubeconfig", "/tmp/run/kubeconfig", "--wait", "300s")
    assert kind.create("/c.yaml", node_image="kindest/node:v1.37.0")[-2:] == ("--image", "kindest/node:v1.37.0")
    assert kind.delete() == ("kind", "delete", "cluster", "--name", "serve-chaos-sc0a1b2c",
                             "--kubeconfig", "/tmp/run/kubeconfig")
    assert kind.context == "kind-serve-chaos-sc0a1b2c"


def test_helm_installs_the_pinned_operator_without_touching_the_users_repos(settings):
    kind = settings.kind
    argv = helm_install_operator(chart=kind.kuberay_chart, repo=kind.kuberay_chart_repo, version=kind.kuberay_version,
                                 namespace="ray-system", context="kind-x", kubeconfig="/k")
    assert argv == ("helm", "upgrade", "--install", "kuberay-operator", "kuberay-operator",
                    "--repo", "https://ray-project.github.io/kuberay-helm/", "--version", "1.7.1",
                    "--namespace", "ray-system", "--create-namespace", "--kube-context", "kind-x", "--kubeconfig", "/k")
    assert re.fullmatch(r"\d+\.\d+\.\d+", kind.kuberay_version), "the operator's chart version must be pinned"


def test_every_command_is_an_argv_of_strings(settings, runner, api):
    cluster = kind_cluster(settings, runner, api)
    api.after_patch.append(drop_pod(api, "rs-workers-b"))
    cluster.kill_node("worker1")
    cluster.stop_node("worker2")
    for argv, _ in runner.calls:
        assert isinstance(argv, tuple) and all(isinstance(a, str) for a in argv)
    assert not runner.calls or all(argv[0] in ("kind", "docker", "helm") for argv, _ in runner.calls)


# --- the allowlist ------------------------------------------------------------------------------------------------

def test_context_allowlist(monkeypatch):
    monkeypatch.delenv(ALLOWED_CONTEXTS_ENV, raising=False)
    patterns = load_settings().allowed_contexts()
    assert patterns == ("kind-*",)
    assert context_allowed("kind-serve-chaos-sc0a1b2c", patterns)
    assert not context_allowed("gke_prod_europe-west1_main", patterns)
    assert not context_allowed("", patterns) and not context_allowed("xkind-a", patterns)
    monkeypatch.setenv(ALLOWED_CONTEXTS_ENV, "staging, lab-*")
    assert load_settings().allowed_contexts() == ("kind-*", "staging", "lab-*")
    assert context_allowed("lab-3", load_settings().allowed_contexts())


def test_a_refusal_says_how_to_allow_the_context():
    with pytest.raises(ContextNotAllowed) as exc:
        require_allowed("prod", ("kind-*",), "kill node worker1")
    message = str(exc.value)
    assert "kill node worker1" in message and "'prod'" in message
    assert f"{ALLOWED_CONTEXTS_ENV}=prod" in message and "allowed_contexts" in message
    assert isinstance(exc.value, StackError)


@pytest.mark.parametrize("operation", [
    lambda c: c.up(), lambda c: c.down(), lambda c: c.kill_node("worker1"), lambda c: c.stop_node("worker1"),
    lambda c: c.start_node("worker1"), lambda c: c.freeze_node("worker1"), lambda c: c.thaw_node("worker1"),
    lambda c: c.add_worker(), lambda c: c.run_driver("pass"), lambda c: c.kill_actor("SERVE_CONTROLLER_ACTOR"),
    lambda c: c.scale("health", "HealthToggle", 3), lambda c: c.apply_serve_config(),
    lambda c: c.freeze_process("worker1", 42), lambda c: c.thaw_process("worker1", 42),
    lambda c: c.terminate_node("worker1"), lambda c: c.upgrade_app("app", "2"),
], ids=["up", "down", "kill", "stop", "start", "freeze", "thaw", "add_worker", "driver", "kill_actor", "scale",
        "apply", "freeze_process", "thaw_process", "terminate", "upgrade"])
def test_destructive_operations_refuse_outside_the_allowlist(settings, api, monkeypatch, operation):
    monkeypatch.delenv(ALLOWED_CONTEXTS_ENV, raising=False)
    cluster = kube_cluster(settings, api, "gke_prod_main")
    with pytest.raises(ContextNotAllowed):
        operation(cluster)
    assert api.changes() == []


def test_reading_needs_no_allowlist(settings, api, monkeypatch):
    monkeypatch.delenv(ALLOWED_CONTEXTS_ENV, raising=False)
    cluster = kube_cluster(settings, api, "gke_prod_main")
    assert cluster.worker_names() == ("worker1", "worker2")
    assert cluster.node_alive("head")
    assert api.calls_of("list", "pods")[-1].body == f"{LABEL_RUN_ID}={RUN},{LABEL_RAY_POD}=true"


# --- fault primitives ---------------------------------------------------------------------------------------------

def test_kill_node_deletes_the_nodes_pod(settings, runner, api):
    cluster = kind_cluster(settings, runner, api)
    cluster.kill_node("worker2")
    assert api.calls_of("delete") == [ApiCall("delete", "pods", NS, "rs-workers-b", 1)]
    assert ("pods", NS, "rs-workers-b") not in api.objects
    assert cluster.kube.context == "kind-serve-chaos-sc0a1b2c"


def test_stop_node_scales_the_group_down_naming_its_pod(settings, runner, api):
    cluster = kind_cluster(settings, runner, api)
    api.after_patch.append(drop_pod(api, "rs-workers-a"))
    cluster.stop_node("worker1")
    patch = api.calls_of("patch", "rayclusters")[-1]
    assert (patch.name, patch.namespace) == ("rs-raycluster-q", NS)
    assert patch.body == [{"op": "test", "path": "/spec/workerGroupSpecs/0/replicas", "value": 2},
                          {"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": 1},
                          {"op": "add", "path": "/spec/workerGroupSpecs/0/scaleStrategy",
                           "value": {"workersToDelete": ["rs-workers-a"]}}]
    assert api.objects[("rayclusters", NS, "rs-raycluster-q")]["spec"]["workerGroupSpecs"][0]["replicas"] == 1
    assert cluster.worker_names() == ("worker2",)


def test_a_concurrent_change_to_the_group_fails_the_scale_instead_of_being_lost(settings, runner, api):
    cluster = kind_cluster(settings, runner, api)
    group = api.objects[("rayclusters", NS, "rs-raycluster-q")]["spec"]["workerGroupSpecs"][0]
    real_get = api.get

    def read_then_someone_else_scales(resource, name, namespace=None):
        found = real_get(resource, name, namespace)
        if resource is RAYCLUSTERS:
            group["replicas"] = 5  # between the harness's read and its patch
        return found

    api.get = read_then_someone_else_scales  # type: ignore[method-assign]
    with pytest.raises(KubeStackError, match="scaling worker group workers by -1 failed: patching: 422.*test failed"):
        cluster.stop_node("worker1")
    assert group["replicas"] == 5


def test_the_head_cannot_be_stopped_on_kubernetes(settings, runner, api):
    with pytest.raises(NotImplementedError, match="stop_node\\('head'\\).*kill_node"):
        kind_cluster(settings, runner, api).stop_node("head")


def test_run_driver_execs_python_in_the_head_pod(settings, runner, api):
    api.exec_answer = lambda pod, container, argv: (0, "killed\n", "")
    cluster = kind_cluster(settings, runner, api)
    cluster.use_agent = False  # the one-shot path ([drivers] fault_agent = false, and the agent's fallback)
    result = cluster.kill_actor("SERVE_CONTROLLER_ACTOR", no_restart=True)
    call = api.calls_of("exec")[-1]
    assert (call.namespace, call.name, call.body[:3]) == (NS, "rs-head-x1", ("ray-head", "python", "-c"))
    script = call.body[-1]
    assert script.startswith("import ray\nray.init(address='auto'")
    assert "ray.kill(ray.get_actor('SERVE_CONTROLLER_ACTOR', namespace='serve'), no_restart=True)" in script
    assert (result.returncode, result.stdout) == (0, "killed\n")


def test_freeze_signals_every_process_of_the_pod_but_its_init(settings, runner, api):
    api.exec_answer = lambda pod, container, argv: (0, "7\n", "")
    cluster = kind_cluster(settings, runner, api)
    cluster.freeze_node("worker1")
    call = api.calls_of("exec")[-1]
    assert call.name == "rs-workers-a" and call.body[0] == "ray-worker"
    assert "signal.SIGSTOP" in call.body[-1] and "(1, me)" in call.body[-1]
    cluster.thaw_node("worker1")
    assert "signal.SIGCONT" in api.calls_of("exec")[-1].body[-1]
    assert [(e.kind, e.detail) for e in cluster.events() if e.source == "harness"] == [
        ("node_frozen", "SIGSTOP to 7 processes"), ("node_thawed", "SIGCONT to 7 processes")]


def test_freeze_process_signals_one_pid_in_the_pod(settings, runner, api):
    cluster = kind_cluster(settings, runner, api)
    cluster.freeze_process("worker1", 42)
    assert api.calls_of("exec")[-1].body[-1] == "import os, signal; os.kill(42, signal.SIGSTOP)"
    cluster.thaw_process("worker1", 42)
    assert api.calls_of("exec")[-1].body[-1] == "import os, signal; os.kill(42, signal.SIGCONT)"
    api.exec_answer = lambda pod, container, argv: (1, "", "ProcessLookupError: [Errno 3] No such process")
    with pytest.raises(KubeStackError, match="(?s)sending SIGSTOP to pid 42.*No such process"):
        cluster.freeze_process("worker1", 42)


def test_terminate_node_deletes_the_pod_with_kubernetes_grace_period(settings, runner, api):
    cluster = kind_cluster(settings, runner, api)
    cluster.terminate_node("worker2")
    assert api.calls_of("delete") == [ApiCall("delete", "pods", NS, "rs-workers-b", 30)]


def test_partitions_and_slow_links_are_refused_with_the_reason(settings, runner, api):
    cluster = kind_cluster(settings, runner, api)
    with pytest.raises(StackError, match="NetworkPolicy that the cluster's CNI is known to enforce"):
        cluster.partition("worker1", "head")
    with pytest.raises(StackError, match="privileged sidecar"):
        cluster.degrade_network("worker1", 1000, 0.05)
    assert cluster.partitioned_from("worker1") == () and cluster.network_degradation("worker1") is None
    assert api.changes() == []


@pytest.mark.parametrize("kind", ["RedisDown", "RedisDownHeadKilled"])
def test_redis_faults_are_refused_with_the_reason_before_anything_is_done(settings, runner, api, kind):
    """The Redis pod's data is an emptyDir: a Redis stopped there would come back empty, which is another fault."""
    fault = make_fault(kind, kind_cluster(settings, runner, api), "redis")
    with pytest.raises(StackError, match="Redis pod's data is an emptyDir, lost with the pod"):
        fault.inject()
    assert api.changes() == []


def test_node_processes_come_from_the_pods_proc(settings, runner, api):
    password = Secret.generate()
    lines = [json.dumps([1, "bash", "/bin/bash -lc ray start"]),
             json.dumps([9, "gcs_server", f"gcs_server --redis_password={password.reveal()}"])]
    api.exec_answer = lambda pod, container, argv: (0, "\n".join(lines), "") if pod == "rs-head-x1" else (1, "", "")
    procs = kind_cluster(settings, runner, api, secret=password).node_processes("head")
    assert [(p.node, p.host_pid, p.ns_pid, p.name) for p in procs] == [("head", 1, 1, "bash"),
                                                                      ("head", 9, 9, "gcs_server")]
    assert password.reveal() not in procs[1].cmdline


def test_a_node_without_a_running_pod_has_no_processes(settings, runner, api):
    cluster = kind_cluster(settings, runner, api)
    cluster.refresh()
    api.put(PODS, pod("rs-workers-a", "worker", "10.244.2.5", terminating=True), NS)
    assert cluster.node_processes("worker1") == ()
    assert not api.calls_of("exec")


def test_scale_patches_serve_config_v2(settings, runner, api):
    import yaml

    cluster = kind_cluster(settings, runner, api)
    cluster.scale("health", "HealthToggle", 3)
    call = api.calls_of("patch", "rayservices")[-1]
    assert (call.name, call.namespace) == ("serve-chaos", NS)
    serve = yaml.safe_load(call.body["spec"]["serveConfigV2"])
    health = next(a for a in serve["applications"] if a["name"] == "health")
    assert health["deployments"][0]["num_replicas"] == 3
    cluster.scale("health", "HealthToggle", None)
    serve = yaml.safe_load(api.objects[("rayservices", NS, "serve-chaos")]["spec"]["serveConfigV2"])
    assert next(a for a in serve["applications"] if a["name"] == "health")["deployments"][0]["num_replicas"] == 2


def test_set_operator_scales_only_the_kind_clusters_own_operator(settings, runner, api):
    api.put(DEPLOYMENTS, {"metadata": {"name": "kuberay-operator"}, "spec": {"replicas": 1},
                          "status": {"availableReplicas": 1}}, "ray-system")
    kind_cluster(settings, runner, api).set_operator(False)
    call = api.calls_of("patch", "deployments")[-1]
    assert (call.namespace, call.name, call.body) == ("ray-system", "kuberay-operator", {"spec": {"replicas": 0}})
    with pytest.raises(NotImplementedError, match="not the harness's to stop"):
        kube_cluster(settings, api, "kind-x").set_operator(False)


def test_with_no_helm_repository_the_operator_comes_from_the_built_manifest(tmp_path, runner, api):
    manifest = tmp_path / "kuberay-operator.yaml"
    manifest.write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ray-system\n---\n"
                        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: kuberay-operator\n"
                        "  namespace: ray-system\nspec:\n  replicas: 1\n")
    settings = load_settings(overrides={
        "kube": {"state_dir": str(tmp_path / "state")},
        "kind": {"kuberay_install": "manifest", "kuberay_manifest": str(manifest),
                 "kuberay_image": "serve-chaos/kuberay-operator:v1.5.0"},
        "timeouts": {"operator_ready_s": 1.0}})
    api.put(DEPLOYMENTS, {"metadata": {"name": "kuberay-operator"}, "status": {"availableReplicas": 1}}, "ray-system")
    kind_cluster(settings, runner, api)._install_operator()
    assert [(c.plural, c.namespace, c.name) for c in api.calls_of("apply")] == [
        ("namespaces", "ray-system", "ray-system"), ("deployments", "ray-system", "kuberay-operator")]
    assert not [argv for argv, _ in runner.calls if argv[0] == "helm"]


def test_manifest_documents_are_read_in_order_with_lists_unpacked():
    text = ("---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n\n---\n"
            "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ServiceAccount, metadata: {name: b}}\n"
            "- {apiVersion: v1, kind: ConfigMap, metadata: {name: c}}\n")
    assert [d["metadata"]["name"] for d in load_documents(text)] == ["a", "b", "c"]


def test_resource_paths():
    assert PODS.path("ns", "p", "log") == "/api/v1/namespaces/ns/pods/p/log"
    assert RAYSERVICES.path("ns") == "/apis/ray.io/v1/namespaces/ns/rayservices"
    assert CRDS.path(name="rayservices.ray.io") == "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/rayservices.ray.io"
    assert NAMESPACES.path("ignored", "x") == "/api/v1/namespaces/x"
    with pytest.raises(ValueError, match="namespaced"):
        Resource("apps/v1", "deployments").path()


def test_the_offline_settings_name_images_the_builder_makes_and_a_manifest_in_its_cache():
    from importlib import metadata

    from harness.kube.settings import KIND_CACHE, OFFLINE_SETTINGS

    offline = load_settings(OFFLINE_SETTINGS)
    assert offline.kind.kuberay_install == "manifest" and offline.kube.image_pull_policy == "Never"
    assert offline.kind.kuberay_manifest_path().parent.parent == KIND_CACHE
    assert offline.kind.kuberay_image.endswith(f":v{offline.kind.kuberay_version}")
    assert offline.kube.ray_image.split(":")[1].startswith(metadata.version("ray"))


def test_scale_patch_refuses_a_negative_group():
    assert scale_patch(1, 2, +1, None)[-1]["value"] == {"workersToDelete": []}
    with pytest.raises(KubeStackError):
        scale_patch(0, 0, -1, "p")


def test_rayservice_readiness():
    assert rayservice_is_ready({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    assert rayservice_is_ready({"status": {"serviceStatus": "Running"}})
    assert not rayservice_is_ready({"status": {"conditions": [{"type": "Ready", "status": "False"}]}})
    assert not rayservice_is_ready({})


# --- stable names over pods ---------------------------------------------------------------------------------------

def test_a_replaced_pod_takes_the_killed_pods_name():
    slots = bind_slots(initial_slots(2), (view("h", "head"), view("a", created="t1"), view("b", created="t2")))
    assert [(s.name, s.pod) for s in slots] == [("head", "h"), ("worker1", "a"), ("worker2", "b")]
    slots = bind_slots(slots, (view("h", "head"), view("a"), view("b", terminating=True), view("c", created="t3")))
    assert [(s.name, s.pod) for s in slots] == [("head", "h"), ("worker1", "a"), ("worker2", "c")]


def test_a_stopped_slot_holds_its_pod_until_it_is_gone_and_takes_no_new_one():
    slots = bind_slots(initial_slots(2), (view("h", "head"), view("a", created="t1"), view("b", created="t2")))
    slots = tuple(Slot(s.name, s.role, "stopped", s.pod) if s.name == "worker1" else s for s in slots)
    slots = bind_slots(slots, (view("h", "head"), view("a"), view("b")))
    assert [(s.name, s.desired, s.pod) for s in slots][1:] == [("worker1", "stopped", "a"), ("worker2", "running", "b")]
    slots = bind_slots(slots, (view("h", "head"), view("b"), view("d", created="t9")))
    assert [(s.name, s.pod) for s in slots] == [("head", "h"), ("worker1", None), ("worker2", "b"), ("worker3", "d")]


def test_the_head_slot_never_takes_a_worker_pod():
    slots = bind_slots(initial_slots(1), (view("a"), view("h2", "head", terminating=True)))
    assert [(s.name, s.pod) for s in slots] == [("head", None), ("worker1", "a")]


# --- port-forwards ------------------------------------------------------------------------------------------------

def echo_as(name: str) -> Callable[[socket.socket], None]:
    """A pod's port that answers each chunk with ``<name>:<chunk>``."""
    def serve(sock: socket.socket) -> None:
        with sock:
            while data := sock.recv(4096):
                sock.sendall(name.encode() + b":" + data)
    return serve


def ask(port: int, payload: bytes) -> bytes:
    """One exchange through a local port; b"" when the other end closed the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(payload)
        try:
            return conn.recv(4096)
        except ConnectionResetError:
            return b""


def test_a_forward_bridges_bytes_and_follows_its_node_to_the_new_pod_on_the_same_local_port(tmp_path):
    api = FakeApi()
    api.port_servers[("pod-a", 8000)] = echo_as("pod-a")
    api.port_servers[("pod-a2", 8000)] = echo_as("pod-a2")
    current = {"worker1": PodAddress("pod-a", None), "head": PodAddress("pod-h", None)}
    forwards = PortForwards(StreamDialer(api, NS), lambda: dict(current), tmp_path)
    fwd = forwards.add("worker1", 8000)
    assert forwards.add("worker1", 8000) == fwd and fwd.base_url == f"http://127.0.0.1:{fwd.local_port}"
    forwards.reconcile()
    forwards.start()
    try:
        assert ask(fwd.local_port, b"hello") == b"pod-a:hello"
        assert api.calls_of("open_port")[-1] == ApiCall("open_port", "pods", NS, "pod-a", 8000)
        del api.port_servers[("pod-a", 8000)]  # the pod died
        current["worker1"] = None
        log = tmp_path / "port-forward-worker1-8000.log"
        # no pod plays worker1: each connection is closed at once (the dead one's refusal, then, once the pods are
        # read again, no pod at all)
        assert wait_until("worker1's relay to see no pod", lambda: ask(fwd.local_port, b"x") == b"" and
                          "no running pod plays worker1" in log.read_text(), timeout_s=REREAD_MIN_S + 0.5, interval_s=0.05)
        current["worker1"] = PodAddress("pod-a2", None)  # its replacement; connections re-read the pods (at most
        # one reading per REREAD_MIN_S), so it is followed within that, before the keeper's next pass
        assert wait_until("worker1's relay to follow it to pod-a2", lambda: ask(fwd.local_port, b"again"),
                          timeout_s=REREAD_MIN_S + 0.5, interval_s=0.05) == b"pod-a2:again"
        assert fwd.local_port == forwards.get("worker1", 8000).local_port
        assert forwards.refused >= 1 and forwards.opened == 2
    finally:
        forwards.stop()
    with pytest.raises(OSError):
        ask(fwd.local_port, b"after stop")


def test_a_stale_pod_that_refuses_is_replaced_by_reading_the_pods_again(tmp_path):
    api = FakeApi()
    api.port_servers[("pod-new", 8000)] = echo_as("pod-new")
    current = {"worker1": PodAddress("pod-old", None)}
    forwards = PortForwards(StreamDialer(api, NS), lambda: dict(current), tmp_path)
    fwd = forwards.add("worker1", 8000)
    forwards.reconcile()
    current["worker1"] = PodAddress("pod-new", None)  # the keeper has not seen the replacement yet
    forwards.start()
    try:
        assert wait_until("worker1's relay to replace the stale pod", lambda: ask(fwd.local_port, b"q"),
                          timeout_s=REREAD_MIN_S + 0.5, interval_s=0.05) == b"pod-new:q"
        opened = [c.name for c in api.calls_of("open_port")]
        assert set(opened) == {"pod-old", "pod-new"} and opened[0] == "pod-old" and opened[-1] == "pod-new"
        assert "pod-old:8000 refused the stream" in (tmp_path / "port-forward-worker1-8000.log").read_text()
    finally:
        forwards.stop()


def test_connections_to_a_node_with_no_pod_share_readings_of_the_pods(tmp_path):
    """A node whose pod is gone: every connection is closed at once, and 40 of them in a burst cost at most a
    reading per REREAD_MIN_S, not one each (on kind each reading is a list from the API server)."""
    calls: list[float] = []

    def running_pods() -> dict[str, PodAddress | None]:
        calls.append(1.0)
        return {"worker1": None}

    forwards = PortForwards(StreamDialer(FakeApi(), NS), running_pods, tmp_path)
    fwd = forwards.add("worker1", 8000)
    forwards.reconcile()
    forwards.start()
    try:
        answers = []
        threads = [threading.Thread(target=lambda: answers.append(ask(fwd.local_port, b"x"))) for _ in range(40)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert answers == [b""] * 40
        assert forwards.refused == 40
        assert 1 <= forwards.readings <= 3, f"{forwards.readings} readings of the pods for 40 connections"
        assert len(calls) == forwards.readings
    finally:
        forwards.stop()


@contextlib.contextmanager
def echo_server(host: str, port: int, name: str) -> Iterator[None]:
    """A real TCP server on ``host:port`` (a loopback address standing in for a pod IP) that echoes as ``name``."""
    listener = socket.create_server((host, port))
    listener.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=echo_as(name), args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=5)


def test_a_direct_forward_connects_to_the_pod_ip_and_follows_the_node_to_its_new_ip(tmp_path):
    port = free_local_port()
    current = {"worker1": PodAddress("pod-a", "127.0.0.2")}
    forwards = PortForwards(DirectDialer(timeout_s=1.0), lambda: dict(current), tmp_path)
    fwd = forwards.add("worker1", port)
    assert fwd.local_port != port
    forwards.reconcile()
    forwards.start()
    try:
        with echo_server("127.0.0.2", port, "pod-a"):
            assert ask(fwd.local_port, b"hello") == b"pod-a:hello"
        assert ask(fwd.local_port, b"x") == b""  # the pod's port is gone: refused, the connection closed
        current["worker1"] = PodAddress("pod-a2", "127.0.0.3")  # the replacement pod, at a new IP
        with echo_server("127.0.0.3", port, "pod-a2"):  # followed once the pods are read again (REREAD_MIN_S)
            assert wait_until("worker1's relay to follow it to its new IP", lambda: ask(fwd.local_port, b"again"),
                              timeout_s=REREAD_MIN_S + 0.5, interval_s=0.05) == b"pod-a2:again"
        current["worker1"] = PodAddress("pod-a3", None)  # scheduled, no IP yet
        log = tmp_path / f"port-forward-worker1-{port}.log"
        assert wait_until("worker1's relay to see a pod with no IP", lambda: ask(fwd.local_port, b"y") == b"" and
                          "pod-a3 has no IP yet" in log.read_text(), timeout_s=REREAD_MIN_S + 0.5, interval_s=0.05)
        assert forwards.opened == 2 and forwards.refused >= 2
        assert f"pod-a (127.0.0.2:{port}) refused the connection" in log.read_text()
    finally:
        forwards.stop()


def test_endpoints_are_loopback_forwards_one_per_running_node(settings, runner, api):
    cluster = kind_cluster(settings, runner, api)
    try:
        endpoints = cluster.endpoints()
        assert [e.node for e in endpoints] == ["head", "worker1", "worker2"]
        assert all(re.fullmatch(r"http://127\.0\.0\.1:\d+/", e.url) for e in endpoints)
        assert len({e.url for e in endpoints}) == 3
        assert cluster.endpoints(route="/health")[0].url.endswith("/health")
        assert cluster.allowed_networks() == ()
    finally:
        cluster.close()


# --- the Redis password -------------------------------------------------------------------------------------------

def test_the_password_travels_only_in_the_secrets_body(settings, runner, api):
    secret = Secret.generate()
    cluster = kind_cluster(settings, runner, api, secret=secret)
    cluster.run_dir.mkdir(parents=True)
    cluster._apply_objects()
    holding = [c for c in api.calls if secret.reveal() in json.dumps(c.body, default=str)]
    assert [(c.verb, c.plural) for c in holding] == [("apply", "secrets")]
    assert all(secret.reveal() not in " ".join(argv) for argv, _ in runner.calls)
    for path in Path(settings.kube.state_dir).rglob("*"):
        assert not path.is_file() or secret.reveal() not in path.read_text(errors="replace")


def test_errors_never_carry_the_password(settings, runner, api):
    secret = Secret.generate()
    api.failures["apply"] = KubeApiError("applying Secret/redis-auth", 422, "Unprocessable Entity",
                                         f"Secret redis-auth invalid: requirepass {secret.reveal()}")
    with pytest.raises(KubeStackError) as exc:
        kind_cluster(settings, runner, api, secret=secret)._apply_objects()
    assert secret.reveal() not in str(exc.value) and "***" in str(exc.value)
    assert "applying the stack's objects failed: applying Secret/redis-auth: 422" in str(exc.value)


def test_collected_logs_are_scrubbed(tmp_path, settings, runner, api):
    secret = Secret.generate()
    api.log_text = lambda pod, container: f"starting gcs with --redis_password={secret.reveal()}\n"
    api.exec_answer = lambda pod, container, argv: (0, json.dumps({"serve/controller_1.log": f"pw {secret.reveal()}"}), "")
    cluster = kind_cluster(settings, runner, api, secret=secret)
    cluster.collect_logs(tmp_path / "logs")
    files = list((tmp_path / "logs").iterdir())
    assert {"pod__rs-head-x1__ray-head.log", "ray__head__serve__controller_1.log", "events.json", "rayservices.json",
            "status.json", "pods.json"} <= {f.name for f in files}
    assert all(secret.reveal() not in f.read_text() for f in files)
    assert json.loads((tmp_path / "logs" / "pods.json").read_text())["items"][0]["metadata"]["name"] == "rs-head-x1"


# --- preflight: missing tools, unreachable clusters, an operator that never comes up ----------------------------

def test_a_missing_tool_is_named_with_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setattr("harness.kube.tools.KIND_CACHE", tmp_path)
    monkeypatch.setattr("shutil.which", lambda tool: None if tool == "kind" else f"/usr/bin/{tool}")
    with pytest.raises(ToolMissing, match=r"kind not found on PATH: install kind v0\.33\.0.*go install"):
        require_tools(("docker", "kind", "helm"))
    monkeypatch.setattr("shutil.which", lambda tool: None)
    for tool, hint in (("docker", "Docker Engine"), ("helm", "Helm 3")):
        with pytest.raises(ToolMissing, match=f"{tool} not found.*{hint}"):
            require_tools((tool,))


def test_a_tool_built_by_make_kind_images_but_not_on_path_is_pointed_to(monkeypatch, tmp_path):
    monkeypatch.setattr("harness.kube.tools.KIND_CACHE", tmp_path)
    monkeypatch.setattr("shutil.which", lambda tool: None)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "kind").write_text("#!/bin/sh\n")
    with pytest.raises(ToolMissing, match=rf"kind not found on PATH, but `make kind-images` built one: "
                                          rf"`export PATH={tmp_path}/bin:\$PATH`"):
        require_tools(("kind",))
    with pytest.raises(ToolMissing, match=r"helm not found on PATH: install Helm 3"):
        require_tools(("helm",))


def test_kind_needs_no_kubectl(settings, runner, api, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda tool: None if tool == "kubectl" else f"/usr/bin/{tool}")
    runner.on(("docker", "info"), (0, "26.1.5", ""))
    kind_cluster(settings, runner, api).preflight()


def test_a_silent_docker_engine_is_reported(runner):
    runner.on(("docker", "info"), (1, "", "Cannot connect to the Docker daemon at unix:///var/run/docker.sock"))
    with pytest.raises(KubeStackError, match="(?s)Docker engine does not answer.*Cannot connect"):
        require_docker_engine(runner)


def test_an_unreachable_cluster_is_reported(settings, api):
    api.ready_problem = "/readyz not reached: GET /readyz: no answer MaxRetryError: connection refused"
    cluster = kube_cluster(settings, api, "kind-lab")
    with pytest.raises(KubeStackError, match="API server of context 'kind-lab' is not ready.*connection refused"):
        cluster.up()
    assert not api.calls_of("create")


def test_a_cluster_without_kuberay_is_reported(settings, api):
    cluster = kube_cluster(settings, api, "kind-lab")
    with pytest.raises(KubeStackError, match="KubeRay is not installed.*helm install kuberay-operator.*--version 1.7.1"):
        cluster.up()
    assert api.calls_of("get", "customresourcedefinitions")[-1].name == "rayservices.ray.io"
    assert not api.calls_of("create")


def test_an_operator_that_never_gets_ready_shows_its_log(settings, runner, api):
    api.put(DEPLOYMENTS, {"metadata": {"name": "kuberay-operator"},
                          "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "kuberay-operator"}}},
                          "status": {}}, "ray-system")
    api.put(PODS, {"metadata": {"name": "kuberay-operator-5d9c", "labels": {"app.kubernetes.io/name": "kuberay-operator"},
                                "creationTimestamp": "2026-11-25T10:00:00Z"},
                   "spec": {"containers": [{"name": "kuberay-operator"}]}, "status": {"phase": "Running"}}, "ray-system")
    api.log_text = lambda pod, container: ("E1125 failed to watch RayService: forbidden\n"
                                           if (pod, container) == ("kuberay-operator-5d9c", "kuberay-operator") else "")
    with pytest.raises(KubeStackError) as exc:
        kind_cluster(settings, runner, api)._wait_operator()
    assert "KubeRay operator" in str(exc.value) and "failed to watch RayService: forbidden" in str(exc.value)
    assert "kuberay-operator-5d9c" in str(exc.value)


@pytest.mark.skipif(importlib.util.find_spec("kubernetes_validate") is None,
                    reason="kubernetes-validate is not installed (up() validates the objects first)")
def test_a_failed_up_removes_what_it_created(settings, runner, api, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda tool: f"/usr/bin/{tool}")
    runner.on(("kind", "get", "clusters"), (0, "", ""))
    runner.on(("kind", "create", "cluster"), (1, "", "ERROR: failed to create cluster: node image not found"))
    cluster = kind_cluster(settings, runner, api)
    with pytest.raises(KubeStackError, match="(?s)creating kind cluster.*node image not found"):
        cluster.up()
    assert runner.argvs("kind", "delete", "cluster", "--name", "serve-chaos-sc0a1b2c")
    assert not cluster.run_dir.exists()


# --- sweeps -------------------------------------------------------------------------------------------------------

def dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def test_leftover_runs():
    host = socket.gethostname()
    assert is_leftover(RunRecord("sc000001", f"{host}/{dead_pid()}", "starting"))
    assert not is_leftover(RunRecord("sc000002", f"{host}/{os.getpid()}", "starting"))
    assert not is_leftover(RunRecord("sc000003", f"{host}/{dead_pid()}", "up"))
    assert not is_leftover(RunRecord("sc000004", f"other-host/{dead_pid()}", "starting"))
    assert is_leftover(RunRecord("sc000005", "", ""))


def test_sweep_kind_removes_only_crashed_runs(settings, runner):
    state = Path(settings.kube.state_dir)
    for run_id, owner, status in (("sc00000a", dead_pid(), "starting"), ("sc00000b", os.getpid(), "starting"),
                                  ("sc00000c", dead_pid(), "up")):
        (state / run_id).mkdir(parents=True)
        (state / run_id / "owner").write_text(f"{socket.gethostname()}/{owner}")
        (state / run_id / "state").write_text(status)
    runner.on(("kind", "get", "clusters"), (0, "kind\nserve-chaos-sc00000a\nserve-chaos-sc00000b\n"
                                               "serve-chaos-sc00000c\nserve-chaos-sc00000d\nmy-serve-chaos-sc00000e\n", ""))
    assert sweep_kind(runner, settings, keep=("sc00000d",)) == ["sc00000a"]
    assert [argv[4] for argv in runner.argvs("kind", "delete")] == ["serve-chaos-sc00000a"]
    assert not (state / "sc00000a").exists() and (state / "sc00000b").exists()


# --- host routes to the pods (kind, reach = "pod-ip") ---------------------------------------------------------------

class HostRoutes:
    """The host's routing table as `ip` shows and changes it (JSON rows as `ip -j -4 route show` prints)."""

    def __init__(self, runner: FakeRunner, rows: list[dict]):
        self.rows = list(rows)
        runner.on(("ip", "-j", "-4", "route", "show"), lambda argv, stdin: (0, json.dumps(self.rows), ""))
        runner.on(("ip", "route", "replace"), self._replace)
        runner.on(("ip", "route", "del"), self._delete)

    def _replace(self, argv, stdin):
        dst, gateway = argv[3], argv[5]
        self.rows = [r for r in self.rows if r["dst"] != dst] + [{"dst": dst, "gateway": gateway, "protocol": "212"}]
        return 0, "", ""

    def _delete(self, argv, stdin):
        before = len(self.rows)
        self.rows = [r for r in self.rows if r["dst"] != argv[3]]
        return (0, "", "") if len(self.rows) < before else (2, "", "RTNETLINK answers: No such process")

    def ours(self) -> dict[str, str]:
        return {r["dst"]: r["gateway"] for r in self.rows if r.get("protocol") == "212"}


def kind_node(name: str, cidr: str | None, address: str | None) -> dict:
    status = {"addresses": [{"type": "Hostname", "address": name}]}
    if address:
        status["addresses"].append({"type": "InternalIP", "address": address})
    return {"metadata": {"name": name}, "spec": {"podCIDR": cidr} if cidr else {}, "status": status}


def test_pod_subnets_are_per_run_and_clear_of_kinds_service_subnet():
    subnets = {pod_subnet(f"sc{n:06x}") for n in range(0, 0xFFFFFF, 9973)}
    assert len(subnets) == 64 and pod_subnet("sc00000a") == ipaddress.IPv4Network("10.138.0.0/16")
    assert all(s.subnet_of(ipaddress.IPv4Network("10.128.0.0/10")) for s in subnets)
    assert not any(s.overlaps(ipaddress.IPv4Network("10.96.0.0/12")) for s in subnets)
    assert pod_subnet(RUN) != pod_subnet("sc0a1b2d")  # consecutive ids, different subnets
    assert kind_config(load_settings(), RUN)["networking"] == {"podSubnet": str(pod_subnet(RUN))}


def test_kind_routes_each_nodes_pods_through_its_container_and_down_removes_only_the_runs(settings, runner, api,
                                                                                            monkeypatch):
    subnet = pod_subnet(RUN)
    net = f"10.{subnet.network_address.packed[1]}"
    other = {"dst": "10.150.1.0/24", "gateway": "172.18.0.9", "protocol": "212"}  # another live run's
    table = HostRoutes(runner, [{"dst": "default", "gateway": "192.0.2.1"}, other,
                                {"dst": "172.18.0.0/16", "protocol": "kernel"}])
    for name, cidr, address in ((f"serve-chaos-{RUN}-control-plane", f"{net}.0.0/24", "172.18.0.2"),
                                (f"serve-chaos-{RUN}-worker", f"{net}.1.0/24", "172.18.0.3")):
        api.put(NODES, kind_node(name, cidr, address))
    monkeypatch.setattr("shutil.which", lambda tool: f"/usr/bin/{tool}")
    cluster = kind_cluster(settings, runner, api)
    cluster.preflight_routes()
    cluster._route_pods()
    assert table.ours() == {"10.150.1.0/24": "172.18.0.9", f"{net}.0.0/24": "172.18.0.2",
                            f"{net}.1.0/24": "172.18.0.3"}
    assert any(e.kind == "pod_routes" and "via 172.18.0.3" in e.detail for e in cluster.events())
    assert isinstance(cluster.forwards.dialer, DirectDialer)
    remove_kind_run(runner, settings, RUN)
    assert table.ours() == {"10.150.1.0/24": "172.18.0.9"}
    assert table.rows[0]["dst"] == "default" and len(table.rows) == 3


def test_a_kind_delete_blocked_by_a_frozen_cgroup_thaws_only_the_runs_and_retries(settings, runner, tmp_path):
    ours, theirs = "a" * 64, "b" * 64
    scope = tmp_path / "freezer" / "docker" / ours / "kubelet.slice" / "cri-containerd-x.scope"
    scope.mkdir(parents=True)
    (scope / "freezer.state").write_text("FROZEN\n")
    (tmp_path / "freezer" / "docker" / ours / "freezer.state").write_text("THAWED\n")
    elsewhere = tmp_path / "freezer" / "docker" / theirs
    elsewhere.mkdir(parents=True)
    (elsewhere / "freezer.state").write_text("FROZEN\n")
    v2 = tmp_path / "system.slice" / f"docker-{ours}.scope" / "kubelet.slice"
    v2.mkdir(parents=True)
    (v2 / "cgroup.freeze").write_text("1\n")
    runner.on(("docker", "ps", f"label=io.x-k8s.kind.cluster=serve-chaos-{RUN}"), (0, f"{ours}\n", ""))
    refused = "Error response from daemon: Could not kill running container: did not receive an exit event"
    deletes = iter([(1, "", refused), (0, "", "")])
    runner.on(("kind", "delete", "cluster"), lambda argv, stdin: next(deletes))
    remove_kind_run(runner, settings, RUN, cgroup_root=tmp_path)
    assert len(runner.argvs("kind", "delete", "cluster")) == 2
    assert (scope / "freezer.state").read_text() == "THAWED" and (v2 / "cgroup.freeze").read_text() == "0"
    assert (elsewhere / "freezer.state").read_text() == "FROZEN\n"  # another container's: not ours to touch


def test_a_kind_delete_that_still_fails_after_thawing_says_so(settings, runner, tmp_path):
    ours = "c" * 64
    (tmp_path / "freezer" / "docker" / ours).mkdir(parents=True)
    (tmp_path / "freezer" / "docker" / ours / "freezer.state").write_text("FROZEN")
    runner.on(("docker", "ps", f"label=io.x-k8s.kind.cluster=serve-chaos-{RUN}"), (0, f"{ours}\n", ""))
    runner.on(("kind", "delete", "cluster"), (1, "", "no exit event"))
    with pytest.raises(KubeStackError, match=r"failed \(after thawing 1 frozen cgroups\)"):
        remove_kind_run(runner, settings, RUN, cgroup_root=tmp_path)
    runner.on(("docker", "ps", f"label=io.x-k8s.kind.cluster=serve-chaos-{RUN}"), (0, "", ""))
    with pytest.raises(KubeStackError, match=r"kind delete cluster --name serve-chaos-sc0a1b2c failed:"):
        remove_kind_run(runner, settings, RUN, cgroup_root=tmp_path)  # nothing frozen: no retry, the plain error
    assert len(runner.argvs("kind", "delete", "cluster")) == 3


def test_kind_waits_for_every_nodes_pod_cidr_and_refuses_one_outside_the_runs_subnet(settings, runner, api):
    HostRoutes(runner, [])
    quick = settings.model_copy(update={"timeouts": settings.timeouts.model_copy(update={"cluster_create_s": 1.5})})
    api.put(NODES, kind_node(f"serve-chaos-{RUN}-worker", None, "172.18.0.3"))
    with pytest.raises(KubeStackError, match=f"(?s)pod routes: .*podCIDR.*nodes without one: serve-chaos-{RUN}-worker"):
        kind_cluster(quick, runner, api)._route_pods()
    api.put(NODES, kind_node(f"serve-chaos-{RUN}-worker", "10.244.1.0/24", "172.18.0.3"))
    with pytest.raises(KubeStackError, match="podCIDR 10.244.1.0/24, outside the run's pod subnet"):
        kind_cluster(quick, runner, api)._route_pods()


def test_kind_refuses_a_pod_subnet_a_host_route_already_covers(settings, runner, api):
    HostRoutes(runner, [{"dst": f"{pod_subnet(RUN).network_address}/8", "gateway": "192.0.2.7"}])
    with pytest.raises(KubeStackError, match=f"a route on this host .* already covers the pod subnet {pod_subnet(RUN)}"):
        kind_cluster(settings, runner, api).preflight_routes()


def test_sweep_kind_removes_routes_whose_cluster_is_gone_and_keeps_live_ones(settings, runner):
    table = HostRoutes(runner, [{"dst": "10.139.2.0/24", "gateway": "172.18.0.4", "protocol": "212"},  # sc00000b
                                {"dst": "10.150.1.0/24", "gateway": "172.18.0.9", "protocol": "212"},  # no cluster
                                {"dst": "10.160.0.0/24", "gateway": "172.18.0.5"}])  # not ours
    runner.on(("kind", "get", "clusters"), (0, "serve-chaos-sc00000b\n", ""))
    state = Path(settings.kube.state_dir) / "sc00000b"
    state.mkdir(parents=True)
    (state / "owner").write_text(f"{socket.gethostname()}/{os.getpid()}")
    (state / "state").write_text("up")
    assert sweep_kind(runner, settings) == ["route 10.150.1.0/24"]
    assert [r["dst"] for r in table.rows] == ["10.139.2.0/24", "10.160.0.0/24"]


def test_sweep_namespaces_removes_only_crashed_runs_of_this_host(settings):
    host = socket.gethostname()
    api = FakeApi(context="kind-lab")

    def ns(run_id: str, owner: str, status: str) -> dict:
        return {"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": f"serve-chaos-{run_id}", "labels": {LABEL_RUN_ID: run_id, LABEL_MANAGED_BY: MANAGED_BY},
                             "annotations": {ANNOTATION_OWNER: owner, ANNOTATION_STATE: status}}}

    for item in (ns("sc00000a", f"{host}/{dead_pid()}", "starting"), ns("sc00000b", f"{host}/{os.getpid()}", "starting"),
                 ns("sc00000c", f"elsewhere/{dead_pid()}", "starting")):
        api.put(NAMESPACES, item)
    api.put(NAMESPACES, {"metadata": {"name": "default"}})
    api.put(RAYSERVICES, {"metadata": {"name": "serve-chaos"}}, "serve-chaos-sc00000a")
    assert sweep_namespaces(api, settings) == ["sc00000a"]
    assert api.calls_of("list", "namespaces")[0].body == f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    assert [(c.plural, c.name) for c in api.calls_of("delete")] == [("rayservices", "serve-chaos"),
                                                                    ("namespaces", "serve-chaos-sc00000a")]
    assert {name for (plural, _, name) in api.objects if plural == "namespaces"} == {
        "serve-chaos-sc00000b", "serve-chaos-sc00000c", "default"}


def test_a_namespace_without_the_run_label_is_never_deleted(settings):
    api = FakeApi(context="kind-lab")
    api.put(NAMESPACES, {"metadata": {"name": NS, "labels": {}}})
    with pytest.raises(KubeStackError, match="did not create it and will not delete it"):
        remove_namespace(api, settings, RUN)
    assert not api.calls_of("delete")
    assert remove_namespace(api, settings, "sc0fffff") is False  # none: nothing to do


def test_a_failed_rayservice_wait_is_said_and_the_namespace_still_goes(settings):
    api = FakeApi(context="kind-lab")
    api.put(NAMESPACES, {"metadata": {"name": NS, "labels": {LABEL_RUN_ID: RUN, LABEL_MANAGED_BY: MANAGED_BY}}})
    api.put(RAYSERVICES, {"metadata": {"name": "serve-chaos"}}, NS)
    api.failures["delete:rayservices"] = KubeApiError("deleting RayService/serve-chaos", 403, "Forbidden")
    said: list[str] = []
    assert remove_namespace(api, settings, RUN, say=said.append) is True
    assert [(c.plural, c.name) for c in api.calls_of("delete")] == [("rayservices", "serve-chaos"), ("namespaces", NS)]
    assert len(said) == 1 and "403 Forbidden" in said[0] and "Redis cleanup may not have run" in said[0]


def test_images_are_pulled_once_and_loaded_where_they_run(settings, runner, api):
    nodes = "serve-chaos-sc0a1b2c-control-plane\nserve-chaos-sc0a1b2c-worker\nserve-chaos-sc0a1b2c-worker2\n"
    runner.on(("kind", "get", "nodes"), (0, nodes, ""))
    runner.on(("docker", "image", "inspect"), lambda argv, stdin: (0 if argv[-1].startswith("redis") else 1, "", ""))
    kind_cluster(settings, runner, api)._preload_images()
    assert runner.argvs("docker", "pull") == [("docker", "pull", "rayproject/ray:2.60.0")]
    assert runner.argvs("kind", "load") == [
        ("kind", "load", "docker-image", "rayproject/ray:2.60.0", "--name", "serve-chaos-sc0a1b2c",
         "--nodes", "serve-chaos-sc0a1b2c-worker,serve-chaos-sc0a1b2c-worker2"),
        ("kind", "load", "docker-image", "redis:7.4.2", "--name", "serve-chaos-sc0a1b2c",
         "--nodes", "serve-chaos-sc0a1b2c-control-plane"),
    ]
