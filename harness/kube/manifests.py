"""The Kubernetes objects of one run, generated from the same StackConfig as the local stack.

A run lives in its own namespace: a Secret with Redis's password (generated per run), the app code in
ConfigMaps (mounted into every Ray pod and put on PYTHONPATH, so nothing is downloaded at run time), Redis
(Service and Deployment, ``appendonly``, ``requirepass`` from the Secret), and KubeRay's RayService
(``ray.io/v1``) whose ``serveConfigV2`` is the Serve config the local backend applies, and whose
``gcsFaultToleranceOptions`` read the password from the Secret (dropped when ``gcs_ft`` is off).
Everything carries the run id label. The kind cluster's own config is here too.

    serve-chaos manifests --out cluster/kube/generated/

writes them as YAML for people to read; the Secret written to disk holds a placeholder, never a password.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import yaml

from harness.kube.objects import Manifest, StackManifests
from harness.kube.routes import pod_subnet
from harness.kube.settings import KubeSettings
from harness.secrets import Secret
from harness.stack.config import ConfigError, StackConfig
from harness.stack.serve_config import ServeConfig, build_serve_config

LABEL_RUN_ID = "serve-chaos/run-id"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "serve-chaos-harness"
LABEL_ROLE = "serve-chaos/role"
LABEL_RAY_POD = "serve-chaos/ray-pod"
ANNOTATION_OWNER = "serve-chaos/owner"
ANNOTATION_STATE = "serve-chaos/state"

HEAD_CONTAINER = "ray-head"
WORKER_CONTAINER = "ray-worker"
REDIS_NAME = "redis"
REDIS_SECRET = "redis-auth"
SECRET_PASSWORD_KEY = "password"
SECRET_CONF_KEY = "redis.conf"
PASSWORD_PLACEHOLDER = "<generated per run at apply time; never written to disk>"
CONFIGMAP_MAX_BYTES = 1_000_000  # the API server's limit is 1 MiB per object
KIND_CLUSTER_PREFIX = "serve-chaos-"


@dataclass(frozen=True)
class RunNames:
    """Names of what one run creates (all inside its namespace, except the kind cluster)."""

    run_id: str
    namespace: str
    rayservice: str
    worker_group: str
    kind_cluster: str

    @property
    def labels(self) -> dict[str, str]:
        return {LABEL_RUN_ID: self.run_id, LABEL_MANAGED_BY: MANAGED_BY}

    @property
    def selector(self) -> str:
        return f"{LABEL_RUN_ID}={self.run_id}"


def run_names(settings: KubeSettings, run_id: str) -> RunNames:
    return RunNames(run_id, f"{settings.kube.namespace_prefix}-{run_id}", settings.kube.rayservice_name,
                    settings.kube.worker_group, f"{KIND_CLUSTER_PREFIX}{run_id}")


# --- pieces ---------------------------------------------------------------------------------------------------

def _meta(names: RunNames, name: str, extra: dict[str, str] | None = None) -> dict:
    return {"name": name, "namespace": names.namespace, "labels": {**names.labels, **(extra or {})}}


def owner_annotation() -> str:
    import os

    return f"{socket.gethostname()}/{os.getpid()}"


def namespace_manifest(names: RunNames, state: str = "starting", owner: str | None = None) -> Manifest:
    body = {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": names.namespace, "labels": dict(names.labels),
                         "annotations": {ANNOTATION_OWNER: owner or owner_annotation(), ANNOTATION_STATE: state}}}
    return Manifest("Namespace", names.namespace, body)


def secret_manifest(names: RunNames, cfg: StackConfig, password: Secret | None) -> Manifest:
    """Redis's password, and a redis.conf that sets it. ``password=None`` gives the placeholder for files on disk."""
    value = password.reveal() if password is not None else PASSWORD_PLACEHOLDER
    body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": _meta(names, REDIS_SECRET),
            "stringData": {SECRET_PASSWORD_KEY: value, SECRET_CONF_KEY: f"requirepass {value}\n"}}
    return Manifest("Secret", REDIS_SECRET, body)


@dataclass(frozen=True)
class AppCode:
    """One python_path folder delivered as a ConfigMap: its files, and where each goes in the mount."""

    index: int
    configmap: Manifest
    items: tuple[tuple[str, str], ...]  # (ConfigMap key, path under the mount)


