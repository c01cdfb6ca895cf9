"""Where the CPU goes on a kind cluster while a worker pod is replaced, and what the proxies serve meanwhile.

    serve-chaos up --backend kind --kube-config cluster/kube/kind-offline.toml     # note its run id
    .venv/bin/python benchmarks/kind_cpu.py --run-id <id> [--node worker2] [--rate 8] [--baseline 10] [--window 90]

It attaches to the run and sends the harness's own traffic (the generator the scenarios use) to every node's proxy
through the run's own relays (started by attaching), as a scenario does. After ``--baseline`` seconds it deletes the pod that plays
``--node`` (the guide's worker pod failure) and goes on for ``--window`` seconds. Every second it reads the CPU
time of each cgroup from the kernel (cgroup v1 ``cpuacct.usage``, exact, processes that exited included): the
machine, each kind node's container (named by the kind node, which need not be the Ray node's name), each pod
inside one (named by the API server), and the rest of the host
(this process, its traffic child and relays, dockerd). It prints, per 10-second bin, the CPU of each group in % of
one core (the machine has ``os.cpu_count()`` cores: 200% is all of them here) and, per proxy, requests ok and
failed and their median latency. Nothing is judged: it shows who competes with the surviving proxies.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.history import History  # noqa: E402
from harness.kube.api import Resource  # noqa: E402
from harness.kube.kind import KindCluster  # noqa: E402
from harness.kube.settings import OFFLINE_SETTINGS, load_settings  # noqa: E402
from harness.stack.config import load_config  # noqa: E402
from harness.traffic import Traffic  # noqa: E402

CPUACCT = Path("/sys/fs/cgroup/cpuacct")
ALL_PODS = Resource("v1", "pods", namespaced=False)  # a list over every namespace
POD_SLICE = re.compile(r"pod([0-9a-f_]{32,36})\.slice$")  # a uid, or a static pod's config hash
BIN_S = 10.0


@dataclass(frozen=True)
class Sample:
    t: float                                   # seconds since the start
    usage_ns: dict[tuple[str, ...], int]       # a cgroup or process -> its cumulative CPU time
    # keys: ("machine",), ("node", node), ("pod", node, uid), ("proc", label, pid) for a host process


TICK_NS = 1e9 / os.sysconf("SC_CLK_TCK")


def read_ns(folder: Path) -> int:
    try:
        return int((folder / "cpuacct.usage").read_text())
    except (OSError, ValueError):
        return 0


def host_processes(me: int) -> dict[tuple[str, ...], int]:
    """The processes in the machine's root cgroup (not in a container), by name; this benchmark's own process
    tree (its traffic child; the relays are its threads) under one label."""
    stats: dict[int, tuple[int, str, int]] = {}
    for pid in (CPUACCT / "cgroup.procs").read_text().split():
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2:].split()
        stats[int(pid)] = (int(fields[1]), comm, int(fields[11]) + int(fields[12]))
    def mine(pid: int) -> bool:
        for _ in range(50):
            if pid == me:
                return True
            if pid not in stats or pid <= 1:
                return False
            pid = stats[pid][0]
        return False
    return {("proc", "this benchmark (traffic, relays)" if mine(pid) else comm, str(pid)): int(ticks * TICK_NS)
            for pid, (_, comm, ticks) in stats.items()}


def sample(t: float, containers: dict[str, str]) -> Sample:
    """One reading of every group: the machine, each node container and each pod in it, the host's processes."""
    usage: dict[tuple[str, ...], int] = {("machine",): read_ns(CPUACCT)}
    for cid, node in containers.items():
        root = CPUACCT / "docker" / cid
        usage[("node", node)] = read_ns(root)
        for slice_dir in root.rglob("*pod*.slice"):
            if match := POD_SLICE.search(slice_dir.name):
                usage[("pod", node, match.group(1).replace("_", "-"))] = read_ns(slice_dir)
    usage.update(host_processes(os.getpid()))
    return Sample(t, usage)


def kind_containers(cluster_name: str) -> dict[str, str]:
    """The run's kind node containers: their full Docker ids (their cgroup folders) to their node names."""
    listed = subprocess.run(("docker", "ps", "--no-trunc", "--format", "{{.ID}} {{.Names}}"), capture_output=True,
                            text=True, check=True).stdout.splitlines()
    found = {cid: name.removeprefix(f"{cluster_name}-") for cid, _, name in (line.partition(" ") for line in listed)
             if name.startswith(f"{cluster_name}-") and (CPUACCT / "docker" / cid).is_dir()}
    if not found:
        raise SystemExit(f"no container of kind cluster {cluster_name} under {CPUACCT}/docker")
    return found


def pod_names(cluster: KindCluster) -> dict[str, str]:
    """Pod uids (and a static pod's config hash, which names its cgroup) to namespace/name."""
    names = {}
    for pod in cluster.kube.list(ALL_PODS):
        meta = pod["metadata"]
        name = f"{meta['namespace']}/{meta['name']}"
        names[meta["uid"]] = name
        if config_hash := (meta.get("annotations") or {}).get("kubernetes.io/config.hash"):
            names[config_hash] = name
    return names


