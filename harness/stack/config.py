"""The local stack's configuration: the shipped TOML file, a user's overrides, typed and validated.

A user's file is merged key by key over ``cluster/local.toml``; an unknown key or a value of the wrong
type is an error that names the key and says what was expected.
"""

from __future__ import annotations

import ipaddress
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

REPO_ROOT = Path(__file__).resolve().parents[2]  # a checkout's root (its cluster/ is harness/data/)
DATA = Path(str(resources.files("harness") / "data"))  # the shipped defaults: package data, in a checkout or a wheel
DEFAULT_CONFIG = DATA / "local.toml"
HARNESS_APPS = DATA / "apps"  # the harness's own apps (the guide's app; the health toggle deployed "beside")


class ConfigError(ValueError):
    """A stack configuration that cannot be used; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class NetworkConfig(_Section):
    subnet: str
    state_dir: str

    @field_validator("subnet")
    @classmethod
    def _subnet(cls, value: str) -> str:
        net = ipaddress.ip_network(value, strict=True)
        if net.version != 4 or not net.is_private or net.num_addresses < 16:
            raise ValueError("expected a private IPv4 network with room for the nodes, such as 10.213.7.0/24")
        return value


class RedisConfig(_Section):
    enabled: bool
    port: int = Field(ge=1, le=65535)
    password_env: str
    appendonly: bool


class GcsConfig(_Section):
    gcs_ft: bool
    port: int = Field(ge=1, le=65535)
    storage_namespace: str


class NodeGroupConfig(_Section):
    cpus: int = Field(ge=0)
    object_store_mb: int = Field(ge=78)  # Ray's floor is 75 MiB
    restart: Literal["always", "never"]
    restart_delay_s: float = Field(ge=0)
    env: dict[str, str]


class WorkersConfig(NodeGroupConfig):
    count: int = Field(ge=0, le=20)


class RequestConfig(_Section):
    """The request traffic sends to every route of every proxy."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    path: str = ""  # appended to the route, e.g. "predict" -> http://<proxy>:8000/<route>/predict
    body: str | None = None  # sent as is (set a Content-Type header for JSON)
    headers: dict[str, str] = Field(default_factory=dict)


class CheckConfig(_Section):
    """What a 2xx response's body must be for the request to count as served."""

    kind: Literal["any_2xx", "pid", "exact", "json_field", "class"] = "any_2xx"
    text: str = ""  # kind "exact": the body, exactly (surrounding whitespace ignored)
    field: str = ""  # kind "json_field": a dotted path into the JSON body, e.g. "prediction.label"
    equals: str | None = None  # kind "json_field": the field's value as text (unset: any value)
    class_path: str = ""  # kind "class": "module:Name", a frozen dataclass with judge(body) -> BodyJudgement

    @model_validator(mode="after")
    def _complete(self) -> CheckConfig:
        needs = {"exact": "text", "json_field": "field", "class": "class_path"}.get(self.kind)
        if needs and not getattr(self, needs):
            raise ValueError(f"check kind {self.kind!r} needs the key '{needs}'")
        if self.kind == "class" and ":" not in self.class_path:
            raise ValueError(f"class_path {self.class_path!r}: expected 'module:Name'")
        return self


class TrafficConfig(_Section):
    routes: list[str] = Field(default_factory=list)  # empty: every application's route_prefix
    request: RequestConfig = RequestConfig()
    check: CheckConfig = CheckConfig()


class HealthConfig(_Section):
    """The health-check scenario's target: the app's own check_health (``toggle``), the harness's health-toggle
    app deployed beside the app (``beside``), or no such scenario (``skip``)."""

    mode: Literal["toggle", "beside", "skip"] = "beside"
    application: str = ""  # toggle: the application whose replica's check_health the toggle fails
    deployment: str = ""  # toggle: that deployment
    toggle_path: str = ""  # toggle: GET <the application's route><toggle_path> makes one replica's check fail

    @model_validator(mode="after")
    def _complete(self) -> HealthConfig:
        if self.mode == "toggle":
            missing = [k for k in ("application", "deployment", "toggle_path") if not getattr(self, k)]
            if missing:
                raise ValueError(f"health mode 'toggle' needs {', '.join(repr(k) for k in missing)}")
        return self


class AppConfig(_Section):
    """The application under test. Only ``serve_config`` and ``python_path`` are needed: every other key
    defaults to what the Serve config says (see harness/stack/app.py for how each default is resolved)."""

    serve_config: str
    python_path: list[str]
    import_path: str = ""  # overrides the application's import path ("": as the Serve config says)
    application: str = ""  # the application the replica faults target ("": the first one)
    deployment: str = ""  # the deployment replica faults kill ("": the application's first listed one)
    num_replicas: int | None = Field(default=None, ge=0)  # sets that deployment's replicas (unset: as configured)
    max_replicas_per_node: int | None = Field(default=None, ge=0)  # sets it too; 0 = no limit
    watch: list[str] = Field(default_factory=list)  # identity checks' deployments (empty: all of the targeted apps)
    serve_port: int = Field(ge=1, le=65535)
    dashboard_port: int = Field(ge=1, le=65535)
    traffic: TrafficConfig = TrafficConfig()
    health: HealthConfig = HealthConfig()

    @field_validator("import_path")
    @classmethod
    def _import_path(cls, value: str) -> str:
        module, sep, attr = value.partition(":")
        if value and (not module or (sep and not attr)):
            raise ValueError("expected 'module:attribute' or 'module.attribute'")
        return value


