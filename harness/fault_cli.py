"""``python -m harness inject FAULT [--target NODE]``: one fault of the guide, by hand, against the stack
that ``python -m harness up`` left running. Prints what it did, when the fault took effect, when the stack
recovered, and the identity evidence (PIDs before -> after)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from harness.faults import (
    FailHealthCheck,
    Fault,
    FaultError,
    KillController,
    KillHead,
    KillProxy,
    KillReplica,
    KillWorkerPod,
    LoseWorkerNode,
)
from harness.identity import identities
from harness.stack.cluster import Cluster
from harness.waiting import WaitTimeout, wait_until

DEFAULT_STATE_DIR = "/tmp/serve-chaos"


def _worker(cluster: Cluster, target: str | None) -> str:
    workers = cluster.worker_names()
    if not workers:
        raise FaultError("the stack has no running worker")
    return target or workers[-1]


def _health_url(cluster: Cluster, target: str | None) -> str:
    node = _worker(cluster, target)
    return next(e.url for e in cluster.endpoints(route="/health") if e.node == node)


FAULTS: dict[str, tuple[str, Callable[[Cluster, str | None], Fault]]] = {
    "kill-worker-pod": ("SIGKILL a worker's processes; its restart policy brings it back",
                        lambda c, t: KillWorkerPod(c, _worker(c, t))),
    "lose-worker-node": ("lose a worker for good; a replacement node joins",
                         lambda c, t: LoseWorkerNode(c, _worker(c, t))),
    "kill-head": ("SIGKILL the head's processes; it restarts on the same Redis", lambda c, t: KillHead(c)),
    "kill-controller": ("ray.kill the Serve controller with no_restart=True", lambda c, t: KillController(c)),
    "kill-replica": ("ray.kill one replica on a node with no_restart=True",
                     lambda c, t: KillReplica(c, _worker(c, t))),
    "kill-proxy": ("ray.kill the proxy of a node with no_restart=False", lambda c, t: KillProxy(c, _worker(c, t))),
    "fail-health-check": ("make one replica of the health-check app fail its check_health",
                          lambda c, t: FailHealthCheck(c, _health_url(c, t))),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    epilog = "faults:\n" + "\n".join(f"  {name:<18} {text}" for name, (text, _) in FAULTS.items())
    p = subparsers.add_parser("inject", help="inject one fault into the running stack and watch it recover",
                              epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("fault", choices=sorted(FAULTS), metavar="FAULT", help="one of: " + ", ".join(FAULTS))
    p.add_argument("--target", help="the node (default: the last running worker; the head for kill-head)")
    p.add_argument("--recover-timeout", type=float, default=120.0, help="seconds to wait for recovery")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    p.set_defaults(func=cmd_inject)


def cmd_inject(args: argparse.Namespace) -> int:
    from harness.local.backend import LocalCluster, StackError

    try:
        cluster = LocalCluster.attach(args.state_dir)
        before = cluster.wait_healthy(timeout_s=30)
        fault = FAULTS[args.fault][1](cluster, args.target)
    except (StackError, FaultError, WaitTimeout) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    t0 = time.monotonic()

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f}s] {msg}", flush=True)

    say(f"{fault.name} on {fault.target}: injecting ({FAULTS[args.fault][0]})")
    try:
        fault.inject()
        say("injected")
        wait_until(f"{fault.name} to take effect", fault.taken_effect, timeout_s=30, interval_s=0.1)
        say("took effect")
        wait_until(f"{fault.name} to recover", fault.recovered, timeout_s=args.recover_timeout, interval_s=0.25)
        say("recovered" + (f": {'; '.join(fault.findings)}" if fault.findings else ""))
    except (FaultError, WaitTimeout) as exc:
        say(f"error: {exc}")
        return 1
    finally:
        fault.heal()
    print("identity evidence (before -> after):")
    for row in identities(before, cluster.status()):
        if row.changed:
            print(f"  {row.kind:<10} {row.what:<36} {row.before or '-'} -> {row.after or '-'}")
    unchanged = sum(1 for r in identities(before, cluster.status()) if not r.changed)
    print(f"  ({unchanged} unchanged)")
    return 0
