"""The application under test, resolved: the stack config's ``[app]`` keys against its Serve config.

Every scenario reads the app through this one value: the routes traffic drives and the request and body check
it uses, the deployments the identity checks watch, the deployment replica faults kill, and the health-check
scenario's target (or why there is none). A user names only ``serve_config`` and ``python_path``; each other
key defaults from the Serve config:

- routes: every application's ``route_prefix`` (the harness's own health-toggle app excepted);
- application: the first application; deployment: its first listed deployment;
- watched deployments: every deployment of the applications traffic reaches (read from the live status);
- health: the harness's health-toggle app deployed beside the app (``beside``), the app's own check_health
  failed by a toggle route (``toggle``), or none (``skip``).

    app = app_under_test(config)      # raises ConfigError naming the key for anything that does not resolve
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass

from harness.stack.config import CheckConfig, ConfigError, RequestConfig, StackConfig
from harness.stack.serve_config import (
    BESIDE_HEALTH_APP,
    ServeConfig,
    build_serve_config,
)


@dataclass(frozen=True)
class HealthTarget:
    """Where the health-check scenario makes a replica's check_health fail."""

    application: str
    route: str  # the application's route prefix: its traffic goes there
    deployment: str
    toggle_path: str  # GET <route><toggle_path> makes the replica that answers fail its check_health
    beside: bool  # the harness's own health-toggle app, deployed beside the app under test


@dataclass(frozen=True)
class AppUnderTest:
    application: str  # the application replica faults target
    deployment: str  # the deployment replica faults kill
    routes: tuple[str, ...]  # routes traffic drives on every proxy
    applications: tuple[str, ...]  # the applications those routes reach
    watch: tuple[str, ...]  # deployments the identity checks watch (empty: every deployment of ``applications``)
    request: RequestConfig
    check: CheckConfig
    health: HealthTarget | None
    no_health_reason: str = ""  # why there is no health-check scenario (health is None)
    num_replicas: int | None = None  # the deployment's replicas as the stack config sets them (None: Serve's)
    max_replicas_per_node: int | None = None  # the deployment's limit in the Serve config as applied (None: none)

    @property
    def route(self) -> str:
        """The first route: the one a single endpoint per node goes to."""
        return self.routes[0]


def _prefix(route_prefix: str | None) -> str:
    return route_prefix or "/"


def _serves(prefix: str, route: str) -> bool:
    prefix = prefix.rstrip("/") or ""
    return route == prefix or route.startswith(prefix + "/") or prefix == ""


def _importable(module: str, python_path: list[str]) -> bool:
    saved = list(sys.path)
    try:
        sys.path[:0] = python_path
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
    finally:
        sys.path[:] = saved


def resolve_app(cfg: StackConfig, serve: ServeConfig) -> AppUnderTest:
    """The app under test from the stack config and its Serve config; ConfigError names the key that fails."""
    app_keys = cfg.app
    own_apps = [a for a in serve.applications if a.name != BESIDE_HEALTH_APP]
    if not own_apps:
        raise ConfigError(f"key 'app.serve_config': {app_keys.serve_config} names no application")
    names = ", ".join(a.name for a in own_apps)
    application = serve.application(app_keys.application) if app_keys.application else own_apps[0]
    if application is None:
        raise ConfigError(f"key 'app.application': no application {app_keys.application!r} in "
                          f"{app_keys.serve_config} (applications: {names})")
    listed = [d.name for d in application.deployments]
    deployment = app_keys.deployment or (listed[0] if listed else "")
    if not deployment:
        raise ConfigError(f"key 'app.deployment': application {application.name!r} lists no deployment in "
                          f"{app_keys.serve_config}; name the deployment replica faults should kill")
    if app_keys.deployment and listed and app_keys.deployment not in listed:
        raise ConfigError(f"key 'app.deployment': no deployment {app_keys.deployment!r} in application "
                          f"{application.name!r} (deployments: {', '.join(listed)})")
    every = {d.name for a in serve.applications for d in a.deployments}
    for name in app_keys.watch:
        if name not in every:
            raise ConfigError(f"key 'app.watch': no deployment {name!r} in {app_keys.serve_config} "
                              f"(deployments: {', '.join(sorted(every))})")
    routes = tuple(app_keys.traffic.routes) or tuple(dict.fromkeys(_prefix(a.route_prefix) for a in own_apps))
    reached: list[str] = []
    for route in routes:
        if not route.startswith("/"):
            raise ConfigError(f"key 'app.traffic.routes': {route!r} must start with '/'")
        # the longest prefix that serves the route is the application that answers it, as in Serve
        serving = sorted((a for a in serve.applications if _serves(_prefix(a.route_prefix), route)),
                         key=lambda a: len(_prefix(a.route_prefix)), reverse=True)
        if not serving:
            raise ConfigError(f"key 'app.traffic.routes': no application serves {route!r} (routes: "
                              f"{', '.join(_prefix(a.route_prefix) for a in serve.applications)})")
        reached.append(serving[0].name)
    for app in serve.applications:
        module = app.import_path.replace(":", ".").rsplit(".", 1)[0] if app.import_path else ""
        if module and not _importable(module, cfg.app.python_path):
            key = "app.import_path" if app.name == application.name and app_keys.import_path else "app.python_path"
            raise ConfigError(f"key {key!r}: application {app.name!r}: module {module!r} of import path "
                              f"{app.import_path!r} is not found on {cfg.app.python_path}")
    health, reason = _health(cfg, serve)
    listed_deployment = application.deployment(deployment)
    limit = listed_deployment.max_replicas_per_node if listed_deployment is not None else None
    return AppUnderTest(application.name, deployment, routes, tuple(dict.fromkeys(reached)), tuple(app_keys.watch),
                        app_keys.traffic.request, app_keys.traffic.check, health, reason, app_keys.num_replicas,
                        limit or None)


def _health(cfg: StackConfig, serve: ServeConfig) -> tuple[HealthTarget | None, str]:
    keys = cfg.app.health
    if keys.mode == "skip":
        return None, "app.health.mode is 'skip': the app names no health-check toggle"
    if keys.mode == "beside":
        app = serve.application(BESIDE_HEALTH_APP)
        assert app is not None, "build_serve_config adds the health-toggle app beside the app"
        return HealthTarget(app.name, _prefix(app.route_prefix), app.deployments[0].name, "/fail", True), ""
    app = serve.application(keys.application)
    if app is None:
        raise ConfigError(f"key 'app.health.application': no application {keys.application!r} in "
                          f"{cfg.app.serve_config}")
    listed = [d.name for d in app.deployments]
    if listed and keys.deployment not in listed:
        raise ConfigError(f"key 'app.health.deployment': no deployment {keys.deployment!r} in application "
                          f"{app.name!r} (deployments: {', '.join(listed)})")
    return HealthTarget(app.name, _prefix(app.route_prefix), keys.deployment, keys.toggle_path, False), ""


_RESOLVED: dict[str, AppUnderTest] = {}


def app_under_test(cfg: StackConfig) -> AppUnderTest:
    """The app under test of a stack config (its Serve config read once per config)."""
    key = cfg.model_dump_json()
    if key not in _RESOLVED:
        _RESOLVED[key] = resolve_app(cfg, build_serve_config(cfg))
    return _RESOLVED[key]
