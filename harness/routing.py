"""Which replicas each proxy routes to, set against the replicas the controller runs.

A proxy learns its replicas by long-polling the Serve controller. When the controller is replaced by a new
actor (killed with ``no_restart=True``, then the Serve config applied again: the guide's procedure, and what
KubeRay's RayService does), the long-poll clients of the proxies that survive stop for good: Ray 2.60's
``LongPollClient`` ends on the ``RayActorError`` of the old controller and nothing starts it again
(ray-project/ray#63784). Such a proxy keeps routing to the replicas it last heard of: a replica started since
never gets its traffic, and once every replica it knows has died, its requests hang until the client's
timeout. The stack looks healthy to every other check (the apps are RUNNING, the proxies answer health
checks and serve while their old replicas live), so the harness reads the proxies' own routing tables:

    stale = stale_routes(cluster.status(), cluster.proxy_routing(("/", "/health")))

A backend's ``proxy_routing`` is ``read_routing`` here: a driver asks each live proxy actor for the replicas
its router holds for a route (the proxy's ``_dump_ingress_replicas_for_testing``, the method Ray's own tests
use). ``refresh_proxies`` replaces proxies whose routing is stale: it kills them (``no_restart=True``) and the
controller starts new ones, which subscribe to it afresh.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from harness.known_issues import STALE_PROXIES
from harness.stack.cluster import Cluster, ProxyRoute, StackStatus
from harness.verdict import Status, Verdict
from harness.waiting import WaitTimeout, wait_until

MARKER = "SERVE_CHAOS_ROUTING "
DRIVER_TIMEOUT_S = 60.0  # one reading of every proxy's routing (a driver): at most this long

_SNIPPET = """
import json
from ray.util.state import list_actors
out = []
for a in list_actors(filters=[("class_name", "=", "ProxyActor"), ("state", "=", "ALIVE")], limit=1000):
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


class RoutingRepairFailed(RuntimeError):
    """Stale proxies could not be replaced, or were replaced and are still stale."""


def read_routing(cluster: Cluster, routes: Iterable[str], timeout_s: float = DRIVER_TIMEOUT_S) -> tuple[ProxyRoute, ...]:
    """Every live proxy's replica set for each route. Raises RoutingUnavailable when the driver fails."""
    routes = tuple(dict.fromkeys(routes))
    snippet = f"ROUTES = {list(routes)!r}\nTIMEOUT = 5\nMARKER = {MARKER!r}\n" + _SNIPPET
    result = cluster.run_driver(snippet, timeout_s=timeout_s)
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


@dataclass(frozen=True)
class StaleRoute:
    """A proxy routing a route to other replicas than the controller runs."""

    node: str | None
    proxy_actor_id: str
    proxy_name: str
    route: str
    routed: frozenset[str]  # what the proxy holds
    running: frozenset[str]  # what the controller runs for that route's deployment

    def __str__(self) -> str:
        gone = sorted(self.routed - self.running)
        missing = sorted(self.running - self.routed)
        parts = []
        if gone:
            parts.append(f"routes to {len(gone)} replica(s) the controller no longer runs ({', '.join(gone)})")
        if missing:
            parts.append(f"does not know {len(missing)} running replica(s) ({', '.join(missing)})")
        return f"proxy on {self.node or '?'} for {self.route}: " + "; ".join(parts or ["differs"])


@dataclass(frozen=True)
class UnreadRoute:
    """A proxy whose table for a route could not be read: nothing is known about its routing."""

    node: str | None
    proxy_actor_id: str
    route: str
    error: str

    def __str__(self) -> str:
        return f"proxy on {self.node or '?'} for {self.route}: could not be read ({self.error})"


@dataclass(frozen=True)
class RoutingReading:
    """One reading of every proxy's routing set against the replicas the controller runs. It has converged only
    when every HEALTHY proxy's table for every route was read and matches: an unread table is not a match."""

    stale: tuple[StaleRoute, ...]
    unread: tuple[UnreadRoute, ...]
    proxies: tuple[str, ...]  # the nodes of the proxies whose tables were read
    routes: tuple[str, ...]

    @property
    def converged(self) -> bool:
        return not self.stale and not self.unread and bool(self.proxies)

    def __str__(self) -> str:
        if self.converged:
            return f"every proxy ({', '.join(self.proxies)}) routes {', '.join(self.routes)} to the controller's replicas"
        parts = [*map(str, self.stale), *map(str, self.unread)]
        return "; ".join(parts) or "no proxy's table was read"


def stale_routes(status: StackStatus, routing: Sequence[ProxyRoute]) -> tuple[StaleRoute, ...]:
    """Routes whose proxy's replica set differs from the RUNNING replicas the controller runs for that route:
    of the deployment the proxies route there, else of the application whose route prefix it is. Unreadable
    rows are not stale (``reading`` reports them as unread)."""
    node_of = {p.actor_id: p.node for p in status.proxies}
    app_of = {a.route_prefix: a.name for a in status.apps if a.route_prefix}
    by_route: dict[str, set[str]] = {}
    for row in routing:
        by_route.setdefault(row.route, set()).update(row.deployments)
    stale = []
    for row in routing:
        if row.replicas is None:
            continue
        deployments = by_route.get(row.route) or set()
        app = app_of.get(row.route)
        running = frozenset(r.replica_id for r in status.replicas if r.state == "RUNNING" and (
            r.deployment in deployments if deployments else (app is not None and r.app == app)))
        if row.replicas != running:
            stale.append(StaleRoute(node_of.get(row.proxy_actor_id), row.proxy_actor_id, row.proxy_name, row.route,
                                    row.replicas, running))
    return tuple(stale)


