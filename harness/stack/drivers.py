"""What a backend asks a Ray driver inside the stack (the guide's ``kubectl exec ... python``): kill an actor,
and read each live proxy's routing table. One snippet each, run by any backend's ``run_driver``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

from harness.stack.cluster import DriverResult, ProxyRoute

RunDriver = Callable[..., DriverResult]  # a backend's run_driver(snippet, timeout_s=...)


def kill_actor_snippet(name: str, namespace: str, no_restart: bool) -> str:
    return f"ray.kill(ray.get_actor({name!r}, namespace={namespace!r}), no_restart={no_restart!r})\nprint('killed')"


# The class of Serve's per-node proxy actor: ProxyActor by default, HAProxyManager with RAY_SERVE_ENABLE_HA_PROXY=1
# (Ray 2.60's ray/serve/_private/haproxy.py); both answer _dump_ingress_replicas_for_testing.
PROXY_CLASSES = ("ProxyActor", "HAProxyManager")
MARKER = "SERVE_CHAOS_ROUTING "
DRIVER_TIMEOUT_S = 60.0  # one reading of every proxy's routing (a driver): at most this long

_SNIPPET = """
import json
from ray.util.state import list_actors
out = []
proxies = [a for cls in PROXY_CLASSES
           for a in list_actors(filters=[("class_name", "=", cls), ("state", "=", "ALIVE")], limit=1000)]
for a in proxies:
    for route in ROUTES:
        row = {"actor_id": a.actor_id, "name": a.name, "route": route}
        try:
            ids = ray.get(ray.get_actor(a.name, namespace="serve")._dump_ingress_replicas_for_testing.remote(route),
                          timeout=TIMEOUT)
            row["replicas"] = sorted(r.unique_id for r in ids)
            row["deployments"] = sorted({r.deployment_id.name for r in ids})
        except Exception as exc:
            row["error"] = (type(exc).__name__ + ": " + str(exc))[:300]
        out.append(row)
print(MARKER + json.dumps(out))
"""


class RoutingUnavailable(RuntimeError):
    """The proxies' routing could not be read (the driver failed, or this Ray has no such method)."""


def read_routing(run_driver: RunDriver, routes: Iterable[str], timeout_s: float = DRIVER_TIMEOUT_S
                 ) -> tuple[ProxyRoute, ...]:
    """Every live proxy's replica set for each route, asked of each proxy actor by a driver (the proxy's
    ``_dump_ingress_replicas_for_testing``, the method Ray's own tests use). Raises RoutingUnavailable when the
    driver fails."""
    routes = tuple(dict.fromkeys(routes))
    snippet = (f"ROUTES = {list(routes)!r}\nTIMEOUT = 5\nMARKER = {MARKER!r}\nPROXY_CLASSES = {PROXY_CLASSES!r}\n"
               + _SNIPPET)
    result = run_driver(snippet, timeout_s=timeout_s)
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith(MARKER)), None)
    if result.returncode != 0 or line is None:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise RoutingUnavailable(f"could not read the proxies' routing (driver exit {result.returncode}): {tail}")
    try:
        rows = json.loads(line[len(MARKER):])
        return tuple(
            ProxyRoute(str(r["actor_id"]), str(r["name"]), str(r["route"]),
                       frozenset(r["replicas"]) if "replicas" in r else None,
                       frozenset(r.get("deployments", ())), str(r.get("error", "")))
            for r in rows
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise RoutingUnavailable(f"the routing driver's answer is unreadable: {type(exc).__name__}: {exc}") from None
