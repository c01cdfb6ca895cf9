"""``ClientApi`` against a real API server: kube-apiserver and etcd on loopback, no kubelet, no controllers.

The binaries are the ones ``cluster/kind/build_images.py`` builds into the kind cache's ``bin/`` (Kubernetes
v1.34.4, etcd v3.6.5); KubeRay's CRDs come from the ray-operator Go module at the offline settings' version.
What this proves: the calls the kube and kind backends make (ready, get, list, create, server-side apply, merge
and JSON patches, delete) behave as ``KubeApi`` says on a real server, and the harness's real objects, the
RayService included, validate against the real schemas (KubeRay's CRDs with their OpenAPI validation).

Marked ``apiserver`` and left out of ``make test``:
``.venv/bin/python -m pytest tests/test_kube_apiserver.py -m apiserver -p no:cacheprovider -s``.
Missing binaries FAIL the module with the command that builds them: it never skips.
There is no kube-controller-manager: Deployments make no pods and a deleted namespace stays Terminating.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from harness.kube.api import (
    CRDS,
    DEPLOYMENTS,
    NAMESPACES,
    PODS,
    RAYCLUSTERS,
    RAYSERVICES,
    SECRETS,
    ClientApi,
    KubeApiError,
    Resource,
    load_documents,
)
from harness.kube.backend import scale_patch
from harness.kube.kube import KubeCluster, remove_namespace, sweep_namespaces
from harness.kube.manifests import (
    ANNOTATION_OWNER,
    LABEL_MANAGED_BY,
    LABEL_RUN_ID,
    MANAGED_BY,
    REDIS_NAME,
    REDIS_SECRET,
    run_names,
    stack_manifests,
)
from harness.kube.settings import KIND_CACHE, OFFLINE_SETTINGS, KubeSettings, load_settings
from harness.kube.tools import KubeStackError
from harness.secrets import Secret
from harness.stack.config import load_config
from harness.waiting import WaitTimeout, wait_until

pytestmark = [pytest.mark.apiserver,
              pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")]

BIN = KIND_CACHE / "bin"
BUILD = ".venv/bin/python cluster/kind/build_images.py --only apiserver etcd"
CONTEXT = "kind-apiserver-test"
KUBERAY_MODULE = "github.com/ray-project/kuberay/ray-operator"
KUBERAY_CRDS = ("ray.io_rayclusters.yaml", "ray.io_rayservices.yaml")
ETCD_READY_S = 30.0
APISERVER_READY_S = 90.0
CRD_ESTABLISHED_S = 30.0
MODULE_DOWNLOAD_S = 300.0
STOP_S = 15.0
CONFIGMAPS = Resource("v1", "configmaps")
SERVICES = Resource("v1", "services")


# --- the server ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Server:
    url: str
    token: str
    kubeconfig: Path
    tmp: Path
    log: Path

    def api(self, request_timeout_s: float = 20.0) -> ClientApi:
        return ClientApi(CONTEXT, str(self.kubeconfig), request_timeout_s=request_timeout_s)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    return "\n".join(text[-lines:])


def start(argv: list[str], log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    """Its own process group, by the PID it was started with: SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=STOP_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_S)
    except ProcessLookupError:
        pass


def wait_serving(what: str, proc: subprocess.Popen, log: Path, probe, timeout_s: float) -> None:
    """Until ``probe`` answers or the process exits; either failure fails the test with the log's tail."""
    seen = ["nothing yet"]

    def ready_or_dead() -> bool:
        if proc.poll() is not None:
            return True
        seen[0] = probe()
        return seen[0] is None

    try:
        wait_until(f"{what} to serve", ready_or_dead, timeout_s=timeout_s, interval_s=0.2,
                   describe=lambda: f"last answer: {seen[0]}\n{what} log ({log}):\n{tail(log)}")
    except WaitTimeout as exc:
        pytest.fail(str(exc), pytrace=False)
    if proc.returncode is not None:
        pytest.fail(f"{what} exited with status {proc.returncode} before serving; its log ({log}):\n{tail(log)}",
                    pytrace=False)


def etcd_health(url: str) -> str | None:
    try:
        answer = requests.get(f"{url}/health", timeout=2)
    except requests.RequestException as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if answer.ok and answer.json().get("health") == "true" else f"{answer.status_code} {answer.text[:200]}"


