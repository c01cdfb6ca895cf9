"""How the harness reaches a kind cluster's proxies: port-forward streams vs. the pods' IPs, side by side.

    serve-chaos up --backend kind --kube-config cluster/kube/kind-offline.toml     # note its run id
    .venv/bin/python benchmarks/kind_reach.py --run-id <id> [--rates 2,8,20,40] [--duration 10]

It attaches to the run (the run's own ``up`` made the host routes) and, at each rate, sends the harness's own
traffic (``harness.traffic.Traffic``, the generator the scenarios use) to every node's proxy for ``--duration``
seconds, first through per-connection port-forward streams (``StreamDialer``, the API server and kubelet in the
path), then through a plain relay to each pod's IP (``DirectDialer``, what the kind backend uses). It prints, for
each path and rate: requests planned, ok, failed, the p50/p99 latency of the ok ones, and the connections the
relay opened. Nothing is pinned: on a 2-core machine the figures include the cluster's own load.
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


def run_path(cluster: KindCluster, dialer: Dialer, rate: float, duration_s: float, workdir: Path) -> str:
    forwards = PortForwards(dialer, cluster.running_pods, workdir)
    route = cluster.app().route
    endpoints = [Endpoint(s.name, forwards.add(s.name, cluster.config.app.serve_port).base_url + route)
                 for s in cluster.refresh() if s.pod]
    forwards.reconcile()
    forwards.start()
    path = workdir / f"{dialer.via.replace(' ', '-')}-{rate:g}.jsonl"
    try:
        with Traffic(endpoints, rate_per_endpoint=rate, timeout_s=2.0, duration_s=duration_s,
                     history_path=path) as traffic:
            traffic.wait()
    finally:
        forwards.stop()
    requests = History.load(path).requests
    ok = [r for r in requests if r.ok]
    lat = [r.latency_s for r in ok] or [float("nan")]
    return (f"{dialer.via:>19} {rate:>5g}/s x{len(endpoints)}  planned {int(rate * duration_s) * len(endpoints):>5}  "
            f"ok {len(ok):>5}  failed {len(requests) - len(ok):>5}  p50 {percentile(lat, 50) * 1000:7.1f} ms  "
            f"p99 {percentile(lat, 99) * 1000:7.1f} ms  connections {forwards.opened} (refused {forwards.refused})")


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
    finally:
        cluster.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