def app_code(names: RunNames, cfg: StackConfig) -> tuple[AppCode, ...]:
    """Every ``*.py`` under each ``[app] python_path`` folder, one ConfigMap per folder."""
    out = []
    for index, folder in enumerate(cfg.app.python_path):
        root = cfg.resolve(folder)
        if not root.is_dir():
            raise ConfigError(f"key 'app.python_path': {root} is not a folder")
        files = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
        if not files:
            raise ConfigError(f"key 'app.python_path': {root} holds no .py file to deliver")
        data, items = {}, []
        for path in files:
            rel = path.relative_to(root).as_posix()
            key = rel.replace("/", "__")
            data[key] = path.read_text()
            items.append((key, rel))
        size = sum(len(k) + len(v.encode()) for k, v in data.items())
        if size > CONFIGMAP_MAX_BYTES:
            raise ConfigError(f"key 'app.python_path': {root} holds {size} bytes of Python, more than a ConfigMap "
                              f"takes ({CONFIGMAP_MAX_BYTES}); bake the app into the Ray image instead")
        name = f"app-code-{index}"
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(names, name), "data": data}
        out.append(AppCode(index, Manifest("ConfigMap", name, body), tuple(items)))
    return tuple(out)


def redis_manifests(names: RunNames, cfg: StackConfig, settings: KubeSettings, on_kind: bool) -> tuple[Manifest, ...]:
    port = cfg.redis.port
    labels = {**names.labels, LABEL_ROLE: "redis"}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": _meta(names, REDIS_NAME, {LABEL_ROLE: "redis"}),
               "spec": {"type": "ClusterIP", "selector": labels,
                        "ports": [{"name": "redis", "port": port, "targetPort": "redis"}]}}
    pod_spec: dict = {
        # the official image drops to uid 999 when started as root; as 999 from the start, the Secret's
        # files are readable through fsGroup, and /data is writable
        "securityContext": {"runAsUser": 999, "runAsGroup": 999, "fsGroup": 999, "runAsNonRoot": True},
        "containers": [{
            "name": REDIS_NAME,
            "image": settings.kube.redis_image,
            "imagePullPolicy": settings.kube.image_pull_policy,
            # requirepass comes from redis.conf in the Secret, so the password is on no command line
            "args": ["/etc/serve-chaos-redis/redis.conf", "--port", str(port),
                     "--appendonly", "yes" if cfg.redis.appendonly else "no", "--dir", "/data"],
            "ports": [{"name": "redis", "containerPort": port}],
            "readinessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 2},
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
            "volumeMounts": [{"name": "auth", "mountPath": "/etc/serve-chaos-redis", "readOnly": True},
                             {"name": "data", "mountPath": "/data"}],
        }],
        "volumes": [{"name": "auth", "secret": {"secretName": REDIS_SECRET, "defaultMode": 0o440,
                                                "items": [{"key": SECRET_CONF_KEY, "path": "redis.conf"}]}},
                    {"name": "data", "emptyDir": {}}],
    }
    if on_kind and settings.kind.redis_on_control_plane:
        pod_spec["nodeSelector"] = {"node-role.kubernetes.io/control-plane": ""}
        pod_spec["tolerations"] = [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists",
                                    "effect": "NoSchedule"}]
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": _meta(names, REDIS_NAME, {LABEL_ROLE: "redis"}),
                  "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                           "strategy": {"type": "Recreate"},
                           "template": {"metadata": {"labels": labels}, "spec": pod_spec}}}
    return Manifest("Service", REDIS_NAME, service), Manifest("Deployment", REDIS_NAME, deployment)


def serve_config_v2(cfg: StackConfig, serve_config: ServeConfig | None = None) -> str:
    """The Serve config (the stack config's, with its [app] keys) as RayService's YAML string."""
    return yaml.safe_dump((serve_config or build_serve_config(cfg)).to_dict(), sort_keys=False)


def ray_version(settings: KubeSettings) -> str:
    """Ray's version from the image tag ({ray version}[-py3XX][-cpu]), else the installed ray's."""
    match = re.search(r":(\d+\.\d+\.\d+)", settings.kube.ray_image)
    return match.group(1) if match else metadata.version("ray")