def apiserver_ready(url: str, token: str) -> str | None:
    try:
        answer = requests.get(f"{url}/readyz", headers={"Authorization": f"Bearer {token}"}, verify=False, timeout=2)
    except requests.RequestException as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if answer.status_code == 200 and answer.text.strip() == "ok" else \
        f"{answer.status_code} {answer.text[-300:]}"


def service_account_keys(tmp: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private, public = tmp / "sa.key", tmp / "sa.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def write_kubeconfig(path: Path, url: str, token: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": CONTEXT,
        "clusters": [{"name": CONTEXT, "cluster": {"server": url, "insecure-skip-tls-verify": True}}],
        "users": [{"name": CONTEXT, "user": {"token": token}}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT}}],
    }))
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory, request) -> Server:
    missing = [name for name in ("etcd", "kube-apiserver") if not (BIN / name).is_file()]
    if missing:
        pytest.fail(f"the API server tests cannot run: {', '.join(missing)} not built in {BIN}; build them with "
                    f"`{BUILD}`", pytrace=False)
    tmp = tmp_path_factory.mktemp("apiserver")
    began = time.monotonic()

    client_port, peer_port = free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{client_port}"
    etcd_log = tmp / "etcd.log"
    etcd = start([str(BIN / "etcd"), "--name", "test", "--data-dir", str(tmp / "etcd"),
                  "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
                  "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
                  "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
                  "--initial-cluster", f"test=http://127.0.0.1:{peer_port}",
                  "--unsafe-no-fsync", "--log-level", "warn"], etcd_log)
    request.addfinalizer(lambda: stop(etcd))
    wait_serving("etcd", etcd, etcd_log, lambda: etcd_health(etcd_url), ETCD_READY_S)
    etcd_s = time.monotonic() - began

    token = secrets.token_urlsafe(32)
    (tmp / "tokens.csv").write_text(f'{token},test-admin,test-admin-uid,"system:masters"\n')
    private, public = service_account_keys(tmp)
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    log = tmp / "kube-apiserver.log"
    apiserver = start([str(BIN / "kube-apiserver"),
                       f"--etcd-servers={etcd_url}",
                       "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={port}",
                       f"--cert-dir={tmp / 'certs'}",
                       f"--service-account-key-file={public}", f"--service-account-signing-key-file={private}",
                       "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                       f"--token-auth-file={tmp / 'tokens.csv'}",
                       "--authorization-mode=RBAC",
                       "--service-cluster-ip-range=10.96.0.0/16",
                       "--v=2"], log)
    request.addfinalizer(lambda: stop(apiserver))
    wait_serving("kube-apiserver", apiserver, log, lambda: apiserver_ready(url, token), APISERVER_READY_S)
    total = time.monotonic() - began
    print(f"\n[apiserver] etcd ready in {etcd_s:.1f}s; etcd + kube-apiserver ready in {total:.1f}s "
          f"({url}, logs in {tmp})", flush=True)
    return Server(url, token, write_kubeconfig(tmp / "kubeconfig", url, token), tmp, log)


@pytest.fixture(scope="module")
def api(server) -> Iterator[ClientApi]:
    client = server.api()
    yield client
    client.close()


# --- KubeRay's CRDs and the harness's stack -------------------------------------------------------------------------

def kuberay_crd_dir() -> Path:
    version = f"v{load_settings(OFFLINE_SETTINGS).kind.kuberay_version}"
    try:
        out = subprocess.run(("go", "mod", "download", "-json", f"{KUBERAY_MODULE}@{version}"),
                             env={**os.environ, "GOFLAGS": ""}, cwd=os.environ.get("TMPDIR", "/tmp"),
                             capture_output=True, text=True, timeout=MODULE_DOWNLOAD_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"cannot download {KUBERAY_MODULE}@{version} (needs go and the module proxy): {exc}",
                    pytrace=False)
    if out.returncode != 0:
        pytest.fail(f"go mod download {KUBERAY_MODULE}@{version} failed:\n{out.stderr[-2000:]}{out.stdout[-1000:]}",
                    pytrace=False)
    return Path(json.loads(out.stdout)["Dir"]) / "config" / "crd" / "bases"


