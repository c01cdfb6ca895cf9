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

    def with_version(self, application: str, version: str) -> ServeConfig:
        """This config with ``application``'s code changed, as a new release changes it: its runtime_env gains
        ``SERVE_CHAOS_APP_VERSION=<version>``, which Serve treats as new code (every replica of the application is
        replaced, rolling), whatever the application does with it."""
        app = self.application(application)
        if app is None:
            raise ConfigError(f"no application {application!r} in the Serve config")
        runtime_env = copy.deepcopy((app.model_extra or {}).get("runtime_env") or {})
        runtime_env.setdefault("env_vars", {})[APP_VERSION_ENV] = version
        data = self.to_dict()
        for a in data["applications"]:
            if a["name"] == application:
                a["runtime_env"] = runtime_env
        return ServeConfig.from_dict(data, "the upgraded Serve config")

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


APP_VERSION_ENV = "SERVE_CHAOS_APP_VERSION"  # what with_version changes: a code change for Serve
BESIDE_HEALTH_APP = "chaos_health"  # the harness's health-toggle app, deployed beside a user's app (app.health)
BESIDE_HEALTH_ROUTE = "/chaos-health"


def _beside_health_app() -> dict:
    return {"name": BESIDE_HEALTH_APP, "route_prefix": BESIDE_HEALTH_ROUTE, "import_path": "health_toggle:build",
            "args": {"honour_failures": True},
            "deployments": [{"name": "HealthToggle", "num_replicas": 2, "max_replicas_per_node": 1,
                             "health_check_period_s": 2, "health_check_timeout_s": 5,
                             "ray_actor_options": {"num_cpus": 0}}]}


def build_serve_config(cfg: StackConfig) -> ServeConfig:
    """The Serve config file with the stack config's [app] keys applied (and the harness's health-toggle app
    beside the user's when ``app.health.mode`` is ``beside``)."""
    path = Path(cfg.resolve(cfg.app.serve_config))
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"key 'app.serve_config': {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"key 'app.serve_config': {path} is not valid YAML: {exc}") from None
    serve = copy.deepcopy(raw)
    apps = serve.get("applications") if isinstance(serve, dict) else None
    if not isinstance(apps, list) or not apps or not all(isinstance(a, dict) for a in apps):
        raise ConfigError(f"key 'app.serve_config': {path} has no 'applications' list")
    names = ", ".join(str(a.get("name")) for a in apps)
    wanted = cfg.app.application
    app = next((a for a in apps if a.get("name") == wanted), None) if wanted else apps[0]
    if app is None:
        raise ConfigError(f"key 'app.application': no application {wanted!r} in {path} (applications: {names})")
    if cfg.app.import_path:
        app["import_path"] = cfg.app.import_path
    deployments = app.setdefault("deployments", [])
    if not isinstance(deployments, list) or not all(isinstance(d, dict) for d in deployments):
        raise ConfigError(f"key 'app.serve_config': {path}: application {app.get('name')!r}: 'deployments' "
                          f"must be a list of mappings")
    name = cfg.app.deployment or (deployments[0].get("name") if deployments else None)
    touches = cfg.app.num_replicas is not None or cfg.app.max_replicas_per_node is not None
    if touches and not name:
        raise ConfigError(f"key 'app.deployment': application {app.get('name')!r} lists no deployment in {path}: "
                          f"name the one num_replicas and max_replicas_per_node set")
    dep = next((d for d in deployments if d.get("name") == name), None)
    if dep is None and touches:
        dep = {"name": name}
        deployments.append(dep)
    if dep is not None and cfg.app.num_replicas is not None:
        dep["num_replicas"] = cfg.app.num_replicas
    if dep is not None and cfg.app.max_replicas_per_node:
        dep["max_replicas_per_node"] = cfg.app.max_replicas_per_node
    elif dep is not None and cfg.app.max_replicas_per_node == 0:
        dep.pop("max_replicas_per_node", None)
    if cfg.app.health.mode == "beside" and not any(a.get("name") == BESIDE_HEALTH_APP for a in apps):
        apps.append(_beside_health_app())
    serve.setdefault("http_options", {})["port"] = cfg.app.serve_port
    serve["http_options"].setdefault("host", "0.0.0.0")
    return ServeConfig.from_dict(serve, f"key 'app.serve_config': {path}")
