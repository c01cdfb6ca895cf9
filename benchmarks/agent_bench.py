"""The fault agent against one-shot drivers, side by side on one stack in one run.

    .venv/bin/python benchmarks/agent_bench.py [--reps N] [--traffic-window S]
    .venv/bin/python benchmarks/agent_bench.py --backend kind --run-id <id>     # a kind run that is up (not downed)

For each path (a fresh driver per command, as before; the fault agent) it prints:
- the inject latency of each actor fault (KillController, KillReplica, KillProxy): from the call to the kill
  being sent. The agent reports when it sent the kill; a one-shot driver sends it at the end of its process,
  so its figure is the whole call (what the history recorded before);
- one reading of every proxy's routing table;
then the agent's own CPU and memory (idle and after the commands), and the harness's CPU during traffic at
20 req/s per endpoint outside injections (this process, the traffic child, the agent). Each fault is waited
out (the stack healthy again) before the next. On kind the one-shot driver is an exec of python in the head pod
and the agent runs in the head pod (its CPU read from its own answers). Goals: inject <= 0.2 s, routing <= 0.3 s, harness CPU <= 5% of
one core.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from stack_bench import cpu_seconds  # the same CPU reading as the stack benchmark

from harness.faults import fault_kind
from harness.local.backend import LocalCluster
from harness.stack.config import load_config
from harness.traffic import AnyOk, Traffic
from harness.waiting import wait_until

ACTOR_FAULTS = ("kill-controller", "kill-replica", "kill-proxy")
PATHS = (("one-shot driver", False), ("fault agent", True))


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):7.3f}s  worst {max(values):7.3f}s  (n={len(values)})"


def inject_latency(cluster: LocalCluster, cli: str) -> float:
    """Call -> kill sent, for one actor fault; then wait until it has recovered and the stack is healthy."""
    cluster.wait_healthy(timeout_s=120)
    kind = fault_kind(cli)
    workers = cluster.worker_names()
    fault = kind.build(cluster, workers[-1] if cli != "kill-controller" else "controller", cluster.app())
    called = time.time()
    fault.inject()
    returned = time.time()
    kills = [e for e in cluster.events() if e.kind == "actor_killed" and e.t_wall >= called - 0.001]
    sent = kills[-1].t_wall if kills and "fault agent" in kills[-1].detail else returned
    try:
        wait_until(f"{fault.name} to take effect", fault.taken_effect, timeout_s=60, interval_s=0.1)
        wait_until(f"{fault.name} to recover", fault.recovered, timeout_s=180, interval_s=0.25)
    finally:
        fault.heal()
    return sent - called


def routing_latency(cluster: LocalCluster) -> float:
    started = time.monotonic()
    rows = cluster.proxy_routing(cluster.app().routes)
    assert rows and all(r.replicas is not None for r in rows), rows
    return time.monotonic() - started


def harness_cpu_share(cluster, window_s: float, rate: float) -> tuple[float, float, float, int]:
    """Share of one core used by this process, the traffic child and the agent over a window of traffic."""
    import os

    with tempfile.TemporaryDirectory() as folder:
        traffic = Traffic(cluster.endpoints(), rate_per_endpoint=rate, timeout_s=2.0, duration_s=window_s + 30,
                          history_path=Path(folder) / "h.jsonl", check=AnyOk(),
                          allowed_networks=cluster.allowed_networks())
        with traffic:
            pids = {"harness": os.getpid(), "traffic": traffic.pid}
            before = {k: cpu_seconds([p]) for k, p in pids.items() if p}
            agent_before = cluster.agent.stats().cpu_s  # its own reading: in the head pod on kind
            t0 = time.monotonic()
            threading.Event().wait(window_s)  # the measurement window itself
            elapsed = time.monotonic() - t0
            after = {k: cpu_seconds([p]) for k, p in pids.items() if p}
            agent_after = cluster.agent.stats().cpu_s
            counts = traffic.counts()
    shares = {k: (after[k] - before[k]) / elapsed for k in before}
    return (shares.get("harness", 0.0), shares.get("traffic", 0.0), (agent_after - agent_before) / elapsed,
            counts.total)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each fault and reading per path")
    parser.add_argument("--traffic-window", type=float, default=30.0, help="seconds of traffic for the CPU figure")
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second per endpoint")
    parser.add_argument("--backend", choices=("local", "kind"), default="local",
                        help="local: a stack of its own, downed at the end; kind: attach to --run-id")
    parser.add_argument("--run-id", help="the kind run to attach to (serve-chaos up --backend kind printed it)")
    parser.add_argument("--kube-config", default=None, help="kind settings file (default: the offline one)")
    args = parser.parse_args()

    if args.backend == "kind":
        from harness.kube.kind import KindCluster
        from harness.kube.settings import OFFLINE_SETTINGS, load_settings

        if not args.run_id:
            parser.error("--backend kind needs --run-id (a run that `serve-chaos up --backend kind` left up)")
        cluster = KindCluster(load_config(), load_settings(args.kube_config or OFFLINE_SETTINGS), run_id=args.run_id)
        cluster.attach()
        cluster.agent.wait_ready(timeout_s=90)
    else:
        cluster = LocalCluster(load_config())
    try:
        if args.backend == "local":
            report = cluster.up(progress=lambda msg: print(f"[up] {msg}", flush=True))
            print(f"stack {cluster.run_id} up in {report.total_s:.1f}s "
                  f"({', '.join(f'{p.name} {p.seconds:.1f}s' for p in report.phases)})")
        idle0 = cluster.agent.stats()
        threading.Event().wait(10.0)  # an idle window for the agent's own CPU
        idle1 = cluster.agent.stats()
        results: dict[tuple[str, str], list[float]] = {}
        for rep in range(args.reps):
            for label, agent in PATHS:
                cluster.use_agent = agent
                results.setdefault((label, "routing reading"), []).append(routing_latency(cluster))
                for cli in ACTOR_FAULTS:
                    seconds = inject_latency(cluster, cli)
                    results.setdefault((label, cli), []).append(seconds)
                    print(f"  rep {rep + 1} {label:<16} {cli:<16} call -> kill sent {seconds:.3f}s", flush=True)
        cluster.use_agent = True
        after = cluster.agent.stats()
        harness, traffic, agent_share, sent = harness_cpu_share(cluster, args.traffic_window, args.rate)

        print("\nside by side (same stack, same run):")
        print(f"  {'what':<28} {'one-shot driver':<44} {'fault agent':<44} ratio")
        for what in ("routing reading", *ACTOR_FAULTS):
            old, new = results[("one-shot driver", what)], results[("fault agent", what)]
            ratio = statistics.median(old) / max(statistics.median(new), 1e-6)
            print(f"  {what:<28} {spread(old):<44} {spread(new):<44} {ratio:6.0f}x")
        print(f"\nfault agent: idle {(idle1.cpu_s - idle0.cpu_s) / 10.0 * 100:.1f}% of one core over 10 s; "
              f"{after.cpu_s - idle1.cpu_s:.2f} CPU-s for {after.commands - idle1.commands} commands; "
              f"RSS {after.rss_mb:.0f} MB (max)")
        print(f"harness CPU during traffic ({args.rate:g} req/s per endpoint, {args.traffic_window:g}s, {sent} requests, "
              f"no injection): this process {harness * 100:.1f}%, traffic child {traffic * 100:.1f}%, "
              f"agent {agent_share * 100:.1f}% of one core; total {(harness + traffic + agent_share) * 100:.1f}%")
    finally:
        if args.backend == "local":
            cluster.down()
        else:
            cluster.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