def established(api: ClientApi, name: str) -> bool:
    crd = api.get(CRDS, name)
    conditions = ((crd or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


@pytest.fixture(scope="module")
def kuberay_crds(api) -> list[str]:
    folder = kuberay_crd_dir()
    crds = [doc for name in KUBERAY_CRDS for doc in load_documents((folder / name).read_text())]
    assert {c["kind"] for c in crds} == {"CustomResourceDefinition"}, [c.get("kind") for c in crds]
    api.apply(crds)
    names = [c["metadata"]["name"] for c in crds]
    for name in names:
        wait_until(f"CRD {name} to be Established", lambda name=name: established(api, name),
                   timeout_s=CRD_ESTABLISHED_S, interval_s=0.2,
                   describe=lambda name=name: f"its status: {(api.get(CRDS, name) or {}).get('status')}")
    return names


@dataclass(frozen=True)
class Stack:
    settings: KubeSettings
    run_id: str
    namespace: str
    selector: str
    password: Secret
    bodies: list[dict]


def new_run_id() -> str:
    return f"t{secrets.token_hex(4)}"


def settings_for(server: Server, **timeouts: float) -> KubeSettings:
    overrides: dict = {"kube": {"state_dir": str(server.tmp / "state")}}
    if timeouts:
        overrides["timeouts"] = timeouts
    return load_settings(overrides=overrides)


@pytest.fixture(scope="module")
def stack(server, api, kuberay_crds) -> Stack:
    """The harness's real objects of one run, applied (namespace first, as the backends apply them)."""
    settings = settings_for(server)
    run_id = new_run_id()
    password = Secret.generate()
    objects = stack_manifests(load_config(), settings, run_id, password=password, on_kind=True,
                              owner=f"{socket.gethostname()}/{os.getpid()}")
    bodies = [m.body for m in objects.all()]
    api.apply(bodies)
    names = run_names(settings, run_id)
    return Stack(settings, run_id, names.namespace, names.selector, password, bodies)


def versions(api: ClientApi, stack: Stack) -> dict[str, str]:
    """kind/name -> resourceVersion of each object of the stack, as the server holds it."""
    out = {}
    for body in stack.bodies:
        found = api._kind(body)  # the resource the apply used
        ns = None if not found.resource.namespaced else stack.namespace
        obj = api.get(found.resource, body["metadata"]["name"], ns)
        assert obj is not None, f"{body['kind']}/{body['metadata']['name']} was applied but is not there"
        out[f"{body['kind']}/{body['metadata']['name']}"] = obj["metadata"]["resourceVersion"]
    return out


# --- 1. ready -------------------------------------------------------------------------------------------------------

def test_ready_on_the_live_server_and_a_reason_on_a_closed_port(server, api, tmp_path):
    assert api.ready() is None

    closed = write_kubeconfig(tmp_path / "closed", f"https://127.0.0.1:{free_port()}", server.token)
    dead = ClientApi(CONTEXT, str(closed), request_timeout_s=5)
    began = time.monotonic()
    reason = dead.ready()
    assert isinstance(reason, str) and "not reached" in reason, reason
    assert time.monotonic() - began < 30, "ready() on a closed port took too long to answer"

    wrong = write_kubeconfig(tmp_path / "wrong-token", server.url, "not-the-token")
    refused = ClientApi(CONTEXT, str(wrong), request_timeout_s=5)
    reason = refused.ready()
    assert isinstance(reason, str) and "401" in reason, reason


# --- 2. create, get, conflict -------------------------------------------------------------------------------------

def test_create_get_missing_and_conflict(api):
    name = f"created-{secrets.token_hex(3)}"
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"purpose": "test"}}}
    made = api.create(body)
    assert made["metadata"]["name"] == name and made["metadata"]["uid"]
    got = api.get(NAMESPACES, name)
    assert got is not None and got["metadata"]["uid"] == made["metadata"]["uid"]
    assert got["metadata"]["labels"]["purpose"] == "test"
    assert api.get(NAMESPACES, f"{name}-missing") is None
    assert api.get(SECRETS, "missing", name) is None
    with pytest.raises(KubeApiError) as raised:
        api.create(body)
    assert raised.value.status == 409, str(raised.value)
    assert "already exists" in str(raised.value)


# --- 3. the harness's stack, applied -------------------------------------------------------------------------------

