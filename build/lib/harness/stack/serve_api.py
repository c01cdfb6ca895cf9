"""Reading and changing Serve through the head's HTTP APIs (Serve REST API, Ray State API).

The raw JSON stays in this module; callers get the typed records of ``harness.stack.cluster``. These APIs
live on the head: while it is down they fail with ``ServeApiUnavailable``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import requests

from harness.stack.cluster import (
    AppInfo,
    ControllerInfo,
    ProxyInfo,
    RayActor,
    ReplicaInfo,
)
from harness.stack.serve_config import ServeConfig

SERVE_PATH = "/api/serve/applications/"


class ServeApiUnavailable(RuntimeError):
    """The head's dashboard did not answer (head down, starting, or overloaded)."""


class ServeDeployRejected(RuntimeError):
    """The Serve REST API refused a config; the message has its answer."""


@dataclass(frozen=True)
class RayNode:
    node_id: str
    address: str
    state: str  # ALIVE | DEAD
    start_time_ms: int


@dataclass(frozen=True)
class ServeSnapshot:
    """One answer of the Serve REST API, typed; node names are resolved by the caller."""

    controller_actor_id: str | None
    controller_node_ip: str | None
    proxies: tuple[tuple[str | None, str, str], ...]  # (node_ip, status, actor_id)
    replicas: tuple[tuple[ReplicaInfo, str | None], ...]  # (replica with node=None, node_ip)
    apps: tuple[AppInfo, ...]


class HeadApi:
    def __init__(self, head_address: str, dashboard_port: int, timeout_s: float = 5.0):
        self.base = f"http://{head_address}:{dashboard_port}"
        self.timeout_s = timeout_s

    def _get(self, path: str, params: dict[str, str] | None = None) -> object:
        try:
            resp = requests.get(self.base + path, params=params, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise ServeApiUnavailable(f"{self.base}{path}: {type(exc).__name__}") from None
        if resp.status_code != 200:
            raise ServeApiUnavailable(f"{self.base}{path}: HTTP {resp.status_code}: {resp.text[:300]}")
        return resp.json()

    def serve(self) -> ServeSnapshot:
        data = self._get(SERVE_PATH)
        assert isinstance(data, dict)
        controller = data.get("controller_info") or {}
        proxies = tuple(
            (p.get("node_ip"), str(p.get("status", "UNKNOWN")), str(p.get("actor_id") or ""))
            for p in (data.get("proxies") or {}).values()
        )
        replicas = []
        apps = []
        for app_name, app in (data.get("applications") or {}).items():
            apps.append(AppInfo(app_name, str(app.get("status", "UNKNOWN")), app.get("route_prefix")))
            for dep_name, dep in (app.get("deployments") or {}).items():
                for r in dep.get("replicas") or []:
                    replicas.append((ReplicaInfo(
                        replica_id=str(r.get("replica_id")), deployment=dep_name, node=None,
                        pid=r.get("pid"), state=str(r.get("state")), actor_id=r.get("actor_id"), app=app_name,
                    ), r.get("node_ip")))
        return ServeSnapshot(
            controller_actor_id=controller.get("actor_id"),
            controller_node_ip=controller.get("node_ip"),
            proxies=proxies, replicas=tuple(replicas), apps=tuple(apps),
        )

    def _state_list(self, what: str, filters: list[tuple[str, str]]) -> list[dict]:
        params = {"limit": "10000", "detail": "1"}
        if filters:
            params["filter_keys"] = [k for k, _ in filters]  # type: ignore[assignment]
            params["filter_predicates"] = ["=" for _ in filters]  # type: ignore[assignment]
            params["filter_values"] = [v for _, v in filters]  # type: ignore[assignment]
        data = self._get(f"/api/v0/{what}", params)
        assert isinstance(data, dict)
        return list(data["data"]["result"]["result"])

    def nodes(self) -> tuple[RayNode, ...]:
        return tuple(RayNode(str(n["node_id"]), str(n["node_ip"]), str(n["state"]), int(n.get("start_time_ms") or 0))
                     for n in self._state_list("nodes", []))

    def newest_nodes(self) -> dict[str, RayNode]:
        """Per address, the node that started last: a restarted node's old entry stays ALIVE for a while."""
        newest: dict[str, RayNode] = {}
        for node in self.nodes():
            if node.address not in newest or node.start_time_ms > newest[node.address].start_time_ms:
                newest[node.address] = node
        return newest

    def actors(self, class_name: str | None = None, state: str | None = None) -> tuple[RayActor, ...]:
        filters = []
        if class_name:
            filters.append(("class_name", class_name))
        if state:
            filters.append(("state", state))
        return tuple(
            RayActor(str(a["actor_id"]), str(a.get("class_name", "")), str(a.get("name") or ""),
                     str(a["state"]), a.get("pid") or None, a.get("node_id"))
            for a in self._state_list("actors", filters)
        )

    def deploy(self, serve_config: ServeConfig) -> None:
        try:
            resp = requests.put(self.base + SERVE_PATH, json=serve_config.to_dict(), timeout=max(self.timeout_s, 30.0))
        except requests.RequestException as exc:
            raise ServeApiUnavailable(f"{self.base}{SERVE_PATH}: {type(exc).__name__}") from None
        if resp.status_code != 200:
            raise ServeDeployRejected(f"HTTP {resp.status_code}: {resp.text[-2000:]}")


@dataclass(frozen=True)
class ServeView:
    """What the head's APIs tell, with node names resolved: one reading for every backend's ``status()``."""

    ray_nodes: dict[str, RayNode]  # by address: the newest Ray node there
    controller: ControllerInfo | None
    proxies: tuple[ProxyInfo, ...]
    replicas: tuple[ReplicaInfo, ...]
    apps: tuple[AppInfo, ...]
    reachable: bool


def read_serve(api: HeadApi, by_ip: dict[str, str], proxy_url: Callable[[str | None, str | None], str | None]) -> ServeView:
    """Ask the head once; ``by_ip`` names nodes by address, ``proxy_url(node, ip)`` gives a proxy's URL.
    While the head does not answer, the view is empty and ``reachable`` is False."""
    try:
        ray_nodes = api.newest_nodes()
        snap = api.serve()
        actors = {a.actor_id: a for a in api.actors(state="ALIVE")}
    except ServeApiUnavailable:
        return ServeView({}, None, (), (), (), False)
    controller = None
    if snap.controller_actor_id:
        actor = actors.get(snap.controller_actor_id)
        controller = ControllerInfo(actor.pid if actor else None, by_ip.get(snap.controller_node_ip or ""),
                                    snap.controller_actor_id)
    proxies = tuple(ProxyInfo(by_ip.get(ip or ""), proxy_url(by_ip.get(ip or ""), ip), status, actor_id,
                              actors[actor_id].pid if actor_id in actors else None)
                    for ip, status, actor_id in snap.proxies)
    replicas = tuple(replace(r, node=by_ip.get(ip or "")) for r, ip in snap.replicas)
    return ServeView(ray_nodes, controller, proxies, replicas, snap.apps, True)
