"""The Kubernetes objects of a run, offline: built from the same StackConfig, valid for the Kubernetes we
target (kubernetes-validate, strict), labelled with the run id, and without the Redis password on disk."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from harness.kube.kuberay_schema import K8S_VERSION, check_stack
from harness.kube.manifests import (
    LABEL_RUN_ID,
    PASSWORD_PLACEHOLDER,
    kind_config,
    stack_manifests,
    write_files,
)
from harness.kube.settings import load_settings
from harness.secrets import Secret
from harness.stack.config import REPO_ROOT, ConfigError, load_config
from harness.stack.serve_config import build_serve_config

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")

GENERATED = REPO_ROOT / "cluster" / "kube" / "generated"
RUN = "sc0a1b2c"


@pytest.fixture(scope="module")
def settings():
    return load_settings()


def manifests(settings, password=None, on_kind=True, **overrides):
    return stack_manifests(load_config(overrides=overrides or None), settings, RUN, password=password,
                           on_kind=on_kind)


def rayservice(m):
    return m.rayservice.body


def cluster_spec(m):
    return rayservice(m)["spec"]["rayClusterConfig"]


@pytest.mark.parametrize("overrides", [
    {},
    {"gcs": {"gcs_ft": False}},
    {"redis": {"enabled": False}},
    {"workers": {"count": 3}, "resources": {"head": {"pinned": 1.0}}},
], ids=["guide", "no-gcs-ft", "no-redis", "three-workers"])
@pytest.mark.parametrize("on_kind", [True, False], ids=["kind", "kube"])
def test_every_core_object_validates_strictly(settings, overrides, on_kind):
    m = manifests(settings, password=Secret.generate(), on_kind=on_kind, **overrides)
    core = [x for x in m.all() if x.kind != "RayService"]
    assert {x.kind for x in core} >= {"Namespace", "ConfigMap"}
    for obj in core:
        # kubernetes-validate --strict: unknown fields are errors; raises on the first problem
        assert kubernetes_validate.validate(obj.body, K8S_VERSION, strict=True) == K8S_VERSION
    assert check_stack(m) == ()


def test_strict_validation_can_fail(settings):
    m = manifests(settings)
    deployment = copy.deepcopy(next(x for x in m.redis if x.kind == "Deployment").body)
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_rayservice_is_the_guides_stack(settings):
    m = manifests(settings, password=Secret.generate())
    rs, spec = rayservice(m), cluster_spec(m)
    assert (rs["apiVersion"], rs["kind"]) == ("ray.io/v1", "RayService")
    serve = yaml.safe_load(rs["spec"]["serveConfigV2"])
    assert serve == build_serve_config(load_config()).to_dict()
    app = next(a for a in serve["applications"] if a["name"] == "app")
    assert app["deployments"][0]["num_replicas"] == 6 and app["deployments"][0]["ray_actor_options"] == {"num_cpus": 0}
    assert any(a["name"] == "health" for a in serve["applications"])
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "2"
    group = spec["workerGroupSpecs"][0]
    assert (group["replicas"], group["minReplicas"]) == (2, 0)
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] == "rayproject/ray:2.60.0" and spec["rayVersion"] == "2.60.0"
    assert rs["spec"]["upgradeStrategy"] == {"type": "None"}


def test_gcs_fault_tolerance_reads_the_password_from_the_secret(settings):
    ft = cluster_spec(manifests(settings, password=Secret.generate()))["gcsFaultToleranceOptions"]
    assert ft["redisAddress"] == "redis:6379"
    assert ft["redisPassword"] == {"valueFrom": {"secretKeyRef": {"name": "redis-auth", "key": "password"}}}
    assert ft["externalStorageNamespace"] == RUN
    assert "gcsFaultToleranceOptions" not in cluster_spec(manifests(settings, gcs={"gcs_ft": False}))
    assert "gcsFaultToleranceOptions" not in cluster_spec(manifests(settings, redis={"enabled": False}))


def test_redis_has_appendonly_and_requirepass_from_the_secret(settings):
    secret = Secret.generate()
    m = manifests(settings, password=secret)
    assert m.secret is not None and m.secret.body["stringData"]["password"] == secret.reveal()
    assert m.secret.body["stringData"]["redis.conf"] == f"requirepass {secret.reveal()}\n"
    deployment = next(x for x in m.redis if x.kind == "Deployment").body
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:1] == ["/etc/serve-chaos-redis/redis.conf"]
    assert container["args"][container["args"].index("--appendonly") + 1] == "yes"
    assert secret.reveal() not in yaml.safe_dump(deployment)
    volume = deployment["spec"]["template"]["spec"]["volumes"][0]
    assert volume["secret"]["secretName"] == "redis-auth"
    no_redis = manifests(settings, redis={"enabled": False})
    assert no_redis.secret is None and no_redis.redis == ()


def test_app_code_comes_in_a_configmap_on_pythonpath(settings):
    m = manifests(settings)
    data = m.app_code[0].body["data"]
    for name in ("sleepy_pid.py", "health_toggle.py"):
        assert data[name] == (REPO_ROOT / "cluster" / "apps" / name).read_text()
    for group in (cluster_spec(m)["headGroupSpec"], cluster_spec(m)["workerGroupSpecs"][0]):
        pod = group["template"]["spec"]
        container = pod["containers"][0]
        mount = next(v for v in container["volumeMounts"] if v["name"] == "app-code-0")["mountPath"]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["PYTHONPATH"] == mount
        assert next(v for v in pod["volumes"] if v["name"] == "app-code-0")["configMap"]["name"] == "app-code-0"
        assert "runtimeEnv" not in yaml.safe_dump(rayservice(m))  # nothing is downloaded at run time


def _labelled(obj: dict) -> bool:
    return obj.get("metadata", {}).get("labels", {}).get(LABEL_RUN_ID) == RUN


def test_everything_carries_the_run_id(settings):
    m = manifests(settings, password=Secret.generate())
    for obj in m.all():
        assert _labelled(obj.body), f"{obj.kind}/{obj.name} lacks {LABEL_RUN_ID}"
        assert obj.kind == "Namespace" or obj.body["metadata"]["namespace"] == f"serve-chaos-{RUN}"
    spec = cluster_spec(m)
    for template in (spec["headGroupSpec"]["template"], spec["workerGroupSpecs"][0]["template"]):
        assert _labelled(template)  # KubeRay copies template labels to the pods: the sweep finds them
    redis = next(x for x in m.redis if x.kind == "Deployment").body
    assert _labelled(redis["spec"]["template"])
    assert all(n["labels"][LABEL_RUN_ID] == RUN for n in kind_config(settings, RUN)["nodes"])


def test_kind_config_has_a_control_plane_and_three_workers(settings):
    config = kind_config(settings, RUN)
    assert (config["kind"], config["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker", "worker", "worker"]
    assert config["name"] == f"serve-chaos-{RUN}"


def test_redis_stays_on_the_control_plane_only_on_kind(settings):
    def pod_spec(on_kind):
        return next(x for x in manifests(settings, on_kind=on_kind).redis if x.kind == "Deployment").body["spec"][
            "template"]["spec"]
    assert pod_spec(True)["nodeSelector"] == {"node-role.kubernetes.io/control-plane": ""}
    assert "nodeSelector" not in pod_spec(False)


def test_workers_with_different_resources_are_refused(settings):
    with pytest.raises(ConfigError, match="same custom resources"):
        manifests(settings, resources={"worker1": {"pinned": 100.0}})


def test_files_on_disk_hold_the_placeholder_never_a_password(tmp_path, settings, monkeypatch):
    password = "not-on-disk-" + Secret.generate().reveal()
    monkeypatch.setenv("SERVE_CHAOS_REDIS_PASSWORD", password)
    written = write_files(tmp_path, load_config(), settings, RUN)
    text = "".join(p.read_text() for p in written)
    assert password not in text
    secret = yaml.safe_load((tmp_path / "01-redis-secret.yaml").read_text())
    assert secret["stringData"]["password"] == PASSWORD_PLACEHOLDER


def test_generated_files_are_up_to_date(tmp_path, settings):
    """cluster/kube/generated/ is what the generator writes now: regenerate with
    `serve-chaos manifests --out cluster/kube/generated/` after changing the config or the code."""
    written = write_files(tmp_path, load_config(), settings, "sc000000")
    assert sorted(p.name for p in written) == sorted(p.name for p in GENERATED.glob("*.yaml"))
    for path in written:
        assert path.read_text() == (GENERATED / path.name).read_text(), f"{path.name} is stale"


def test_generated_files_parse(settings):
    for path in GENERATED.glob("*.yaml"):
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
        assert docs, path