def test_the_harness_stack_applies_and_validates_against_kuberays_schema(api, stack):
    ns = api.get(NAMESPACES, stack.namespace)
    assert ns is not None and ns["metadata"]["labels"][LABEL_RUN_ID] == stack.run_id

    secrets_ = api.list(SECRETS, stack.namespace, selector=stack.selector)
    assert [s["metadata"]["name"] for s in secrets_] == [REDIS_SECRET]
    deployments = api.list(DEPLOYMENTS, stack.namespace, selector=stack.selector)
    assert [d["metadata"]["name"] for d in deployments] == [REDIS_NAME]
    assert api.list(PODS, stack.namespace, selector=stack.selector) == []  # no controllers: no pods
    assert api.list(SECRETS, stack.namespace, selector=f"{LABEL_RUN_ID}=another-run") == []
    configmaps = api.list(CONFIGMAPS, stack.namespace, selector=stack.selector)
    assert sorted(c["metadata"]["name"] for c in configmaps) == sorted(
        b["metadata"]["name"] for b in stack.bodies if b["kind"] == "ConfigMap")
    services = api.list(SERVICES, stack.namespace, selector=stack.selector)
    assert [s["spec"]["clusterIP"].startswith("10.96.") for s in services] == [True]

    sent = next(b for b in stack.bodies if b["kind"] == "RayService")
    rayservice = api.get(RAYSERVICES, sent["metadata"]["name"], stack.namespace)
    assert rayservice is not None
    assert rayservice["spec"]["serveConfigV2"] == sent["spec"]["serveConfigV2"]
    groups = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert [g["groupName"] for g in groups] == [stack.settings.kube.worker_group]

    before = versions(api, stack)
    api.apply(stack.bodies)
    assert versions(api, stack) == before, "applying the same objects again changed them"


def test_kuberays_schema_refuses_a_rayservice_it_does_not_take(api, stack):
    sent = next(b for b in stack.bodies if b["kind"] == "RayService")
    name = f"{sent['metadata']['name']}-bad"
    bad = {**sent, "metadata": {**sent["metadata"], "name": name},
           "spec": {**sent["spec"], "serveConfigV2": 42}}
    # Server-side apply builds a typed patch from the CRD's schema first, and answers a type mismatch with
    # 500 (not 422): a refusal all the same, naming the field.
    with pytest.raises(KubeApiError) as raised:
        api.apply([bad])
    assert raised.value.status == 500, str(raised.value)
    assert ".spec.serveConfigV2: expected string" in str(raised.value)
    with pytest.raises(KubeApiError) as raised:
        api.create(bad)
    assert raised.value.status == 422, str(raised.value)
    assert "spec.serveConfigV2" in str(raised.value)
    assert api.get(RAYSERVICES, name, stack.namespace) is None


# --- 4. patches -------------------------------------------------------------------------------------------------------

def test_merge_patch_on_the_rayservice_is_visible(api, stack):
    sent = next(b for b in stack.bodies if b["kind"] == "RayService")
    name = sent["metadata"]["name"]
    changed = sent["spec"]["serveConfigV2"] + "\n# patched by the test\n"
    answer = api.patch(RAYSERVICES, name, {"spec": {"serveConfigV2": changed}}, "merge", stack.namespace)
    assert answer["spec"]["serveConfigV2"] == changed
    assert api.get(RAYSERVICES, name, stack.namespace)["spec"]["serveConfigV2"] == changed
    api.apply([sent])  # back to the harness's own
    assert api.get(RAYSERVICES, name, stack.namespace)["spec"]["serveConfigV2"] == sent["spec"]["serveConfigV2"]


def test_scale_patch_on_a_raycluster_tests_the_replicas_it_read(api, stack):
    sent = next(b for b in stack.bodies if b["kind"] == "RayService")
    name = f"scaled-{secrets.token_hex(3)}"
    cluster = {"apiVersion": "ray.io/v1", "kind": "RayCluster",
               "metadata": {"name": name, "namespace": stack.namespace, "labels": {LABEL_RUN_ID: stack.run_id}},
               "spec": sent["spec"]["rayClusterConfig"]}
    made = api.create(cluster)
    replicas = made["spec"]["workerGroupSpecs"][0]["replicas"]
    assert replicas >= 1, made["spec"]["workerGroupSpecs"][0]

    answer = api.patch(RAYCLUSTERS, name, scale_patch(0, replicas, -1, "worker-pod-a"), "json", stack.namespace)
    group = answer["spec"]["workerGroupSpecs"][0]
    assert group["replicas"] == replicas - 1
    assert group["scaleStrategy"] == {"workersToDelete": ["worker-pod-a"]}
    group = api.get(RAYCLUSTERS, name, stack.namespace)["spec"]["workerGroupSpecs"][0]
    assert group["replicas"] == replicas - 1

    with pytest.raises(KubeApiError) as raised:  # a stale read: the test op does not match
        api.patch(RAYCLUSTERS, name, scale_patch(0, replicas, -1, "worker-pod-b"), "json", stack.namespace)
    assert raised.value.status == 422, str(raised.value)
    group = api.get(RAYCLUSTERS, name, stack.namespace)["spec"]["workerGroupSpecs"][0]
    assert group["replicas"] == replicas - 1 and group["scaleStrategy"]["workersToDelete"] == ["worker-pod-a"]

    grown = api.patch(RAYCLUSTERS, name, scale_patch(0, replicas - 1, 1, None), "json", stack.namespace)
    assert grown["spec"]["workerGroupSpecs"][0]["replicas"] == replicas
    assert grown["spec"]["workerGroupSpecs"][0]["scaleStrategy"] == {"workersToDelete": []}
    assert api.delete(RAYCLUSTERS, name, stack.namespace) is True


