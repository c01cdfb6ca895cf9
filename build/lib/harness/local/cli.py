"""``python -m harness up | status | down``: the local stack by hand."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

from rich.console import Console

from harness.exit_codes import ExitCode
from harness.local.backend import LocalCluster, StackError
from harness.stack.app import app_under_test
from harness.stack.config import ConfigError, load_config

DEFAULT_STATE_DIR = "/tmp/serve-chaos"


def register(subparsers: argparse._SubParsersAction) -> None:
    up = subparsers.add_parser("up", help="bring up the local stack and print its endpoints")
    up.add_argument("--stack-config", metavar="FILE", help="TOML file overriding cluster/local.toml")
    up.set_defaults(func=cmd_up)

    status = subparsers.add_parser("status", help="what runs: nodes, controller, proxies, replicas")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    status.set_defaults(func=cmd_status)

    down = subparsers.add_parser("down", help="remove the stack and anything earlier runs left behind")
    down.add_argument("--stack-config", metavar="FILE", help="the file given to up, if it moved state_dir")
    down.set_defaults(func=cmd_down)


def _sigterm_as_interrupt() -> None:
    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def cmd_up(args: argparse.Namespace) -> int:
    err = Console(stderr=True, soft_wrap=True)
    try:
        config = load_config(args.stack_config)
        app = app_under_test(config)  # a Serve config, app or route that does not resolve is a config error
        cluster = LocalCluster(config)
    except (ConfigError, StackError) as exc:
        err.print(f"[red]error:[/] {exc}", markup=True, highlight=False)
        return ExitCode.UNKNOWN if isinstance(exc, ConfigError) else ExitCode.STACK
    _sigterm_as_interrupt()
    start = time.monotonic()

    def progress(msg: str) -> None:
        err.print(f"[{time.monotonic() - start:6.1f}s] {msg}", highlight=False, markup=False)

    err.print(f"run {cluster.run_id}: {1 + config.workers.count} Ray nodes, GCS fault tolerance "
              f"{'on' if config.gcs_ft else 'off'}, app {app.application!r} (routes {', '.join(app.routes)})", highlight=False, markup=False)
    try:
        with err.status("bringing the stack up", spinner="dots") if err.is_terminal else _null():
            report = cluster.up(progress)
    except (ConfigError, StackError) as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        return ExitCode.UNKNOWN if isinstance(exc, ConfigError) else ExitCode.STACK
    status = cluster.status()
    out = Console(soft_wrap=True)
    out.print(f"stack {cluster.run_id} is up in {report.total_s:.1f}s "
              f"({', '.join(f'{p.name} {p.seconds:.1f}s' for p in report.phases)})", highlight=False, markup=False)
    for node in status.nodes:
        out.print(f"  {node.name:<8} {node.role:<6} {node.address}", highlight=False, markup=False)
    out.print("endpoints:", markup=False)
    for ep in cluster.endpoints():
        out.print(f"  {ep.node:<8} {ep.url}", highlight=False, markup=False)
    out.print(f"dashboard: http://{cluster.head.address}:{config.app.dashboard_port}", highlight=False, markup=False)
    return 0


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def cmd_status(args: argparse.Namespace) -> int:
    try:
        cluster = LocalCluster.attach(args.state_dir)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.STACK
    status = cluster.status()
    if args.json:
        print(json.dumps(status.to_json(), indent=2))
        return 0
    print(f"run {status.run_id}; Serve REST API {'reachable' if status.serve_api_reachable else 'NOT reachable'}")
    print("nodes:")
    for n in status.nodes:
        print(f"  {n.name:<8} {n.role:<6} {n.address:<14} {'alive' if n.alive else 'DOWN':<5} ray={n.ray_state}")
    c = status.controller
    print(f"controller: {'none' if c is None else f'pid {c.pid} on {c.node} ({c.actor_id})'}")
    print("proxies:")
    for p in status.proxies:
        print(f"  {str(p.node):<8} {p.status:<10} pid {p.pid}  {p.url}")
    print("replicas:")
    for r in status.replicas:
        print(f"  {r.replica_id:<24} {str(r.node):<8} {r.state:<10} pid {r.pid}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.stack_config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.UNKNOWN
    start = time.monotonic()
    try:
        cluster = LocalCluster.attach(config.network.state_dir)
    except StackError:
        cluster = LocalCluster(config)  # nothing current: still sweep what crashed runs left behind
    try:
        removed = cluster.down()
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.STACK
    print(f"removed {', '.join(removed) if removed else 'nothing (no stack was up)'} in {time.monotonic() - start:.1f}s")
    return 0
