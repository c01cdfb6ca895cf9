"""A run's folder and its nodes: where things live, and the exact command that starts each node.

The run folder (``<state_dir>/<run_id>``) is the stack's desired state, shared by the CLI and the node
supervisor: ``config.json`` (the validated stack config), ``nodes.json`` (node specs), ``secret``
(mode 0600), ``serve_config.json``, ``nodes/<name>.desired`` ("running" | "stopped"),
``events.jsonl`` (what the supervisor and the operator did), ``logs/`` and ``ray/<node>`` (Ray's temp dirs).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.local.system import LABEL_ENV, Names
from harness.secrets import Secret
from harness.stack.cluster import StackEvent
from harness.stack.config import StackConfig

REDIS_NODE = "redis"
HEAD_NODE = "head"


@dataclass(frozen=True)
class NodeSpec:
    name: str  # "redis", "head", "worker1" ...
    role: str  # "redis" | "head" | "worker"
    index: int  # veth index and address offset
    netns: str
    address: str
    restart: str  # "always" | "never"
    restart_delay_s: float

    @property
    def is_ray(self) -> bool:
        return self.role in ("head", "worker")


def plan_nodes(config: StackConfig, names: Names) -> tuple[NodeSpec, ...]:
    """Redis at .2, the head at .10, worker i at .10+i; the bridge has .1."""
    net = ipaddress.ip_network(config.network.subnet)
    specs = []
    if config.redis.enabled:
        specs.append(NodeSpec(REDIS_NODE, "redis", 2, names.netns(REDIS_NODE), str(net[2]), "always", 0.0))
    specs.append(NodeSpec(HEAD_NODE, "head", 10, names.netns(HEAD_NODE), str(net[10]),
                          config.head.restart, config.head.restart_delay_s))
    for i in range(1, config.workers.count + 1):
        name = f"worker{i}"
        specs.append(NodeSpec(name, "worker", 10 + i, names.netns(name), str(net[10 + i]),
                              config.workers.restart, config.workers.restart_delay_s))
    return tuple(specs)


def bridge_address(config: StackConfig) -> str:
    net = ipaddress.ip_network(config.network.subnet)
    return f"{net[1]}/{net.prefixlen}"


class RunLayout:
    """Paths and small state files of one run."""

    def __init__(self, state_dir: str | Path, run_id: str):
        self.run_id = run_id
        self.names = Names(run_id)
        self.root = Path(state_dir) / run_id

    # paths
    @property
    def config_file(self) -> Path:
        return self.root / "config.json"

    @property
    def nodes_file(self) -> Path:
        return self.root / "nodes.json"

    @property
    def secret_file(self) -> Path:
        return self.root / "secret"

    @property
    def serve_config_file(self) -> Path:
        return self.root / "serve_config.json"

    @property
    def events_file(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def supervisor_pid_file(self) -> Path:
        return self.root / "supervisor.pid"

    @property
    def operator_armed_file(self) -> Path:
        return self.root / "operator.armed"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def node_log(self, node: str) -> Path:
        return self.logs_dir / f"{node}.log"

    def ray_temp_dir(self, node: str) -> Path:
        return self.root / "ray" / node

    def desired_file(self, node: str) -> Path:
        return self.root / "nodes" / f"{node}.desired"

    def redis_dir(self) -> Path:
        return self.root / "redis"

    # state
    def create(self) -> None:
        for d in (self.root, self.logs_dir, self.root / "nodes", self.root / "ray", self.redis_dir()):
            d.mkdir(parents=True, exist_ok=True)

    def write_secret(self, secret: Secret) -> None:
        fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secret.reveal())

    def read_secret(self) -> Secret:
        return Secret(self.secret_file.read_text())

    def write_config(self, config: StackConfig) -> None:
        _atomic_write(self.config_file, config.model_dump_json(indent=2))

    def read_config(self) -> StackConfig:
        return StackConfig.model_validate_json(self.config_file.read_text())

    def write_nodes(self, nodes: tuple[NodeSpec, ...]) -> None:
        _atomic_write(self.nodes_file, json.dumps([asdict(n) for n in nodes], indent=2))

    def read_nodes(self) -> tuple[NodeSpec, ...]:
        return tuple(NodeSpec(**n) for n in json.loads(self.nodes_file.read_text()))

    def set_desired(self, node: str, state: str) -> None:
        assert state in ("running", "stopped"), state
        _atomic_write(self.desired_file(node), state)

    def request_start(self, node: str) -> None:
        """Ask the supervisor to start ``node`` now, whatever its restart policy (``start_node``)."""
        self.set_desired(node, "running")
        _atomic_write(self.root / "nodes" / f"{node}.start", str(time.monotonic()))

    def start_requested_at(self, node: str) -> float | None:
        try:
            return float((self.root / "nodes" / f"{node}.start").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def desired(self, node: str) -> str:
        try:
            return self.desired_file(node).read_text().strip()
        except FileNotFoundError:
            return "stopped"

    def append_event(self, source: str, kind: str, target: str, detail: str = "", at_wall: float | None = None
                     ) -> StackEvent:
        """Record an event now, or at ``at_wall`` (a wall time seen elsewhere, e.g. when the agent sent a kill)."""
        now_wall, now_mono = time.time(), time.monotonic()
        at = now_wall if at_wall is None else at_wall
        event = StackEvent(at, now_mono - (now_wall - at), source, kind, target, detail)
        with self.events_file.open("a") as fh:
            fh.write(json.dumps(asdict(event)) + "\n")
        return event

    def read_events(self) -> tuple[StackEvent, ...]:
        try:
            lines = self.events_file.read_text().splitlines()
        except FileNotFoundError:
            return ()
        events = []
        for line in lines:
            try:
                events.append(StackEvent(**json.loads(line)))
            except (ValueError, TypeError):
                continue  # a line cut by a crash
        return tuple(events)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


# --- how a node starts --------------------------------------------------------------------------------

def ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


def redis_conf(config: StackConfig, layout: RunLayout, node: NodeSpec, secret: Secret) -> str:
    return "\n".join([
        f"bind {node.address} 127.0.0.1",
        f"port {config.redis.port}",
        "protected-mode yes",
        f"requirepass {secret.reveal()}",
        f"appendonly {'yes' if config.redis.appendonly else 'no'}",
        f"dir {layout.redis_dir()}",
        'save ""',
        "daemonize no",
        "",
    ])


def node_command(config: StackConfig, layout: RunLayout, node: NodeSpec, nodes: tuple[NodeSpec, ...],
                 secret: Secret, redis_server: str = "redis-server") -> tuple[list[str], dict[str, str]]:
    """argv and environment that start ``node`` as a "pod": its own network and PID namespace."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_REDIS_ADDRESS", "RAY_ADDRESS")}
    env[LABEL_ENV] = layout.run_id
    pod = ["ip", "netns", "exec", node.netns, "unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
    if node.role == "redis":
        conf = layout.redis_dir() / "redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(redis_conf(config, layout, node, secret))
        return [*pod, redis_server, str(conf)], env

    head = next(n for n in nodes if n.role == "head")
    group = config.head if node.role == "head" else config.workers
    env.update(group.env)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["PYTHONPATH"] = os.pathsep.join([*config.app.python_path, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    argv = [*pod, ray_bin(), "start", "--block", "--disable-usage-stats",
            f"--node-ip-address={node.address}",
            f"--num-cpus={group.cpus}",
            f"--object-store-memory={group.object_store_mb * 1024 * 1024}",
            f"--temp-dir={layout.ray_temp_dir(node.name)}"]
    if config.resources.get(node.name):
        argv.append(f"--resources={json.dumps(config.resources[node.name])}")
    if node.role == "head":
        argv += ["--head", f"--port={config.gcs.port}", "--include-dashboard=true",
                 "--dashboard-host=0.0.0.0", f"--dashboard-port={config.app.dashboard_port}"]
        if config.gcs_ft:
            redis = next(n for n in nodes if n.role == "redis")
            env["RAY_REDIS_ADDRESS"] = f"{redis.address}:{config.redis.port}"
            env["RAY_external_storage_namespace"] = config.gcs.storage_namespace or layout.run_id
            argv.append(f"--redis-password={secret.reveal()}")
    else:
        argv.append(f"--address={head.address}:{config.gcs.port}")
    return argv, env