# --- 5. delete ---------------------------------------------------------------------------------------------------------

def test_delete_says_whether_there_was_something_to_delete(api, stack):
    name = f"doomed-{secrets.token_hex(3)}"
    api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "b"}},
               stack.namespace)
    assert api.get(CONFIGMAPS, name, stack.namespace) is not None
    assert api.delete(CONFIGMAPS, name, stack.namespace, grace_period_s=0) is True
    assert api.get(CONFIGMAPS, name, stack.namespace) is None
    assert api.delete(CONFIGMAPS, name, stack.namespace) is False
    assert api.delete(PODS, "no-such-pod", stack.namespace, grace_period_s=0) is False
    assert api.delete(PODS, "no-such-pod", "no-such-namespace") is False


# --- 6. the password ---------------------------------------------------------------------------------------------------

def test_the_password_is_in_the_cluster_and_in_no_error(server, api, stack):
    password = stack.password.reveal()
    stored = api.get(SECRETS, REDIS_SECRET, stack.namespace)
    import base64

    assert base64.b64decode(stored["data"]["password"]).decode() == password  # applied, for real

    secret = next(b for b in stack.bodies if b["kind"] == "Secret")
    bad_key = {**secret, "metadata": {**secret["metadata"], "name": "bad-key"},
               "stringData": {"not a valid key!": password}}
    with pytest.raises(KubeApiError) as raised:
        api.apply([bad_key])
    assert raised.value.status == 422, str(raised.value)
    assert password not in str(raised.value) and password not in repr(raised.value.args)

    not_base64 = {**secret, "metadata": {**secret["metadata"], "name": "not-base64"}, "stringData": None,
                  "data": {"password": password + "!"}}
    with pytest.raises(KubeApiError) as raised:
        api.apply([not_base64])
    assert raised.value.status == 500, str(raised.value)  # SSA's conversion failure, as for a CRD's type mismatch
    assert "illegal base64 data" in str(raised.value) and password not in str(raised.value)

    # Where the server echoes a value it refuses (a Service's type), the raw error carries it; the backends'
    # one path to the API (RayServiceCluster._kube) scrubs it with the run's Secret.
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echoed", "namespace": stack.namespace},
               "spec": {"type": password, "ports": [{"port": 6379}]}}
    with pytest.raises(KubeApiError) as raised:
        api.apply([service])
    echoed = password in str(raised.value)
    cluster = KubeCluster(load_config(), stack.settings, context=CONTEXT, kubeconfig=str(server.kubeconfig),
                          run_id=stack.run_id, secret=stack.password, api=api)
    try:
        with pytest.raises(KubeStackError) as scrubbed:
            cluster._kube("applying the echoed Service", lambda: api.apply([service]))
    finally:
        cluster.forwards.stop()
    assert not isinstance(scrubbed.value, KubeApiError)
    assert password not in str(scrubbed.value)
    assert ("***" in str(scrubbed.value)) == echoed, (echoed, str(scrubbed.value))
    print(f"\n[apiserver] the server echoes a refused value in its message: {echoed}", flush=True)


# --- 7. sweeping and removing namespaces ----------------------------------------------------------------------------

def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait(timeout=STOP_S)
    return proc.pid


def run_namespace(api: ClientApi, settings: KubeSettings, owner: str) -> str:
    run_id = new_run_id()
    names = run_names(settings, run_id)
    api.apply([{"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": names.namespace, "labels": dict(names.labels),
                             "annotations": {ANNOTATION_OWNER: owner, "serve-chaos/state": "starting"}}}])
    return run_id