def cpu_table(samples: list[Sample], fault_t: float, names: dict[str, str]) -> list[str]:
    """Per bin (the baseline, then 10 s bins after the fault) each group's CPU in % of one core. A pod or process
    counts in a bin only if it was there at both ends; what one that started or ended in the bin used is in its
    node's rest (or the host's rest)."""
    edges = [samples[0].t, fault_t] + [fault_t + BIN_S * (i + 1) for i in range(int((samples[-1].t - fault_t) // BIN_S))]
    def at(t: float) -> Sample:
        return min(samples, key=lambda s: abs(s.t - t))
    bins = [(at(a), at(b)) for a, b in itertools.pairwise(edges) if at(b).t > at(a).t]
    rows: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(bins))
    for i, (a, b) in enumerate(bins):
        per_ns = 100 / 1e9 / (b.t - a.t)  # CPU nanoseconds in this bin -> % of one core
        delta = {k: b.usage_ns[k] - a.usage_ns[k] for k in b.usage_ns if k in a.usage_ns}
        rows["machine"][i] = delta[("machine",)] * per_ns
        in_nodes = 0.0
        for key, used in delta.items():
            if key[0] == "node":
                pods = sum(v for k, v in delta.items() if k[0] == "pod" and k[1] == key[1])
                rows[f"{key[1]}: kubelet, containerd, systemd"][i] += (used - pods) * per_ns
                in_nodes += used
            elif key[0] == "pod":
                rows[f"{key[1]}: pod {names.get(key[2], key[2][:8])}"][i] += used * per_ns
        procs = 0.0
        for key, used in delta.items():
            if key[0] == "proc":
                rows[f"host: {key[1]}"][i] += used * per_ns
                procs += used
        rows["host: kernel threads' and exited processes' rest"][i] += (delta[("machine",)] - in_nodes - procs) * per_ns
    head = "group".ljust(62) + "".join(f"{_label(a.t - fault_t, b.t - fault_t):>11}" for a, b in bins)
    order = sorted(rows, key=lambda g: (g != "machine", g.startswith("host"), g))
    return [head] + [g[:61].ljust(62) + "".join(f"{v:>10.0f}%" for v in rows[g])
                     for g in order if g == "machine" or max(rows[g]) >= 2]


def _label(a: float, b: float) -> str:
    return f"{a:+.0f}..{b:+.0f}s"


def traffic_table(history: Path, start: float, fault_t: float, end_t: float) -> list[str]:
    requests = History.load(history).requests
    per: dict[tuple[str, int], list] = defaultdict(list)
    for r in requests:
        t = r.t_mono - start
        index = -1 if t < fault_t else int((t - fault_t) // BIN_S)
        per[(r.node, index)].append(r)
    endpoints = sorted({r.node for r in requests})
    indexes = [-1] + list(range(int((end_t - fault_t) // BIN_S) + 1))
    lines = ["proxy".ljust(10) + "".join(f"{('before' if i < 0 else _label(i * BIN_S, (i + 1) * BIN_S)):>20}"
                                         for i in indexes)]
    for endpoint in endpoints:
        cells = []
        for i in indexes:
            rs = per.get((endpoint, i), [])
            ok = [r.latency_s for r in rs if r.ok]
            med = f"{statistics.median(ok):.2f}s" if ok else "-"
            cells.append(f"{len(ok):>4} ok {len(rs) - len(ok):>3} x {med:>6}")
        lines.append(endpoint.ljust(10) + "".join(f"{c:>20}" for c in cells))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-id", required=True, help="the kind run to attach to (serve-chaos up printed it)")
    parser.add_argument("--kube-config", default=str(OFFLINE_SETTINGS), help="kind/kube settings file")
    parser.add_argument("--node", default="worker2", help="the node whose pod is deleted")
    parser.add_argument("--rate", type=float, default=8.0, help="requests per second per proxy")
    parser.add_argument("--baseline", type=float, default=10.0, help="seconds of traffic before the fault")
    parser.add_argument("--window", type=float, default=90.0, help="seconds of traffic after it")
    args = parser.parse_args()
    if not (CPUACCT / "cpuacct.usage").exists():
        raise SystemExit(f"{CPUACCT}/cpuacct.usage is missing: this benchmark reads cgroup v1 CPU accounting")
    cluster = KindCluster(load_config(), load_settings(args.kube_config), run_id=args.run_id)
    cluster.attach()
    containers = kind_containers(cluster.names.kind_cluster)
    names = pod_names(cluster)
    print(f"machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}; run {args.run_id}; "
          f"kind nodes {sorted(containers.values())}", flush=True)
    samples: list[Sample] = []
    stop = threading.Event()
    start = time.monotonic()

    def sampler() -> None:
        while not stop.is_set():
            samples.append(sample(time.monotonic() - start, containers))
            stop.wait(1.0)

    endpoints = list(cluster.endpoints())  # the run's own relays (attach started them), as a scenario's traffic uses
    with tempfile.TemporaryDirectory(prefix="kind-cpu-") as tmp:
        history = Path(tmp) / "history.jsonl"
        thread = threading.Thread(target=sampler, name="cgroup-sampler", daemon=True)
        try:
            thread.start()
            with Traffic(endpoints, rate_per_endpoint=args.rate, timeout_s=2.0,
                         duration_s=args.baseline + args.window, history_path=history) as traffic:
                stop.wait(args.baseline)          # the named baseline window: traffic before the fault
                fault_t = time.monotonic() - start
                print(f"+{fault_t:.1f}s deleting the pod of {args.node}", flush=True)
                cluster.kill_node(args.node)
                traffic.wait()
            names.update(pod_names(cluster))  # the replacement pod's name
        finally:
            stop.set()
            thread.join(timeout=5)
            cluster.close()
        end_t = samples[-1].t
        print("\nCPU, % of one core, per window (0 = the pod deletion):")
        print("\n".join(cpu_table(samples, fault_t, names)))
        print(f"\nper proxy: ok, failed (x), median latency of the ok ones, at {args.rate:g} req/s, 2 s timeout:")
        print("\n".join(traffic_table(history, start, fault_t, end_t)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
