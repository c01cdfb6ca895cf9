"""Host routes to a kind cluster's pods, so that the harness reaches each pod's IP directly.

kind's nodes are containers on one Docker network that the host is on; each node holds one slice of the
cluster's pod subnet (its ``spec.podCIDR``). A route per node, ``ip route replace <podCIDR> via <node
address> proto 212``, lets the host open a plain TCP connection to any pod, with no API server in the path
(port-forward streams carry only ~8 requests/s per proxy on 2 cores: docs/kubernetes.md, "Measured").

Every run has its own pod subnet (``pod_subnet``, from the run id: 10.128.0.0/16 to 10.191.0.0/16, clear
of kind's service subnet 10.96.0.0/16), so two runs' routes never share a destination; a subnet that a
route on the host already covers is refused before the cluster is created. Routes carry protocol 212: the
run's are removed on ``down`` (everything of ours inside its subnet) and a sweep removes ours whose subnet
belongs to no kind cluster that still exists.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass

from harness.kube.api import KubeObject
from harness.kube.tools import KubeStackError, Runner

ROUTE_PROTO = "212"  # marks the routes serve-chaos adds: `ip route show proto 212` lists exactly those
SUBNET_FIRST = 128  # pod subnets are 10.<SUBNET_FIRST + n>.0.0/16, n < SUBNET_COUNT
SUBNET_COUNT = 64
IP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class HostRoute:
    dst: str  # a network ("10.130.1.0/24") or "default"
    gateway: str | None
    ours: bool  # added by serve-chaos (protocol 212)


@dataclass(frozen=True)
class NodeRoute:
    """A kind node's slice of the pod subnet and the address it is reached at."""

    node: str
    pod_cidr: str
    address: str


def pod_subnet(run_id: str) -> ipaddress.IPv4Network:
    """The run's pod subnet (a /16 in 10.128.0.0/10's lower half), from the hex digits of its id."""
    digits = run_id.removeprefix("sc")
    try:
        n = int(digits, 16)
    except ValueError:
        raise KubeStackError(f"run id {run_id!r} has no hex digits to choose a pod subnet from") from None
    return ipaddress.IPv4Network(f"10.{SUBNET_FIRST + n % SUBNET_COUNT}.0.0/16")


def _ip(runner: Runner, *args: str, what: str) -> str:
    result = runner.run(("ip", *args), timeout_s=IP_TIMEOUT_S)
    if not result.ok:
        raise KubeStackError(f"{what} failed (`ip {' '.join(args)}`): {result.tail(3)}")
    return result.stdout


def host_routes(runner: Runner) -> tuple[HostRoute, ...]:
    """Every IPv4 route in the host's main table."""
    text = _ip(runner, "-j", "-4", "route", "show", what="listing the host's routes")
    try:
        rows = json.loads(text or "[]")
    except json.JSONDecodeError:
        raise KubeStackError(f"`ip -j -4 route show` printed no JSON: {text[:200]!r}") from None
    if not isinstance(rows, list):
        raise KubeStackError(f"`ip -j -4 route show` printed {type(rows).__name__}, not a list of routes")
    return tuple(HostRoute(str(r.get("dst", "")), r.get("gateway"), str(r.get("protocol", "")) == ROUTE_PROTO)
                 for r in rows if isinstance(r, dict))


def _network(dst: str) -> ipaddress.IPv4Network | None:
    if dst == "default":
        return None
    try:
        return ipaddress.IPv4Network(dst, strict=False)
    except ValueError:
        return None


def subnet_problem(routes: Iterable[HostRoute], subnet: ipaddress.IPv4Network) -> str | None:
    """Why ``subnet`` cannot be this run's pod subnet (a route already covers part of it), or None."""
    for route in routes:
        net = _network(route.dst)
        if net is not None and net.overlaps(subnet):
            owner = "a route of another serve-chaos kind run" if route.ours else "a route on this host"
            return f"{owner} ({route.dst} via {route.gateway or 'a link'}) already covers the pod subnet {subnet}"
    return None


def node_routes(nodes: Iterable[KubeObject]) -> tuple[tuple[NodeRoute, ...], tuple[str, ...]]:
    """The route for every node that has a podCIDR and an internal address, and the names of those without."""
    routes, missing = [], []
    for node in nodes:
        name = str((node.get("metadata") or {}).get("name", "?"))
        cidr = (node.get("spec") or {}).get("podCIDR")
        addresses = (node.get("status") or {}).get("addresses") or []
        address = next((a.get("address") for a in addresses if a.get("type") == "InternalIP"), None)
        if cidr and address:
            routes.append(NodeRoute(name, str(cidr), str(address)))
        else:
            missing.append(name)
    return tuple(routes), tuple(missing)


def add_node_routes(runner: Runner, routes: Iterable[NodeRoute], subnet: ipaddress.IPv4Network) -> None:
    """Route each node's pod CIDR through its address; a CIDR outside the run's subnet is refused."""
    for route in routes:
        if not ipaddress.IPv4Network(route.pod_cidr).subnet_of(subnet):
            raise KubeStackError(f"node {route.node} has podCIDR {route.pod_cidr}, outside the run's pod subnet "
                                 f"{subnet}: the kind config's networking.podSubnet was not applied")
        _ip(runner, "route", "replace", route.pod_cidr, "via", route.address, "proto", ROUTE_PROTO,
            what=f"routing {route.node}'s pods ({route.pod_cidr}) via {route.address}")


def remove_routes(runner: Runner, keep: Iterable[ipaddress.IPv4Network] = (),
                  within: ipaddress.IPv4Network | None = None) -> list[str]:
    """Delete our routes (protocol 212) inside ``within`` (None: anywhere) and in none of ``keep``; returns them."""
    keep = tuple(keep)
    removed = []
    for route in host_routes(runner):
        net = _network(route.dst)
        if not route.ours or net is None:
            continue
        if (within is not None and not net.subnet_of(within)) or any(net.subnet_of(k) for k in keep):
            continue
        _ip(runner, "route", "del", route.dst, "proto", ROUTE_PROTO, what=f"removing the route to {route.dst}")
        removed.append(route.dst)
    return removed