def _resources_param(resources: dict[str, float]) -> str:
    import json

    return json.dumps(json.dumps(resources, sort_keys=True))  # KubeRay passes it quoted: '"{\"pinned\": 100}"'


def _worker_resources(cfg: StackConfig) -> dict[str, float] | None:
    per_worker = {node: res for node, res in cfg.resources.items() if node != "head"}
    if not per_worker:
        return None
    workers = [f"worker{i}" for i in range(1, cfg.workers.count + 1)]
    shapes = {tuple(sorted(per_worker.get(w, {}).items())) for w in workers}
    if len(shapes) > 1:
        raise ConfigError("key 'resources': on Kubernetes every worker pod comes from one template, so every "
                          f"worker must have the same custom resources (got {per_worker})")
    return dict(next(iter(shapes)))


def _ray_pod_template(names: RunNames, cfg: StackConfig, settings: KubeSettings, role: str, code: tuple[AppCode, ...],
                      ) -> dict:
    group = cfg.head if role == "head" else cfg.workers
    mount = settings.kube.app_mount.rstrip("/")
    env = [{"name": "PYTHONPATH", "value": ":".join(f"{mount}/{c.index}" for c in code)},
           {"name": "RAY_USAGE_STATS_ENABLED", "value": "0"},
           *({"name": k, "value": v} for k, v in sorted(group.env.items()))]
    ports = [{"name": "serve", "containerPort": cfg.app.serve_port}]
    if role == "head":
        ports = [{"name": "gcs-server", "containerPort": 6379},
                 {"name": "dashboard", "containerPort": cfg.app.dashboard_port},
                 {"name": "client", "containerPort": 10001}, *ports]
    shm_mb = group.object_store_mb + 64
    container = {
        "name": HEAD_CONTAINER if role == "head" else WORKER_CONTAINER,
        "image": settings.kube.ray_image,
        "imagePullPolicy": settings.kube.image_pull_policy,
        "env": env,
        "ports": ports,
        "resources": {"requests": {"cpu": settings.kube.head_cpu_request if role == "head"
                                   else settings.kube.worker_cpu_request,
                                   "memory": settings.kube.memory_request},
                      "limits": {"memory": settings.kube.memory_limit}},
        "volumeMounts": [*({"name": f"app-code-{c.index}", "mountPath": f"{mount}/{c.index}", "readOnly": True}
                           for c in code),
                         {"name": "dshm", "mountPath": "/dev/shm"}],
    }
    volumes = [*({"name": f"app-code-{c.index}",
                  "configMap": {"name": c.configmap.name, "items": [{"key": k, "path": p} for k, p in c.items]}}
                 for c in code),
               {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{shm_mb}Mi"}}]
    spec: dict = {"containers": [container], "volumes": volumes}
    labels = {**names.labels, LABEL_ROLE: role, LABEL_RAY_POD: "true"}
    if settings.kube.spread_ray_pods:
        spec["affinity"] = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
            "weight": 100,
            "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                "labelSelector": {"matchLabels": {LABEL_RUN_ID: names.run_id, LABEL_RAY_POD: "true"}}},
        }]}}
    return {"metadata": {"labels": labels}, "spec": spec}


def rayservice_manifest(names: RunNames, cfg: StackConfig, settings: KubeSettings, code: tuple[AppCode, ...],
                        serve_config: ServeConfig | None = None) -> Manifest:
    head_params = {"num-cpus": str(cfg.head.cpus),
                   "object-store-memory": str(cfg.head.object_store_mb * 1024 * 1024),
                   "dashboard-host": "0.0.0.0",
                   "dashboard-port": str(cfg.app.dashboard_port)}
    if cfg.resources.get("head"):
        head_params["resources"] = _resources_param(cfg.resources["head"])
    worker_params = {"num-cpus": str(cfg.workers.cpus),
                     "object-store-memory": str(cfg.workers.object_store_mb * 1024 * 1024)}
    worker_res = _worker_resources(cfg)
    if worker_res:
        worker_params["resources"] = _resources_param(worker_res)
    cluster: dict = {
        "rayVersion": ray_version(settings),
        "enableInTreeAutoscaling": False,
        "headGroupSpec": {"rayStartParams": head_params,
                          "template": _ray_pod_template(names, cfg, settings, "head", code)},
        "workerGroupSpecs": [{
            "groupName": names.worker_group,
            "replicas": cfg.workers.count,
            "minReplicas": 0,  # so that one worker can be scaled away (stop_node) without KubeRay adding it back
            "maxReplicas": max(settings.kube.max_workers, cfg.workers.count),
            "rayStartParams": worker_params,
            "template": _ray_pod_template(names, cfg, settings, "worker", code),
        }],
    }
    if cfg.gcs_ft:
        cluster["gcsFaultToleranceOptions"] = {
            "redisAddress": f"{REDIS_NAME}:{cfg.redis.port}",
            "redisPassword": {"valueFrom": {"secretKeyRef": {"name": REDIS_SECRET, "key": SECRET_PASSWORD_KEY}}},
            "externalStorageNamespace": cfg.gcs.storage_namespace or names.run_id,
        }
    body = {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": _meta(names, names.rayservice),
            "spec": {
                # the harness changes replicas and Serve config only; no spec change may roll out a new cluster
                "upgradeStrategy": {"type": "None"},
                "serveConfigV2": serve_config_v2(cfg, serve_config),
                "rayClusterConfig": cluster,
            }}
    return Manifest("RayService", names.rayservice, body)


