"""Settings of the Kubernetes backends: ``cluster/kube/kube.toml``, a user's overrides, typed and validated.

Only what ``cluster/local.toml`` does not say lives here (images, the operator's chart, the context
allowlist, timeouts); the stack itself (replicas, GCS fault tolerance, workers, the app) comes from the
same ``StackConfig`` as the local backend. An unknown key or a wrong type is an error naming the key.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from harness.stack.config import DATA, ConfigError

DEFAULT_SETTINGS = DATA / "kube" / "kube.toml"
OFFLINE_SETTINGS = DATA / "kube" / "kind-offline.toml"  # the images `make kind-images` builds (no registry)
KIND_CACHE = Path(os.environ.get("SERVE_CHAOS_KIND_CACHE", "~/.cache/serve-chaos/kind")).expanduser()
ALLOWED_CONTEXTS_ENV = "SERVE_CHAOS_ALLOWED_CONTEXTS"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class KubeSection(_Section):
    allowed_contexts: tuple[str, ...]
    namespace_prefix: str = Field(pattern=r"^[a-z]([-a-z0-9]{0,40}[a-z0-9])?$")
    state_dir: str
    operator_namespace: str
    rayservice_name: str = Field(pattern=r"^[a-z]([-a-z0-9]{0,30}[a-z0-9])?$")
    worker_group: str = Field(pattern=r"^[a-z]([-a-z0-9]{0,30}[a-z0-9])?$")
    ray_image: str
    redis_image: str
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"]
    app_mount: str
    kill_grace_period_s: int = Field(ge=1)
    max_workers: int = Field(ge=1, le=100)
    head_cpu_request: str
    worker_cpu_request: str
    memory_request: str
    memory_limit: str
    spread_ray_pods: bool


class KindSection(_Section):
    node_workers: int = Field(ge=1, le=10)
    node_image: str
    kuberay_chart: str
    kuberay_chart_repo: str
    kuberay_version: str = Field(pattern=r"^\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?$")
    kuberay_install: Literal["helm", "manifest"]
    kuberay_image: str
    kuberay_manifest: str
    redis_on_control_plane: bool
    preload_images: bool
    reach: Literal["pod-ip", "port-forward"]

    def kuberay_manifest_path(self) -> Path:
        """The operator's manifest (CRDs, RBAC, Deployment) for ``kuberay_install = "manifest"``: a path
        relative to the kind image cache (``$SERVE_CHAOS_KIND_CACHE``), or absolute."""
        return KIND_CACHE / Path(self.kuberay_manifest).expanduser()


class KubeTimeouts(_Section):
    cluster_create_s: float = Field(gt=0)
    images_s: float = Field(gt=0)
    operator_ready_s: float = Field(gt=0)
    redis_ready_s: float = Field(gt=0)
    rayservice_ready_s: float = Field(gt=0)
    pod_ready_s: float = Field(gt=0)
    app_healthy_s: float = Field(gt=0)
    api_call_s: float = Field(gt=0)
    namespace_deleted_s: float = Field(gt=0)
    agent_ready_s: float = Field(default=90.0, gt=0)


class KubeSettings(_Section):
    kube: KubeSection
    kind: KindSection
    timeouts: KubeTimeouts

    def allowed_contexts(self) -> tuple[str, ...]:
        """The allowlist: the file's globs, then those of SERVE_CHAOS_ALLOWED_CONTEXTS (comma-separated)."""
        extra = tuple(p.strip() for p in os.environ.get(ALLOWED_CONTEXTS_ENV, "").split(",") if p.strip())
        return (*self.kube.allowed_contexts, *extra)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"kube settings {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"kube settings {path} is not valid TOML: {exc}") from None


def _lists_to_tuples(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _lists_to_tuples(v) if isinstance(v, dict) else tuple(v) if isinstance(v, list) else v
            for k, v in data.items()}


def load_settings(user_file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> KubeSettings:
    """The shipped ``cluster/kube/kube.toml``, then the user's file, then programmatic overrides."""
    data = _read(DEFAULT_SETTINGS)
    if user_file is not None:
        data = _merge(data, _read(Path(user_file)))
    if overrides:
        data = _merge(data, overrides)
    try:
        return KubeSettings.model_validate(_lists_to_tuples(data))
    except pydantic.ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                lines.append(f"kube settings: unknown key '{key}'")
            elif err["type"] == "missing":
                lines.append(f"kube settings: missing key '{key}'")
            else:
                lines.append(f"kube settings: key '{key}': {err['msg']} (got {err['input']!r})")
        raise ConfigError("\n".join(lines)) from None