def test_sweep_requests_deletion_of_a_crashed_runs_namespace_only(server, api, stack):
    settings = settings_for(server, api_call_s=2.0, namespace_deleted_s=3.0)
    host = socket.gethostname()
    crashed = run_namespace(api, settings, f"{host}/{dead_pid()}")
    live = run_namespace(api, settings, f"{host}/{os.getpid()}")
    elsewhere = run_namespace(api, settings, f"another-host-{secrets.token_hex(2)}/1")
    prefix = settings.kube.namespace_prefix

    # No namespace controller runs here: the crashed run's namespace stays Terminating, and the sweep says so
    # within namespace_deleted_s instead of hanging.
    began = time.monotonic()
    with pytest.raises(KubeStackError) as raised:
        sweep_namespaces(api, settings, keep=(stack.run_id,))
    assert time.monotonic() - began < 30, "the sweep took far longer than its timeouts"
    message = str(raised.value)
    assert f"namespace {prefix}-{crashed} to be gone" in message, message
    assert "timed out after 3s" in message, message

    gone = api.get(NAMESPACES, f"{prefix}-{crashed}")
    assert gone is not None and gone["metadata"].get("deletionTimestamp"), gone
    assert gone["status"]["phase"] == "Terminating"
    for kept in (live, elsewhere, stack.run_id):
        ns = api.get(NAMESPACES, f"{prefix}-{kept}")
        assert ns is not None and not ns["metadata"].get("deletionTimestamp"), ns

    # A second removal of the same, still Terminating, namespace also times out clearly (it is not refused).
    with pytest.raises(KubeStackError) as again:
        remove_namespace(api, settings, crashed)
    assert f"namespace {prefix}-{crashed} to be gone" in str(again.value), str(again.value)


def test_remove_namespace_refuses_one_the_harness_did_not_label(server, api):
    settings = settings_for(server, api_call_s=2.0, namespace_deleted_s=3.0)
    run_id = new_run_id()
    name = f"{settings.kube.namespace_prefix}-{run_id}"
    api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {LABEL_RUN_ID: run_id}}})
    with pytest.raises(KubeStackError) as raised:
        remove_namespace(api, settings, run_id)
    assert "did not create it" in str(raised.value)
    assert not api.get(NAMESPACES, name)["metadata"].get("deletionTimestamp")
    assert remove_namespace(api, settings, new_run_id()) is False
    assert LABEL_MANAGED_BY not in api.get(NAMESPACES, name)["metadata"]["labels"]


# --- the rest of KubeApi that a server without kubelets can answer ----------------------------------------------------

def test_selectors_with_several_and_set_based_requirements(api, stack):
    both = f"{LABEL_RUN_ID}={stack.run_id},{LABEL_MANAGED_BY}={MANAGED_BY}"
    assert [s["metadata"]["name"] for s in api.list(SECRETS, stack.namespace, selector=both)] == [REDIS_SECRET]
    in_set = f"{LABEL_RUN_ID} in (nobody,{stack.run_id})"
    assert [s["metadata"]["name"] for s in api.list(SECRETS, stack.namespace, selector=in_set)] == [REDIS_SECRET]
    assert api.list(SECRETS, stack.namespace, selector=f"{LABEL_RUN_ID}!={stack.run_id},{LABEL_RUN_ID}") == []
    names = [n["metadata"]["name"] for n in api.list(NAMESPACES, selector=both)]
    assert names == [stack.namespace]


def test_a_json_patch_given_as_a_tuple_is_still_a_json_patch(api, stack):
    name = f"tupled-{secrets.token_hex(3)}"
    api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"n": "1"}},
               stack.namespace)
    ops = ({"op": "test", "path": "/data/n", "value": "1"}, {"op": "replace", "path": "/data/n", "value": "2"})
    assert api.patch(CONFIGMAPS, name, ops, "json", stack.namespace)["data"] == {"n": "2"}
    with pytest.raises(KubeApiError) as raised:
        api.patch(CONFIGMAPS, name, ops, "json", stack.namespace)
    assert raised.value.status == 422, str(raised.value)
    assert api.delete(CONFIGMAPS, name, stack.namespace) is True