class OperatorConfig(_Section):
    enabled: bool
    period_s: float = Field(gt=0)
    missing_grace_s: float = Field(ge=0)


class TimeoutsConfig(_Section):
    redis_ready_s: float = Field(gt=0)
    head_ready_s: float = Field(gt=0)
    workers_ready_s: float = Field(gt=0)
    deploy_s: float = Field(gt=0)
    app_healthy_s: float = Field(gt=0)


class DriversConfig(_Section):
    """How the harness runs its Ray drivers (kill an actor, read the proxies' routing)."""

    fault_agent: bool = True  # one long-lived driver in the head (ms per command); false: a fresh driver each time


class StackConfig(_Section):
    network: NetworkConfig
    redis: RedisConfig
    gcs: GcsConfig
    head: NodeGroupConfig
    workers: WorkersConfig
    app: AppConfig
    resources: dict[str, dict[str, float]]
    operator: OperatorConfig
    timeouts: TimeoutsConfig
    drivers: DriversConfig = DriversConfig()
    # where relative paths of [app] resolve: the folder of the file that set them
    base_dir: str = "."

    @property
    def max_state_dir_len(self) -> int:
        """Ray puts AF_UNIX sockets (107 bytes at most) at
        <state_dir>/<run id>/ray/<node>/session_<date>_<time>_<usec>_<pid>/sockets/plasma_store."""
        node = len(f"worker{self.workers.count}")
        return 107 - len("/sc000000/ray/") - node - len("/session_2026-11-25_09-35-26_183849_1234567/sockets/plasma_store")

    @property
    def gcs_ft(self) -> bool:
        return self.gcs.gcs_ft and self.redis.enabled

    def resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else (Path(self.base_dir) / p).resolve()

    def serve_ports_clash(self) -> str | None:
        """Ports that would collide on the head node, where GCS, dashboard and a proxy all listen."""
        head_ports = {"gcs.port": self.gcs.port, "app.dashboard_port": self.app.dashboard_port,
                      "app.serve_port": self.app.serve_port}
        seen: dict[int, str] = {}
        for key, port in head_ports.items():
            if port in seen:
                return f"{seen[port]} and {key} are both {port}: they listen on the same node"
            seen[port] = key
        return None


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and key not in ("env", "headers"):
            out[key] = _merge(base[key], value)
        else:
            out[key] = value
    return out


APP_KEYS_KEPT = ("serve_port", "dashboard_port")  # what a file describing its own app keeps of the shipped [app]


def _own_app(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A file that names its own ``app.serve_config`` describes its own app: of the shipped [app] only the
    ports carry over, so the guide's app keys (its deployment, its PID check, its health toggle) never apply
    to a user's app by accident."""
    app = override.get("app")
    if isinstance(app, dict) and "serve_config" in app and isinstance(base.get("app"), dict):
        return {**base, "app": {k: v for k, v in base["app"].items() if k in APP_KEYS_KEPT}}
    return base


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"stack config {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"stack config {path} is not valid TOML: {exc}") from None


def _rebase_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make a file's relative [app] paths absolute against that file's folder."""
    app = data.get("app")
    if not isinstance(app, dict):
        return data
    app = dict(app)
    if isinstance(app.get("serve_config"), str):
        app["serve_config"] = str((base / app["serve_config"]).resolve())
    if isinstance(app.get("python_path"), list):
        app["python_path"] = [str((base / p).resolve()) if isinstance(p, str) else p for p in app["python_path"]]
    return {**data, "app": app}


def load_config(user_file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> StackConfig:
    """The shipped defaults, then the user's file, then programmatic overrides (e.g. from a scenario)."""
    data = _rebase_paths(_read_toml(DEFAULT_CONFIG), DEFAULT_CONFIG.parent)
    if user_file is not None:
        path = Path(user_file).resolve()
        user = _rebase_paths(_read_toml(path), path.parent)
        data = _merge(_own_app(data, user), user)
    if overrides:
        data = _merge(_own_app(data, overrides), overrides)
    try:
        config = StackConfig.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    if len(config.network.state_dir) > config.max_state_dir_len:
        raise ConfigError(f"stack config: key 'network.state_dir': {config.network.state_dir!r} is too long for Ray's "
                          f"socket paths (107 bytes): at most {config.max_state_dir_len} characters")
    nodes = {"head", *(f"worker{i}" for i in range(1, config.workers.count + 1))}
    for node in config.resources:
        if node not in nodes:
            raise ConfigError(f"stack config: key 'resources.{node}': no such node (nodes: {', '.join(sorted(nodes))})")
    if config.app.health.mode == "beside" and str(HARNESS_APPS) not in config.app.python_path:
        app = config.app.model_copy(update={"python_path": [*config.app.python_path, str(HARNESS_APPS)]})
        config = config.model_copy(update={"app": app})
    clash = config.serve_ports_clash()
    if clash:
        raise ConfigError(f"stack config: {clash}")
    return config


def _describe(exc: pydantic.ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"stack config: unknown key '{key}'")
        elif err["type"] == "missing":
            lines.append(f"stack config: missing key '{key}'")
        else:
            lines.append(f"stack config: key '{key}': {err['msg']} (got {err['input']!r})")
    return "\n".join(lines)
