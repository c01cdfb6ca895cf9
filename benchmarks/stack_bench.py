"""Local stack benchmark: cold bring-up time by phase, teardown time, idle memory (PSS) and CPU of the stack.

    .venv/bin/python benchmarks/stack_bench.py [--runs N] [--idle-window S]

Goals on a 2-core machine: healthy within 45 s of `up` (10 s of it is the app's own constructor),
teardown within 5 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from pathlib import Path

from harness.local import system
from harness.local.backend import LocalCluster
from harness.stack.config import load_config


def stack_pids(cluster: LocalCluster) -> list[int]:
    pids = {pid for pid, rid in system.labeled_processes().items() if rid == cluster.run_id}
    for node in cluster.nodes:
        pids |= set(system.netns_pids(node.netns))
    return sorted(p for p in pids if system.pid_alive(p))


def pss_mb(pids: list[int]) -> float:
    total_kb = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


def cpu_seconds(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


def idle_cpu_share(cluster: LocalCluster, window_s: float) -> float:
    """Share of one core the stack used over an idle measurement window (no traffic)."""
    pids = stack_pids(cluster)
    before, t0 = cpu_seconds(pids), time.monotonic()
    threading.Event().wait(window_s)  # the measurement window itself
    return (cpu_seconds(pids) - before) / (time.monotonic() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--idle-window", type=float, default=20.0, help="seconds of idle CPU measurement")
    args = parser.parse_args()
    config = load_config(overrides={"network": {"state_dir": "/tmp/scbench"}})
    ups, downs, phase_rows = [], [], []
    for run in range(1, args.runs + 1):
        cluster = LocalCluster(config)
        t0 = time.monotonic()
        try:
            report = cluster.up()
            ups.append(time.monotonic() - t0)
            phase_rows.append(report.phases)
            if run == 1:
                pids = stack_pids(cluster)
                print(f"idle stack: {len(pids)} processes, PSS {pss_mb(pids):.0f} MB, "
                      f"CPU {100 * idle_cpu_share(cluster, args.idle_window):.0f}% of one core "
                      f"over {args.idle_window:g} s")
        finally:
            t1 = time.monotonic()
            cluster.down()
            downs.append(time.monotonic() - t1)
        print(f"run {run}: up {ups[-1]:.1f} s ("
              + ", ".join(f"{p.name} {p.seconds:.1f}" for p in report.phases) + f"), down {downs[-1]:.2f} s")
    names = [p.name for p in phase_rows[0]]
    med = {n: statistics.median(row[i].seconds for row in phase_rows) for i, n in enumerate(names)}
    print("median phases: " + ", ".join(f"{n} {s:.1f} s" for n, s in med.items()))
    print(f"up: median {statistics.median(ups):.1f} s (goal 45 s, {statistics.median(ups) / 45:.2f} of it); "
          f"down: median {statistics.median(downs):.2f} s (goal 5 s, {statistics.median(downs) / 5:.2f} of it)")


if __name__ == "__main__":
    main()