def stack_manifests(cfg: StackConfig, settings: KubeSettings, run_id: str, *, password: Secret | None,
                    on_kind: bool, owner: str | None = None) -> StackManifests:
    """Every object of the run. ``password=None`` writes the Secret with a placeholder (for files on disk)."""
    names = run_names(settings, run_id)
    code = app_code(names, cfg)
    return StackManifests(
        namespace=namespace_manifest(names, owner=owner),
        secret=secret_manifest(names, cfg, password) if cfg.redis.enabled else None,
        app_code=tuple(c.configmap for c in code),
        redis=redis_manifests(names, cfg, settings, on_kind) if cfg.redis.enabled else (),
        rayservice=rayservice_manifest(names, cfg, settings, code),
    )


def kind_config(settings: KubeSettings, run_id: str) -> dict:
    """A control plane and ``node_workers`` workers (so that a node can be lost), labelled with the run id, on
    the run's own pod subnet (so that the host can route to two runs' pods at once)."""
    names = run_names(settings, run_id)
    labels = {LABEL_RUN_ID: run_id}
    nodes = [{"role": "control-plane", "labels": labels}]
    nodes += [{"role": "worker", "labels": labels} for _ in range(settings.kind.node_workers)]
    return {"kind": "Cluster", "apiVersion": "kind.x-k8s.io/v1alpha4", "name": names.kind_cluster,
            "networking": {"podSubnet": str(pod_subnet(run_id))}, "nodes": nodes}


# --- files for people to read ----------------------------------------------------------------------------------

HEADER = ("# Generated by `serve-chaos manifests` from cluster/local.toml and cluster/kube/kube.toml\n"
          "# (run id {run_id}). Do not edit: change those files and generate again. The backends build these\n"
          "# objects at run time; the Secret's real password exists only in the cluster.\n")


class _ReadableDumper(yaml.SafeDumper):
    """Multi-line strings (serveConfigV2, the app's code) as literal blocks, as a person writes them; no aliases."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value and all(line == line.rstrip() for line in value.splitlines()):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_ReadableDumper.add_representer(str, _str)


def dump(manifests: list[dict], run_id: str) -> str:
    return HEADER.format(run_id=run_id) + yaml.dump_all(manifests, Dumper=_ReadableDumper, sort_keys=False, width=120)


def write_files(out: Path, cfg: StackConfig, settings: KubeSettings, run_id: str) -> list[Path]:
    """The run's objects (the Secret with its placeholder) and the kind config, one YAML file each part."""
    m = stack_manifests(cfg, settings, run_id, password=None, on_kind=True, owner="<host>/<pid>")
    parts = {
        "00-namespace.yaml": [m.namespace.body],
        "01-redis-secret.yaml": [m.secret.body] if m.secret else [],
        "02-app-code.yaml": [c.body for c in m.app_code],
        "03-redis.yaml": [r.body for r in m.redis],
        "04-rayservice.yaml": [m.rayservice.body],
        "kind-config.yaml": [kind_config(settings, run_id)],
    }
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, docs in parts.items():
        if docs:
            path = out / name
            path.write_text(dump(docs, run_id))
            written.append(path)
    return written
