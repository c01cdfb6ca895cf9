"""The RayService checker: KubeRay's v1 fields (transcribed from its Go types) catch misspelled, misplaced and
mistyped fields; embedded core types are checked against Kubernetes' strict schemas."""

from __future__ import annotations

import copy

import pytest

from harness.kube.kuberay_schema import RAYSERVICE, Obj, check_rayservice
from harness.kube.manifests import stack_manifests
from harness.kube.settings import load_settings
from harness.stack.config import load_config

pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")


@pytest.fixture(scope="module")
def rayservice() -> dict:
    return stack_manifests(load_config(), load_settings(), "sc0a1b2c", password=None, on_kind=True).rayservice.body


def broken(rayservice: dict) -> dict:
    return copy.deepcopy(rayservice)


def paths(problems) -> list[str]:
    return [p.path for p in problems]


def test_the_generated_rayservice_passes(rayservice):
    assert check_rayservice(rayservice) == ()


def test_a_misspelled_field_is_caught_with_the_right_name(rayservice):
    rs = broken(rayservice)
    cluster = rs["spec"]["rayClusterConfig"]
    cluster["gcsFaultToleranceOption"] = cluster.pop("gcsFaultToleranceOptions")
    problems = check_rayservice(rs)
    assert paths(problems) == ["spec.rayClusterConfig.gcsFaultToleranceOption"]
    assert "did you mean 'gcsFaultToleranceOptions'?" in problems[0].message


def test_a_misplaced_field_is_caught_with_where_it_belongs(rayservice):
    rs = broken(rayservice)
    rs["spec"]["gcsFaultToleranceOptions"] = rs["spec"]["rayClusterConfig"].pop("gcsFaultToleranceOptions")
    problems = check_rayservice(rs)
    assert paths(problems) == ["spec.gcsFaultToleranceOptions"]
    assert "belongs at spec.rayClusterConfig.gcsFaultToleranceOptions" in problems[0].message


def test_a_field_of_a_nested_kuberay_type_is_checked(rayservice):
    rs = broken(rayservice)
    rs["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]["redisPasword"] = {"value": "x"}
    rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["scaleStrategy"] = {"workerToDelete": ["p"]}
    assert sorted(paths(check_rayservice(rs))) == [
        "spec.rayClusterConfig.gcsFaultToleranceOptions.redisPasword",
        "spec.rayClusterConfig.workerGroupSpecs[0].scaleStrategy.workerToDelete",
    ]


def test_an_old_api_field_is_refused(rayservice):
    rs = broken(rayservice)
    rs["spec"]["serveConfig"] = {"importPath": "sleepy_pid:app"}  # ray.io/v1alpha1, gone from v1
    assert paths(check_rayservice(rs)) == ["spec.serveConfig"]


def test_a_core_field_inside_a_pod_template_is_checked(rayservice):
    rs = broken(rayservice)
    rs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    problems = check_rayservice(rs)
    assert paths(problems) == ["spec.rayClusterConfig.headGroupSpec.template.spec.containers[0]"]
    assert "imagePullPolcy" in problems[0].message


def test_the_secret_reference_is_checked_as_a_core_envvarsource(rayservice):
    rs = broken(rayservice)
    rs["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]["redisPassword"]["valueFrom"] = {
        "secretRef": {"name": "redis-auth", "key": "password"}}
    assert paths(check_rayservice(rs)) == ["spec.rayClusterConfig.gcsFaultToleranceOptions.redisPassword.valueFrom"]


def test_wrong_types_and_missing_required_fields(rayservice):
    rs = broken(rayservice)
    rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicas"] = "2"
    rs["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 2
    del rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["groupName"]
    rs["apiVersion"] = "ray.io/v1alpha1"
    assert sorted(paths(check_rayservice(rs))) == sorted([
        "spec.rayClusterConfig.workerGroupSpecs[0].replicas",
        "spec.rayClusterConfig.headGroupSpec.rayStartParams",
        "spec.rayClusterConfig.workerGroupSpecs[0].groupName",
        "apiVersion",
    ])


def test_the_schema_names_the_fields_the_harness_relies_on():
    def at(*keys: str):
        spec = RAYSERVICE
        for key in keys:
            assert isinstance(spec, Obj), keys
            spec = spec.get(key)
            assert spec is not None, f"{'.'.join(keys)} missing from the transcription"
        return spec

    at("spec", "serveConfigV2")
    at("spec", "upgradeStrategy", "type")
    at("spec", "rayClusterConfig", "gcsFaultToleranceOptions", "redisPassword", "valueFrom")
    at("spec", "rayClusterConfig", "gcsFaultToleranceOptions", "externalStorageNamespace")
    at("spec", "rayClusterConfig", "headGroupSpec", "rayStartParams")
    workers = at("spec", "rayClusterConfig", "workerGroupSpecs").item
    assert {"groupName", "replicas", "minReplicas", "maxReplicas", "scaleStrategy"} <= {n for n, _ in workers.fields}
