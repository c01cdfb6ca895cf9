"""``serve-chaos inject FAULT [--target NODE] [--backend local|kind|kube] [--json]``: one fault of the guide, by
hand, against the stack that ``serve-chaos up`` left running. Prints what it did, when the fault took effect,
when the stack recovered, and the identity evidence (PIDs before -> after); ``--json`` prints the same as one
object at the end."""

from __future__ import annotations

import argparse
import json
import sys
import time

from harness.backends import StackChoice, add_stack_options, attach_stack
from harness.exit_codes import ExitCode
from harness.faults import (
    CATALOGUE,
    FaultError,
    FaultKind,
    HeldFault,
    TargetKind,
    fault_kind,
)
from harness.identity import identities
from harness.stack.cluster import Cluster
from harness.stack.config import ConfigError
from harness.stack.errors import StackError
from harness.waiting import WaitTimeout, observation_window, wait_until


def _target(cluster: Cluster, kind: FaultKind, target: str | None) -> str:
    """The target the user named, or the default for the fault's kind: the last running worker, the head."""
    if kind.target is TargetKind.HEAD:
        return target or "head"
    if kind.target is TargetKind.CONTROLLER:
        return "controller"
    if kind.target is TargetKind.REDIS:
        return "redis"
    if kind.target is TargetKind.APP:
        return target or cluster.app().application
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
    p.add_argument("--hold", type=float, default=None,
                   help="seconds a held fault (freeze, partition, degrade, redis-down) lasts before it is ended "
                        "(default: the fault's own, 10 s)")
    p.add_argument("--recover-timeout", type=float, default=120.0, help="seconds to wait for recovery")
    p.add_argument("--json", action="store_true", help="print the timeline and the identity evidence as JSON at the end")
    add_stack_options(p)
    p.set_defaults(func=cmd_inject)


def cmd_inject(args: argparse.Namespace) -> int:
    try:
        cluster = attach_stack(StackChoice.from_args(args))
    except (ConfigError, StackError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.UNKNOWN if isinstance(exc, ConfigError) else ExitCode.STACK
    try:
        return _inject(cluster, args)
    finally:
        cluster.close()


def _inject(cluster: Cluster, args: argparse.Namespace) -> int:
    try:
        before = cluster.wait_healthy(timeout_s=30)
        kind = fault_kind(args.fault)
        fault = kind.build(cluster, _target(cluster, kind, args.target), cluster.app())
        if args.hold is not None:
            if not isinstance(fault, HeldFault):
                raise FaultError(f"--hold applies to a held fault (one that lasts until it is ended); {kind.cli} "
                                 f"ends by itself")
            fault.hold_s = args.hold
    except (StackError, FaultError, WaitTimeout) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.UNKNOWN if isinstance(exc, FaultError) else ExitCode.STACK
    t0 = time.monotonic()
    timeline: list[dict] = []
    # with --json the progress goes to stderr, so stdout is the one JSON object
    stream = sys.stderr if args.json else sys.stdout

    def say(event: str, msg: str) -> None:
        timeline.append({"event": event, "at_s": round(time.monotonic() - t0, 3), "detail": msg})
        print(f"[inject {kind.cli}] {time.monotonic() - t0:6.1f}s {msg}", file=stream, flush=True)  # as scenarios print

    say("start", f"{fault.name} on {fault.target}: injecting ({kind.description})")
    error = None
    try:
        fault.inject()
        say("injected", "injected")
        wait_until(f"{fault.name} to take effect", fault.taken_effect, timeout_s=30, interval_s=0.1)
        say("took_effect", "took effect")
        if isinstance(fault, HeldFault):
            observation_window(f"{fault.name} held", fault.hold_s)
            fault.heal()
            say("healed", f"ended after a hold of {fault.hold_s:g}s")
        wait_until(f"{fault.name} to recover", fault.recovered, timeout_s=args.recover_timeout, interval_s=0.25)
        say("recovered", "recovered" + (f": {'; '.join(fault.findings)}" if fault.findings else ""))
    except (FaultError, WaitTimeout) as exc:
        error = str(exc)
        say("error", f"error: {exc}")
    finally:
        fault.heal()
    rows = identities(before, cluster.status()) if error is None else ()
    if args.json:
        print(json.dumps({
            "fault": kind.cli, "target": fault.target, "ok": error is None, "error": error, "timeline": timeline,
            "findings": list(fault.findings),
            "identities": [{"kind": r.kind, "what": r.what, "before": r.before, "after": r.after,
                            "changed": r.changed} for r in rows],
        }, indent=2))
    if error is not None:
        return ExitCode.FAIL
    if not args.json:
        print("identity evidence (before -> after):")
        for row in rows:
            if row.changed:
                print(f"  {row.kind:<10} {row.what:<36} {row.before or '-'} -> {row.after or '-'}")
        print(f"  ({sum(1 for r in rows if not r.changed)} unchanged)")
    return ExitCode.OK