def reading(status: StackStatus, routing: Sequence[ProxyRoute], routes: Sequence[str]) -> RoutingReading:
    """Judge one reading: stale routes, and every table that could not be read (a row with an error, or a
    HEALTHY proxy of the status with no row for a route). A blind status (the Serve API down) judges nothing."""
    if not status.serve_api_reachable:
        return RoutingReading((), (UnreadRoute(None, "", ", ".join(routes), "the Serve API did not answer"),), (),
                              tuple(routes))
    node_of = {p.actor_id: p.node for p in status.proxies}
    unread = [UnreadRoute(node_of.get(r.proxy_actor_id), r.proxy_actor_id, r.route, r.error or "no replica list")
              for r in routing if r.replicas is None]
    read = {(r.proxy_actor_id, r.route) for r in routing}
    for proxy in status.proxies:
        if proxy.status != "HEALTHY":
            continue
        for route in routes:
            if (proxy.actor_id, route) not in read:
                unread.append(UnreadRoute(proxy.node, proxy.actor_id, route, "the proxy was not among those read"))
    if not routing:
        unread.append(UnreadRoute(None, "", ", ".join(routes), "no proxy's table was read"))
    proxies = tuple(sorted({str(node_of.get(r.proxy_actor_id)) for r in routing if r.replicas is not None}))
    return RoutingReading(stale_routes(status, routing), tuple(unread), proxies, tuple(routes))


def routes_of(status: StackStatus) -> tuple[str, ...]:
    """The route prefixes of the stack's applications."""
    return tuple(dict.fromkeys(a.route_prefix for a in status.apps if a.route_prefix))


def wait_routing_converged(cluster: Cluster, timeout_s: float, routes: Iterable[str] | None = None,
                           interval_s: float = 1.0) -> RoutingReading:
    """Until a reading has converged (every proxy's table read, and each routes to exactly the replicas the
    controller runs); returns that reading. On timeout, returns the last reading (stale or unread rows: the
    caller judges or repairs). Raises RoutingUnavailable when no reading succeeded at all, with the last error:
    a wait that saw nothing never says "converged"."""
    last: list[RoutingReading] = []

    def converged() -> bool:
        status = cluster.status()
        wanted = tuple(routes) if routes is not None else routes_of(status)
        last[:] = [reading(status, cluster.proxy_routing(wanted), wanted)]
        return last[0].converged

    try:
        wait_until("every proxy to route to the replicas the controller runs", converged, timeout_s=timeout_s,
                   interval_s=interval_s, describe=lambda: str(last[0]) if last else "nothing read yet")
    except WaitTimeout as exc:
        if not last:
            raise RoutingUnavailable(f"no reading of the proxies' routing succeeded in {timeout_s:g}s: "
                                     f"{str(exc).split('last seen: ', 1)[-1]}") from None
    return last[0]


def refresh_proxies(cluster: Cluster, stale: Iterable[StaleRoute], timeout_s: float = 120.0) -> tuple[str, ...]:
    """Replace the proxies of ``stale`` routes: kill each (``no_restart=True``); the controller starts a new
    one on its node, subscribed to the current controller. Waits until routing converged; returns the nodes
    whose proxy was replaced."""
    victims = {s.proxy_actor_id: s for s in stale}
    nodes = sorted({str(s.node) for s in victims.values()})
    for s in victims.values():
        result = cluster.kill_actor(s.proxy_name, no_restart=True)
        if result.returncode != 0:
            raise RoutingRepairFailed(f"could not kill the stale proxy on {s.node}: {result.stderr.strip()[-200:]}")

    def replaced() -> bool:  # every victim's node has a HEALTHY proxy that is not the victim
        fresh = {str(p.node) for p in cluster.status().proxies if p.status == "HEALTHY" and p.actor_id not in victims}
        return set(nodes) <= fresh

    wait_until(f"new HEALTHY proxies on {', '.join(nodes)}", replaced, timeout_s=timeout_s, interval_s=1.0)
    try:
        after = wait_routing_converged(cluster, timeout_s=30.0)
    except RoutingUnavailable as exc:
        raise RoutingRepairFailed(f"the routing could not be read after replacing the proxies: {exc}") from None
    if not after.converged:
        raise RoutingRepairFailed(f"proxies not converged after their replacement: {after}")
    return tuple(nodes)


def routing_verdict(cluster: Cluster, name: str = "routing_converged", timeout_s: float = 20.0) -> Verdict:
    """A verdict: within ``timeout_s``, every proxy routes every application's route to exactly the replicas
    the controller runs (pass); which proxies still route elsewhere (fail, figure ``stale_routes``: the only
    failure that shows the stale-proxy defect); UNKNOWN, naming the proxy and the error, when a table could not
    be read (never a pass)."""
    try:
        last = wait_routing_converged(cluster, timeout_s=timeout_s)
    except RoutingUnavailable as exc:
        return Verdict(name, Status.UNKNOWN, str(exc), figures={"unread_routes": 1.0})
    figures = {"stale_routes": float(len(last.stale)), "unread_routes": float(len(last.unread))}
    if last.stale:
        unread = f"; also unread: {'; '.join(map(str, last.unread))}" if last.unread else ""
        return Verdict(name, Status.FAIL, f"after {timeout_s:g}s, " + "; ".join(map(str, last.stale)) +
                       f" ({STALE_PROXIES.label}){unread}", figures=figures)
    if last.unread:
        return Verdict(name, Status.UNKNOWN, f"after {timeout_s:g}s, not every proxy's routing could be read: {last}",
                       figures=figures)
    return Verdict(name, Status.PASS, str(last), figures=figures)
