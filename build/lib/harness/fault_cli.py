"""``python -m harness inject FAULT [--target NODE]``: one fault of the guide, by hand, against the stack
that ``python -m harness up`` left running. Prints what it did, when the fault took effect, when the stack
recovered, and the identity evidence (PIDs before -> after)."""

from __future__ import annotations

import argparse
import sys
import time

from harness.exit_codes import ExitCode
from harness.faults import (
    CATALOGUE,
    FaultError,
    FaultKind,
    TargetKind,
    fault_kind,
)
from harness.identity import identities
from harness.stack.cluster import Cluster
from harness.waiting import WaitTimeout, wait_until

DEFAULT_STATE_DIR = "/tmp/serve-chaos"


def _target(cluster: Cluster, kind: FaultKind, target: str | None) -> str:
    """The target the user named, or the default for the fault's kind: the last running worker, the head."""
    if kind.target is TargetKind.HEAD:
        return target or "head"
    if kind.target is TargetKind.CONTROLLER:
        return "controller"
    if target:
        return target
    workers = cluster.worker_names()
    if not workers:
        raise FaultError("the stack has no running worker")
    return workers[-1]


def register(subparsers: argparse._SubParsersAction) -> None:
    epilog = "faults:\n" + "\n".join(f"  {k.cli:<18} {k.description}" for k in CATALOGUE)
    p = subparsers.add_parser("inject", help="inject one fault into the running stack and watch it recover",
                              epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("fault", choices=sorted(k.cli for k in CATALOGUE), metavar="FAULT",
                   help="one of: " + ", ".join(k.cli for k in CATALOGUE))
    p.add_argument("--target", help="the node (default: the last running worker; the head for kill-head)")
    p.add_argument("--recover-timeout", type=float, default=120.0, help="seconds to wait for recovery")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    p.set_defaults(func=cmd_inject)


def cmd_inject(args: argparse.Namespace) -> int:
    from harness.local.backend import LocalCluster
    from harness.stack.errors import StackError

    try:
        cluster = LocalCluster.attach(args.state_dir)
        before = cluster.wait_healthy(timeout_s=30)
        kind = fault_kind(args.fault)
        fault = kind.build(cluster, _target(cluster, kind, args.target), cluster.app())
    except (StackError, FaultError, WaitTimeout) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.UNKNOWN if isinstance(exc, FaultError) else ExitCode.STACK
    t0 = time.monotonic()

    def say(msg: str) -> None:
        print(f"[inject {kind.cli}] {time.monotonic() - t0:6.1f}s {msg}", flush=True)  # as scenarios print

    say(f"{fault.name} on {fault.target}: injecting ({kind.description})")
    try:
        fault.inject()
        say("injected")
        wait_until(f"{fault.name} to take effect", fault.taken_effect, timeout_s=30, interval_s=0.1)
        say("took effect")
        wait_until(f"{fault.name} to recover", fault.recovered, timeout_s=args.recover_timeout, interval_s=0.25)
        say("recovered" + (f": {'; '.join(fault.findings)}" if fault.findings else ""))
    except (FaultError, WaitTimeout) as exc:
        say(f"error: {exc}")
        return ExitCode.FAIL
    finally:
        fault.heal()
    print("identity evidence (before -> after):")
    for row in identities(before, cluster.status()):
        if row.changed:
            print(f"  {row.kind:<10} {row.what:<36} {row.before or '-'} -> {row.after or '-'}")
    unchanged = sum(1 for r in identities(before, cluster.status()) if not r.changed)
    print(f"  ({unchanged} unchanged)")
    return 0
