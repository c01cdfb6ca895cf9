"""How the harness reaches a kind cluster's proxies: port-forward streams vs. the pods' IPs, side by side.

    serve-chaos up --backend kind --kube-config cluster/kube/kind-offline.toml     # note its run id
    .venv/bin/python benchmarks/kind_reach.py --run-id <id> [--rates 2,8,20,40] [--duration 10]

It attaches to the run (the run's own ``up`` made the host routes) and, at each rate, sends the harness's own
traffic (``harness.traffic.Traffic``, the generator the scenarios use) to every node's proxy for ``--duration``
seconds, first through per-connection port-forward streams (``StreamDialer``, the API server and kubelet in the
path), then through a plain relay to each pod's IP (``DirectDialer``, what the kind backend uses). It prints, for
each path and rate: requests planned, ok, failed, the p50/p99 latency of the ok ones, and the connections the
relay opened; last, the same traffic straight to the pods' IPs with no relay (the cluster's own ceiling, so a
loss in a relayed row that this row does not show is the relay's). Nothing is pinned: on a 2-core machine the figures include the cluster's own load.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.checkers.traffic import percentile  # noqa: E402
from harness.history import History  # noqa: E402
from harness.kube.forward import Dialer, DirectDialer, PortForwards, StreamDialer  # noqa: E402
from harness.kube.kind import KindCluster  # noqa: E402
from harness.kube.settings import OFFLINE_SETTINGS, load_settings  # noqa: E402
from harness.stack.cluster import Endpoint  # noqa: E402
from harness.stack.config import load_config  # noqa: E402
from harness.traffic import Traffic  # noqa: E402


def send(endpoints: list[Endpoint], rate: float, duration_s: float, path: Path, networks: tuple[str, ...] = ()) -> str:
    with Traffic(endpoints, rate_per_endpoint=rate, timeout_s=2.0, duration_s=duration_s,
                 history_path=path, allowed_networks=networks) as traffic:
        traffic.wait()
    requests = History.load(path).requests
    ok = [r for r in requests if r.ok]
    lat = [r.latency_s for r in ok] or [float("nan")]
    return (f"{rate:>5g}/s x{len(endpoints)}  planned {int(rate * duration_s) * len(endpoints):>5}  "
            f"ok {len(ok):>5}  failed {len(requests) - len(ok):>5}  p50 {percentile(lat, 50) * 1000:7.1f} ms  "
            f"p99 {percentile(lat, 99) * 1000:7.1f} ms")


def run_path(cluster: KindCluster, dialer: Dialer, rate: float, duration_s: float, workdir: Path) -> str:
    forwards = PortForwards(dialer, cluster.running_pods, workdir)
    route = cluster.app().route
    endpoints = [Endpoint(s.name, forwards.add(s.name, cluster.config.app.serve_port).base_url + route)
                 for s in cluster.refresh() if s.pod]
    forwards.reconcile()
    forwards.start()
    try:
        line = send(endpoints, rate, duration_s, workdir / f"{dialer.via.replace(' ', '-')}-{rate:g}.jsonl")
    finally:
        forwards.stop()
    return f"{dialer.via:>19} {line}  connections {forwards.opened} (refused {forwards.refused})"


def run_unrelayed(cluster: KindCluster, rate: float, duration_s: float, workdir: Path) -> str:
    """The pods' IPs with no relay at all: the cluster's own capacity, the ceiling for both relayed paths."""
    route = cluster.app().route
    endpoints = [Endpoint(node, f"http://{pod.ip}:{cluster.config.app.serve_port}{route}")
                 for node, pod in cluster.running_pods().items() if pod is not None and pod.ip]
    line = send(endpoints, rate, duration_s, workdir / f"unrelayed-{rate:g}.jsonl", (str(cluster.pod_subnet),))
    return f"{'pod IP, no relay':>19} {line}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-id", required=True, help="the kind run to attach to (serve-chaos up printed it)")
    parser.add_argument("--kube-config", default=str(OFFLINE_SETTINGS), help="kind/kube settings file")
    parser.add_argument("--rates", default="2,8,20,40", help="requests per second per proxy, comma-separated")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per path and rate")
    args = parser.parse_args()
    cluster = KindCluster(load_config(), load_settings(args.kube_config), run_id=args.run_id)
    cluster.attach()
    try:
        print(f"machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}; run {args.run_id}")
        with tempfile.TemporaryDirectory(prefix="kind-reach-") as tmp:
            for rate in (float(r) for r in args.rates.split(",")):
                for dialer in (StreamDialer(cluster.kube, cluster.names.namespace), DirectDialer()):
                    print(run_path(cluster, dialer, rate, args.duration, Path(tmp)), flush=True)
                print(run_unrelayed(cluster, rate, args.duration, Path(tmp)), flush=True)
    finally:
        cluster.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
