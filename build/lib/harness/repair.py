"""Repairing a shared stack between scenarios: what a session does so that every scenario starts on a healthy
stack (the nodes that should run are started, the Serve config applied if the app is gone, the proxies that
outlived a replaced controller replaced). Kept next to the routing repair it uses (``harness.routing``)."""

from __future__ import annotations

import time
from collections.abc import Callable

from harness.routing import RoutingUnavailable, refresh_proxies, wait_routing_converged
from harness.stack.cluster import Cluster
from harness.stack.errors import StackError


def restore(cluster: Cluster, say: Callable[[str], None] | None = None) -> None:
    """Bring a shared stack back to healthy before a scenario: nodes that should run are started, the Serve
    config is applied if the app is gone, then the stack must be healthy, and every proxy must route to the
    replicas the controller runs (a proxy that outlived a replaced controller is replaced: harness/routing.py)."""
    say = say or (lambda msg: print(msg, flush=True))

    try:
        cluster.wait_healthy(timeout_s=20)
    except StackError as first:
        say(f"stack not healthy before the scenario, restoring: {first}".splitlines()[0])
        for node in ("head", *cluster.worker_names()):
            if not cluster.node_alive(node):
                cluster.start_node(node)
        if cluster.status().controller is None:
            cluster.apply_serve_config()
        cluster.wait_healthy()
    try:
        reading = wait_routing_converged(cluster, timeout_s=10)
        if reading.unread:
            say(f"proxy routing partly unread before the scenario: {'; '.join(map(str, reading.unread))}")
        if reading.stale:
            say("stale proxy routing before the scenario, replacing those proxies: " + "; ".join(map(str, reading.stale)))
            started = time.monotonic()
            replaced = refresh_proxies(cluster, reading.stale)
            cluster.wait_healthy()
            say(f"replaced the proxies on {', '.join(replaced)} in {time.monotonic() - started:.1f}s; "
                "routing converged")
    except RoutingUnavailable as exc:  # not readable here; a failed repair (RoutingRepairFailed) propagates
        say(f"proxy routing not checked: {exc}")
