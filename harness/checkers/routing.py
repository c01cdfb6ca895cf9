"""Judging proxies' routing tables against the replicas the controller runs: stale routes, tables that could
not be read, and the verdict of a reading. Pure functions of a StackStatus and the tables read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.known_issues import STALE_PROXIES
from harness.stack.cluster import ProxyRoute, StackStatus
from harness.verdict import Status, Verdict


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


def _nodes_of_proxies(status: StackStatus, routing: Sequence[ProxyRoute]) -> dict[str, str | None]:
    """The node of each proxy actor read: as Serve's status lists it, else by the Ray node id its actor name ends
    with (``SERVE_PROXY_ACTOR-<node id>``). HAProxy mode runs, besides each node's HAProxyManager, a ``fallback``
    ProxyActor on the head (``SERVE_PROXY_ACTOR-fallback-<node id>``) that Serve's status does not list."""
    node_of: dict[str, str | None] = {p.actor_id: p.node for p in status.proxies}
    by_ray_id = {n.ray_node_id: n.name for n in status.nodes if n.ray_node_id}
    for row in routing:
        if node_of.get(row.proxy_actor_id) is None:
            node_of[row.proxy_actor_id] = by_ray_id.get(row.proxy_name.rsplit("-", 1)[-1])
    return node_of


def stale_routes(status: StackStatus, routing: Sequence[ProxyRoute]) -> tuple[StaleRoute, ...]:
    """Routes whose proxy's replica set differs from the RUNNING replicas the controller runs for that route:
    of the deployment the proxies route there, else of the application whose route prefix it is. Unreadable
    rows are not stale (``reading`` reports them as unread)."""
    node_of = _nodes_of_proxies(status, routing)
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
    node_of = _nodes_of_proxies(status, routing)
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


def reading_verdict(last: RoutingReading, name: str, timeout_s: float) -> Verdict:
    """PASS when the reading converged; FAIL naming each stale route (figure ``stale_routes``: the only failure
    that shows the stale-proxy defect); UNKNOWN, naming each proxy and error, when a table could not be read."""
    figures = {"stale_routes": float(len(last.stale)), "unread_routes": float(len(last.unread))}
    if last.stale:
        unread = f"; also unread: {'; '.join(map(str, last.unread))}" if last.unread else ""
        return Verdict(name, Status.FAIL, f"after {timeout_s:g}s, " + "; ".join(map(str, last.stale)) +
                       f" ({STALE_PROXIES.label}){unread}", figures=figures)
    if last.unread:
        return Verdict(name, Status.UNKNOWN, f"after {timeout_s:g}s, not every proxy's routing could be read: {last}",
                       figures=figures)
    return Verdict(name, Status.PASS, str(last), figures=figures)