def test_an_object_of_a_kind_the_server_does_not_serve(api, stack):
    for api_version, kind in (("ray.io/v1", "RayNothing"), ("example.invalid/v1", "Widget")):
        body = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "w", "namespace": stack.namespace}}
        with pytest.raises(KubeStackError) as raised:
            api.apply([body])
        assert f"serves no kind {kind} in {api_version}" in str(raised.value), str(raised.value)


def test_a_namespaced_object_without_a_namespace_is_refused_before_sending(api):
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "nowhere"}}
    for call in (lambda: api.apply([body]), lambda: api.create(body)):
        with pytest.raises(KubeStackError) as raised:
            call()
        assert "names no namespace" in str(raised.value), str(raised.value)


@pytest.fixture(scope="module")
def unscheduled_pod(api, stack) -> str:
    """A pod no scheduler places (no node): exec, logs and port-forward to it are refused by the server."""
    api.apply([{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}], stack.namespace)
    name = f"unscheduled-{secrets.token_hex(3)}"
    api.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"containers": [{"name": "main", "image": "serve-chaos/none:0"}],
                         "automountServiceAccountToken": False}}, stack.namespace)
    return name


def test_exec_on_a_pod_without_a_node_or_a_missing_pod_is_a_failed_command(api, stack, unscheduled_pod):
    for pod in (unscheduled_pod, "no-such-pod"):
        began = time.monotonic()
        result = api.exec(stack.namespace, pod, "main", ["true"], timeout_s=10)
        assert time.monotonic() - began < 15, f"exec into {pod} did not give up in time"
        assert result.returncode == -1 and not result.ok, result
        assert result.stderr.startswith("exec "), result
    missing = api.exec(stack.namespace, "no-such-pod", "main", ["true"], timeout_s=10).stderr
    assert missing == 'exec refused: 404 Not Found: pods "no-such-pod" not found', missing
    unplaced = api.exec(stack.namespace, unscheduled_pod, "main", ["true"], timeout_s=10).stderr
    assert unplaced.startswith("exec refused: 400 Bad Request: "), unplaced


def test_logs_of_a_pod_without_a_node_or_a_missing_pod_say_why(api, stack, unscheduled_pod):
    missing = api.logs(stack.namespace, "no-such-pod", "main", tail=10)
    assert missing.startswith("(no log: 404") and "not found" in missing, missing
    assert api.logs(stack.namespace, unscheduled_pod, "main", tail=10) == ""  # 204: no node, no log yet
    wrong = api.logs(stack.namespace, unscheduled_pod, "no-such-container", tail=10)
    assert wrong.startswith("(no log: 400") and "no-such-container" in wrong, wrong


def test_port_forward_to_a_missing_pod_raises_with_the_status(api, stack, unscheduled_pod):
    with pytest.raises(KubeApiError) as raised:
        api.open_port(stack.namespace, "no-such-pod", 6379)
    assert raised.value.status == 404 and raised.value.not_found, str(raised.value)
    assert str(raised.value) == 'port-forward to no-such-pod:6379: 404 Not Found: pods "no-such-pod" not found'
    with pytest.raises(KubeApiError) as raised:
        api.open_port(stack.namespace, unscheduled_pod, 6379)
    assert raised.value.status == 400, str(raised.value)
    print(f"\n[apiserver] port-forward to a pod without a node: {raised.value}", flush=True)


def test_streams_opening_in_one_thread_never_divert_requests_of_another(api, stack):
    """The client's ``stream`` swaps its ApiClient's ``call_api`` while a stream opens; on a shared client, a
    list in another thread then went out as a websocket ("Missing required parameter `ports`"), and two
    overlapping swaps left the client broken for good (seen on kind, every scenario after the first)."""
    errors: list[str] = []
    done = threading.Event()

    def open_streams() -> None:
        try:
            for _ in range(40):
                try:
                    api.open_port(stack.namespace, "no-such-pod", 8000)
                except KubeApiError as exc:
                    if not exc.not_found:
                        errors.append(f"open_port: {exc}")
        finally:
            done.set()

    openers = [threading.Thread(target=open_streams) for _ in range(2)]
    for thread in openers:
        thread.start()
    lists = 0
    while not done.is_set() or any(t.is_alive() for t in openers):
        try:
            api.list(NAMESPACES)
            lists += 1
        except KubeApiError as exc:
            errors.append(f"list: {exc}")
    for thread in openers:
        thread.join()
    assert not errors, errors[:3]
    assert lists > 0
    assert api.get(NAMESPACES, stack.namespace) is not None  # the client still works afterwards
