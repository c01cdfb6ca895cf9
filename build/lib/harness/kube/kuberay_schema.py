"""Offline checks of the objects the harness applies: core Kubernetes objects with kubernetes-validate
(strict: unknown fields are errors), and KubeRay's RayService against the fields KubeRay's v1 API defines.

kubernetes-validate has no schema for RayService, so ``RAYSERVICE`` below is a transcription of the
fields the harness may write, taken from KubeRay's Go types (github.com/ray-project/kuberay, v1.7):

- ``ray-operator/apis/ray/v1/rayservice_types.go``: RayService, RayServiceSpec (json tags
  ``rayClusterConfig``, ``serveConfigV2``, ``upgradeStrategy``, ``serveService``, ...),
  RayServiceUpgradeStrategy, IncrementalUpgradeOptions;
- ``ray-operator/apis/ray/v1/raycluster_types.go``: RayClusterSpec, HeadGroupSpec, WorkerGroupSpec,
  ScaleStrategy, GcsFaultToleranceOptions, RedisCredential, AutoscalerOptions.

Core types embedded in them (PodTemplateSpec, Service, EnvVarSource, ObjectMeta, ...) are checked against
kubernetes-validate's strict definitions of the Kubernetes version the harness targets. A misspelled field
is reported with the nearest known name; a field in the wrong place with where it belongs.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterator
from dataclasses import dataclass

import jsonschema
from packaging.version import Version
from referencing import Registry, Resource

from harness.kube.objects import StackManifests
from harness.stack.config import ConfigError

# kind v0.33.0's default node image runs Kubernetes 1.37; kubernetes-validate 1.37.0 bundles its schemas
K8S_VERSION = "1.37"


@dataclass(frozen=True)
class FieldProblem:
    path: str  # e.g. spec.rayClusterConfig.gcsFaultToleranceOption
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


# --- the schema's building blocks ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scalar:
    type_name: str  # "string" | "integer" | "boolean"


@dataclass(frozen=True)
class StrMap:
    """Go ``map[string]string``."""


@dataclass(frozen=True)
class ListOf:
    item: Spec


@dataclass(frozen=True)
class Core:
    """A core Kubernetes type, by its definition name in the OpenAPI schema."""

    definition: str


@dataclass(frozen=True)
class Unchecked:
    """A field KubeRay defines whose contents the harness never writes (e.g. Gateway API objects)."""


@dataclass(frozen=True)
class Obj:
    fields: tuple[tuple[str, Spec], ...]
    required: tuple[str, ...] = ()

    def get(self, key: str) -> Spec | None:
        return next((spec for name, spec in self.fields if name == key), None)


Spec = Scalar | StrMap | ListOf | Core | Unchecked | Obj

STR, INT, BOOL = Scalar("string"), Scalar("integer"), Scalar("boolean")


def _core(name: str) -> Core:
    return Core(f"io.k8s.api.core.v1.{name}")


# RedisCredential (raycluster_types.go)
_REDIS_CREDENTIAL = Obj((("valueFrom", _core("EnvVarSource")), ("value", STR)))

# GcsFaultToleranceOptions (raycluster_types.go); redisAddress carries no omitempty in v1.4-v1.7
_GCS_FT = Obj((
    ("redisUsername", _REDIS_CREDENTIAL),
    ("redisPassword", _REDIS_CREDENTIAL),
    ("externalStorageNamespace", STR),
    ("redisAddress", STR),
), required=("redisAddress",))

# HeadGroupSpec (raycluster_types.go)
_HEAD_GROUP = Obj((
    ("template", _core("PodTemplateSpec")),
    ("headService", _core("Service")),
    ("enableIngress", BOOL),
    ("rayStartParams", StrMap()),
    ("serviceType", STR),
), required=("template",))

# ScaleStrategy (raycluster_types.go)
_SCALE_STRATEGY = Obj((("workersToDelete", ListOf(STR)),))

# WorkerGroupSpec (raycluster_types.go)
_WORKER_GROUP = Obj((
    ("suspend", BOOL),
    ("groupName", STR),
    ("replicas", INT),
    ("minReplicas", INT),
    ("maxReplicas", INT),
    ("idleTimeoutSeconds", INT),
    ("rayStartParams", StrMap()),
    ("template", _core("PodTemplateSpec")),
    ("scaleStrategy", _SCALE_STRATEGY),
    ("numOfHosts", INT),
), required=("groupName", "template"))

# AutoscalerOptions (raycluster_types.go)
_AUTOSCALER = Obj((
    ("resources", _core("ResourceRequirements")),
    ("image", STR),
    ("imagePullPolicy", STR),
    ("securityContext", _core("SecurityContext")),
    ("idleTimeoutSeconds", INT),
    ("upscalingMode", STR),
    ("version", STR),
    ("env", ListOf(_core("EnvVar"))),
    ("envFrom", ListOf(_core("EnvFromSource"))),
    ("volumeMounts", ListOf(_core("VolumeMount"))),
))

# RayClusterSpec (raycluster_types.go)
_RAY_CLUSTER_SPEC = Obj((
    ("suspend", BOOL),
    ("managedBy", STR),
    ("autoscalerOptions", _AUTOSCALER),
    ("headServiceAnnotations", StrMap()),
    ("enableInTreeAutoscaling", BOOL),
    ("gcsFaultToleranceOptions", _GCS_FT),
    ("headGroupSpec", _HEAD_GROUP),
    ("rayVersion", STR),
    ("workerGroupSpecs", ListOf(_WORKER_GROUP)),
), required=("headGroupSpec",))

# RayServiceUpgradeStrategy, IncrementalUpgradeOptions (rayservice_types.go)
_UPGRADE_STRATEGY = Obj((
    ("type", STR),
    ("incrementalUpgradeOptions", Obj((
        ("maxSurgePercent", INT), ("stepSizePercent", INT), ("intervalSeconds", INT), ("gatewayClassName", STR),
    ))),
))

# RayServiceSpec (rayservice_types.go)
_RAYSERVICE_SPEC = Obj((
    ("rayClusterDeletionDelaySeconds", INT),
    ("serviceUnhealthySecondThreshold", INT),  # deprecated, still accepted
    ("deploymentUnhealthySecondThreshold", INT),  # deprecated, still accepted
    ("serveService", _core("Service")),
    ("gateway", Unchecked()),
    ("httpRoute", Unchecked()),
    ("upgradeStrategy", _UPGRADE_STRATEGY),
    ("serveConfigV2", STR),
    ("rayClusterConfig", _RAY_CLUSTER_SPEC),
    ("excludeHeadPodFromServeSvc", BOOL),
), required=("rayClusterConfig",))

# RayService (rayservice_types.go); status is the operator's
RAYSERVICE = Obj((
    ("apiVersion", STR),
    ("kind", STR),
    ("metadata", Core("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")),
    ("spec", _RAYSERVICE_SPEC),
    ("status", Unchecked()),
), required=("apiVersion", "kind", "metadata", "spec"))


# --- checking ---------------------------------------------------------------------------------------------------

def _kubernetes_validate():
    """kubernetes-validate, imported when a check needs it (it carries every Kubernetes version's schemas)."""
    try:
        import kubernetes_validate
        import kubernetes_validate.utils
    except ImportError:
        raise ConfigError("the offline checks of Kubernetes objects need kubernetes-validate: "
                          "`pip install kubernetes-validate` (the project pins it)") from None
    return kubernetes_validate


def _where(spec: Spec, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(field name, its full path) for every field of the schema, lists as ``[]``."""
    if isinstance(spec, Obj):
        for name, child in spec.fields:
            path = f"{prefix}.{name}" if prefix else name
            yield name, path
            yield from _where(child, path)
    elif isinstance(spec, ListOf):
        yield from _where(spec.item, prefix + "[]")


@functools.cache
def _field_index() -> dict[str, tuple[str, ...]]:
    index: dict[str, list[str]] = {}
    for name, path in _where(RAYSERVICE):
        index.setdefault(name, []).append(path)
    return {k: tuple(v) for k, v in index.items()}


def _unknown(key: str, obj: Obj, path: str) -> FieldProblem:
    here = f"{path}.{key}" if path else key
    hint = ""
    elsewhere = _field_index().get(key)
    if elsewhere:
        hint = f"; it belongs at {' or '.join(elsewhere)}"
    else:
        close = difflib.get_close_matches(key, [name for name, _ in obj.fields], n=1, cutoff=0.6)
        if close:
            hint = f"; did you mean {close[0]!r}?"
    return FieldProblem(here, f"unknown field: KubeRay's v1 API has no {key!r} here{hint}")


_PY_TYPES = {"string": (str,), "integer": (int,), "boolean": (bool,)}


def _check(value: object, spec: Spec, path: str, version: str) -> Iterator[FieldProblem]:
    if isinstance(spec, Unchecked):
        return
    if isinstance(spec, Scalar):
        ok = isinstance(value, _PY_TYPES[spec.type_name]) and not (spec.type_name == "integer" and isinstance(value, bool))
        if not ok:
            yield FieldProblem(path, f"expected a {spec.type_name}, got {type(value).__name__} {value!r}")
    elif isinstance(spec, StrMap):
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            yield FieldProblem(path, "expected a map of strings to strings (quote numbers: \"2\")")
    elif isinstance(spec, ListOf):
        if not isinstance(value, list):
            yield FieldProblem(path, f"expected a list, got {type(value).__name__}")
            return
        for i, item in enumerate(value):
            yield from _check(item, spec.item, f"{path}[{i}]", version)
    elif isinstance(spec, Core):
        yield from check_core(value, spec.definition, path, version)
    elif isinstance(spec, Obj):
        if not isinstance(value, dict):
            yield FieldProblem(path, f"expected an object, got {type(value).__name__}")
            return
        for key, item in value.items():
            child = spec.get(key)
            if child is None:
                yield _unknown(key, spec, path)
            else:
                yield from _check(item, child, f"{path}.{key}" if path else key, version)
        for key in spec.required:
            if key not in value:
                yield FieldProblem(f"{path}.{key}" if path else key, "required field missing")


def check_rayservice(obj: dict, version: str = K8S_VERSION) -> tuple[FieldProblem, ...]:
    """Every field of the RayService against KubeRay's v1 fields (and embedded core types against Kubernetes')."""
    problems = list(_check(obj, RAYSERVICE, "", version))
    if obj.get("apiVersion") != "ray.io/v1":
        problems.append(FieldProblem("apiVersion", f"expected 'ray.io/v1', got {obj.get('apiVersion')!r}"))
    if obj.get("kind") != "RayService":
        problems.append(FieldProblem("kind", f"expected 'RayService', got {obj.get('kind')!r}"))
    return tuple(problems)


@functools.cache
def _definitions(version: str) -> tuple[str, Registry]:
    """(the definitions' base URI, a registry holding them) from kubernetes-validate's strict schemas."""
    kv = _kubernetes_validate()
    wanted = Version(version)
    known = [v for v in kv.utils.all_versions() if Version(kv.utils.major_minor(v)) <= wanted]
    if not known:
        raise ConfigError(f"kubernetes-validate {kv.version.__version__} has no schemas for Kubernetes {version}")
    contents = kv.utils.schema_contents(f"kubernetes-json-schema/v{known[-1]}-local-strict/_definitions.json", version)
    return contents["$id"], Registry().with_resource(contents["$id"], Resource.from_contents(contents))


def check_core(value: object, definition: str, path: str, version: str = K8S_VERSION) -> Iterator[FieldProblem]:
    """A core Kubernetes value (e.g. a PodTemplateSpec) against the strict definition of ``version``."""
    base, registry = _definitions(version)
    validator = jsonschema.Draft202012Validator({"$ref": f"{base}#/$defs/{definition}"}, registry=registry)
    for error in sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path))):
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        yield FieldProblem(f"{path}{where}", error.message)


def check_core_object(obj: dict, version: str = K8S_VERSION) -> tuple[FieldProblem, ...]:
    """A whole core object (Namespace, Secret, Deployment, ...) with ``kubernetes-validate --strict``."""
    kv = _kubernetes_validate()
    name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    try:
        kv.validate(obj, version, strict=True)
    except kv.ValidationError as exc:
        where = ".".join(str(p) for p in exc.absolute_path) or "(top)"
        return (FieldProblem(f"{name} {where}", exc.message),)
    except kv.SchemaNotFoundError as exc:
        return (FieldProblem(name, exc.message),)
    return ()


def check_stack(manifests: StackManifests, version: str = K8S_VERSION) -> tuple[FieldProblem, ...]:
    """Every object of a run: core objects strictly, the RayService against KubeRay's fields."""
    problems: list[FieldProblem] = []
    for m in manifests.all():
        if m.kind == "RayService":
            problems += [FieldProblem(f"RayService/{m.name} {p.path}", p.message) for p in check_rayservice(m.body, version)]
        else:
            problems += check_core_object(m.body, version)
    return tuple(problems)
