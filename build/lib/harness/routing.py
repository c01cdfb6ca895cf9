"""Which replicas each proxy routes to, set against the replicas the controller runs.

A proxy learns its replicas by long-polling the Serve controller. When the controller is replaced by a new
actor (killed with ``no_restart=True``, then the Serve config applied again: the guide's procedure, and what
KubeRay's RayService does), the long-poll clients of the proxies that survive stop for good: Ray 2.60's
``LongPollClient`` ends on the ``RayActorError`` of the old controller and nothing starts it again
(ray-project/ray#63784). Such a proxy keeps routing to the replicas it last heard of: a replica started since
never gets its traffic, and once every replica it knows has died, its requests hang until the client's
timeout. The stack looks healthy to every other check (the apps are RUNNING, the proxies answer health
checks and serve while their old replicas live), so the harness reads the proxies' own routing tables:

    last = wait_routing_converged(cluster, timeout_s=20)     # -> RoutingReading (harness.checkers.routing)

A backend's ``proxy_routing`` reads the tables with a driver (``harness.stack.drivers.read_routing``); the
judgement is ``harness.checkers.routing``; the waits and the repair are here. ``refresh_proxies`` replaces
proxies whose routing is stale: it kills them (``no_restart=True``) and the controller starts new ones, which
subscribe to it afresh.
"""

from __future__ import annotations

from collections.abc import Iterable

from harness.checkers.routing import (
    RoutingReading,
    StaleRoute,
    reading,
    reading_verdict,
    routes_of,
)
from harness.stack.cluster import Cluster
from harness.stack.drivers import RoutingUnavailable
from harness.verdict import Status, Verdict
from harness.waiting import WaitTimeout, wait_until


class RoutingRepairFailed(RuntimeError):
    """Stale proxies could not be replaced, or were replaced and are still stale."""


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
    """Within ``timeout_s``, every proxy routes every application's route to exactly the replicas the controller
    runs (``harness.checkers.routing.reading_verdict`` judges the last reading); UNKNOWN when nothing could be
    read."""
    try:
        last = wait_routing_converged(cluster, timeout_s=timeout_s)
    except RoutingUnavailable as exc:
        return Verdict(name, Status.UNKNOWN, str(exc), figures={"unread_routes": 1.0})
    return reading_verdict(last, name, timeout_s)
