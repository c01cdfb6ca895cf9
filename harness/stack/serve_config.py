"""The Serve config, typed: the file a stack applies (``cluster/serve/*.yaml``, Serve's own format) with the
stack config's ``[app]`` keys applied. Keys this model does not name are kept as they are (Serve's config has
many; a user's app may use any of them). Backends turn it into JSON or YAML only at their edge (the Serve REST
API, KubeRay's ``serveConfigV2``).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict

from harness.stack.config import ConfigError, StackConfig


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Deployment(_Open):
    name: str
    num_replicas: int | str | None = None  # an int, or "auto"
    max_replicas_per_node: int | None = None


class Application(_Open):
    name: str
    route_prefix: str | None = None
    import_path: str
    deployments: tuple[Deployment, ...] = ()

    def deployment(self, name: str) -> Deployment | None:
        return next((d for d in self.deployments if d.name == name), None)


class HttpOptions(_Open):
    host: str = "0.0.0.0"
    port: int = 8000


class ServeConfig(_Open):
    proxy_location: str | None = None
    http_options: HttpOptions = HttpOptions()
    applications: tuple[Application, ...]

    def application(self, name: str) -> Application | None:
        return next((a for a in self.applications if a.name == name), None)

    def route_prefix(self) -> str:
        """The first application's route prefix ("/" when it names none)."""
        return (self.applications[0].route_prefix if self.applications else None) or "/"

    def with_replicas(self, application: str, deployment: str, num_replicas: int) -> ServeConfig:
        """This config with ``deployment`` of ``application`` at ``num_replicas``."""
        app = self.application(application)
        if app is None or app.deployment(deployment) is None:
            raise ConfigError(f"no deployment {deployment!r} in application {application!r}")
        apps = tuple(
            a.model_copy(update={"deployments": tuple(
                d.model_copy(update={"num_replicas": num_replicas}) if d.name == deployment else d
                for d in a.deployments)}) if a.name == application else a
            for a in self.applications)
        return self.model_copy(update={"applications": apps})

    def to_dict(self) -> dict:
        """Serve's own format (what the REST API and ``serveConfigV2`` take)."""
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def from_dict(cls, data: object, where: str = "the Serve config") -> ServeConfig:
        try:
            return cls.model_validate(data)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"{where}: key {key!r}: {first['msg']}") from None


def build_serve_config(cfg: StackConfig) -> ServeConfig:
    """The Serve config file with the stack config's [app] keys applied."""
    path = Path(cfg.resolve(cfg.app.serve_config))
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"key 'app.serve_config': {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"key 'app.serve_config': {path} is not valid YAML: {exc}") from None
    serve = copy.deepcopy(raw)
    apps = serve.get("applications") if isinstance(serve, dict) else None
    if not isinstance(apps, list):
        raise ConfigError(f"key 'app.serve_config': {path} has no 'applications' list")
    app = next((a for a in apps if isinstance(a, dict) and a.get("name") == cfg.app.application), None)
    if app is None:
        raise ConfigError(f"key 'app.application': no application {cfg.app.application!r} in {path}")
    app["import_path"] = cfg.app.import_path
    deployments = app.setdefault("deployments", [])
    dep = next((d for d in deployments if d.get("name") == cfg.app.deployment), None)
    if dep is None:
        dep = {"name": cfg.app.deployment}
        deployments.append(dep)
    dep["num_replicas"] = cfg.app.num_replicas
    if cfg.app.max_replicas_per_node:
        dep["max_replicas_per_node"] = cfg.app.max_replicas_per_node
    else:
        dep.pop("max_replicas_per_node", None)
    serve.setdefault("http_options", {})["port"] = cfg.app.serve_port
    serve["http_options"].setdefault("host", "0.0.0.0")
    return ServeConfig.from_dict(serve, f"key 'app.serve_config': {path}")
