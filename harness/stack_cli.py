"""``serve-chaos up | status | down | sweep | manifests``: a stack by hand, on any backend.

    serve-chaos up [--backend local|kind|kube] [--stack-config FILE] [--json]
    serve-chaos status [--backend ...] [--json]       # nodes, controller, proxies, replicas
    serve-chaos down [--backend ...] [--run-id ID]    # the stack, and what crashed runs left behind
    serve-chaos sweep --backend kind|kube             # only what crashed runs left behind
    serve-chaos manifests --out DIR                   # a run's Kubernetes objects as YAML, to read

Every command names its stack the same way (``harness/backends.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import time
from pathlib import Path

from rich.console import Console

from harness.backends import (
    StackChoice,
    add_stack_options,
    attach_stack,
    kube_run_id,
    new_stack,
)
from harness.exit_codes import ExitCode
from harness.stack.app import app_under_test
from harness.stack.config import ConfigError
from harness.stack.errors import StackError


def register(subparsers: argparse._SubParsersAction) -> None:
    up = subparsers.add_parser("up", help="bring up a stack and print its endpoints")
    up.set_defaults(func=cmd_up)
    status = subparsers.add_parser("status", help="what runs: nodes, controller, proxies, replicas")
    status.set_defaults(func=cmd_status)
    down = subparsers.add_parser("down", help="remove the stack and anything earlier runs left behind")
    down.set_defaults(func=cmd_down)
    for parser in (up, status, down):
        add_stack_options(parser)
        parser.add_argument("--json", action="store_true", help="print what the command reports as JSON")

    sweep = subparsers.add_parser("sweep", help="remove only what crashed runs left behind (kept runs stay)")
    add_stack_options(sweep)
    sweep.add_argument("--json", action="store_true", help="print the run ids removed as JSON")
    sweep.set_defaults(func=cmd_sweep)

    manifests = subparsers.add_parser("manifests", help="write a Kubernetes run's objects as YAML, to read")
    manifests.add_argument("--out", required=True, type=Path, help="folder for the YAML files")
    manifests.add_argument("--stack-config", metavar="FILE", help="TOML file overriding cluster/local.toml")
    manifests.add_argument("--kube-config", metavar="FILE", help="TOML file overriding cluster/kube/kube.toml")
    manifests.add_argument("--run-id", default="sc000000", help="the run id in names and labels (default sc000000)")
    manifests.set_defaults(func=cmd_manifests)


def _error(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return ExitCode.UNKNOWN if isinstance(exc, ConfigError) else ExitCode.STACK


def _sigterm_as_interrupt() -> None:
    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def cmd_up(args: argparse.Namespace) -> int:
    err = Console(stderr=True, soft_wrap=True)
    choice = StackChoice.from_args(args)
    try:
        config = choice.config()
        app = app_under_test(config)  # a Serve config, app or route that does not resolve is a config error
        cluster = new_stack(choice)
    except (ConfigError, StackError) as exc:
        return _error(exc)
    _sigterm_as_interrupt()
    start = time.monotonic()

    def progress(msg: str) -> None:
        err.print(f"[{choice.backend} {cluster.run_id}] {time.monotonic() - start:6.1f}s {msg}", highlight=False,
                  markup=False)

    err.print(f"run {cluster.run_id} ({choice.backend}): {1 + config.workers.count} Ray nodes, GCS fault tolerance "
              f"{'on' if config.gcs_ft else 'off'}, app {app.application!r} (routes {', '.join(app.routes)})",
              highlight=False, markup=False)
    try:
        with err.status("bringing the stack up", spinner="dots") if err.is_terminal else contextlib.nullcontext():
            report = cluster.up(progress)
        status = cluster.status()
        endpoints = cluster.endpoints()
    except (ConfigError, StackError) as exc:
        return _error(exc)
    finally:
        if choice.backend != "local":
            cluster.close()  # the run stays up; its port-forwards are this process's
    if args.json:
        print(json.dumps({
            "backend": choice.backend, "run_id": cluster.run_id, "seconds": round(report.total_s, 3),
            "phases": [{"name": p.name, "seconds": round(p.seconds, 3)} for p in report.phases],
            "nodes": [{"name": n.name, "role": n.role, "address": n.address} for n in status.nodes],
            "endpoints": [{"node": e.node, "url": e.url} for e in endpoints],
        }, indent=2))
        return ExitCode.OK
    out = Console(soft_wrap=True)
    out.print(f"stack {cluster.run_id} is up in {report.total_s:.1f}s "
              f"({', '.join(f'{p.name} {p.seconds:.1f}s' for p in report.phases)})", highlight=False, markup=False)
    for node in status.nodes:
        out.print(f"  {node.name:<8} {node.role:<6} {node.address}", highlight=False, markup=False)
    if choice.backend == "local":
        out.print("endpoints:", markup=False)
        for ep in endpoints:
            out.print(f"  {ep.node:<8} {ep.url}", highlight=False, markup=False)
        out.print(f"dashboard: http://{cluster.head.address}:{config.app.dashboard_port}", highlight=False, markup=False)
    else:
        out.print(f"the run stays up; every later command reaches it through relays of its own "
                  f"(`serve-chaos status --backend {choice.backend}`)", highlight=False, markup=False)
    return ExitCode.OK


def cmd_status(args: argparse.Namespace) -> int:
    choice = StackChoice.from_args(args)
    try:
        cluster = attach_stack(choice)
    except (ConfigError, StackError) as exc:
        return _error(exc)
    try:
        status = cluster.status()
    except StackError as exc:
        return _error(exc)
    finally:
        cluster.close()
    if args.json:
        print(json.dumps({"backend": choice.backend, **status.to_json()}, indent=2))
        return ExitCode.OK
    print(f"run {status.run_id} ({choice.backend}); Serve REST API "
          f"{'reachable' if status.serve_api_reachable else 'NOT reachable'}")
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
    return ExitCode.OK


def _removed(args: argparse.Namespace, backend: str, removed: list[str], seconds: float) -> int:
    if args.json:
        print(json.dumps({"backend": backend, "removed": removed, "seconds": round(seconds, 3)}))
    else:
        print(f"removed {', '.join(removed) if removed else 'nothing (no stack was up)'} in {seconds:.1f}s")
    return ExitCode.OK


def cmd_down(args: argparse.Namespace) -> int:
    choice = StackChoice.from_args(args)
    start = time.monotonic()
    try:
        if choice.backend == "local":
            from harness.local.backend import LocalCluster

            try:
                cluster = LocalCluster.attach(choice.local_state_dir(), choice.run_id)
            except StackError:  # nothing current: still sweep what crashed runs left behind
                cluster = LocalCluster(choice.config())
            removed = cluster.down()
        else:
            from harness.kube import make_cluster, sweep

            try:  # the run named (in whatever state), else the one up
                run_id = choice.run_id or kube_run_id(choice)
            except StackError:  # no run up: what crashed runs left behind
                removed = sweep(choice.backend, choice.kube_config, choice.context, choice.kubeconfig)
            else:
                cluster = make_cluster(choice.backend, choice.config(), kube_config=choice.kube_config,
                                       context=choice.context, kubeconfig=choice.kubeconfig, run_id=run_id)
                removed = cluster.down()
    except (ConfigError, StackError) as exc:
        return _error(exc)
    return _removed(args, choice.backend, removed, time.monotonic() - start)


def cmd_sweep(args: argparse.Namespace) -> int:
    choice = StackChoice.from_args(args)
    start = time.monotonic()
    try:
        if choice.backend == "local":
            from harness.local.backend import live_runs
            from harness.local.backend import sweep as sweep_local

            removed = list(sweep_local(Path(choice.local_state_dir()), keep=tuple(live_runs())))
        else:
            from harness.kube import sweep

            removed = sweep(choice.backend, choice.kube_config, choice.context, choice.kubeconfig)
    except (ConfigError, StackError) as exc:
        return _error(exc)
    return _removed(args, choice.backend, removed, time.monotonic() - start)


def cmd_manifests(args: argparse.Namespace) -> int:
    from harness.kube.kuberay_schema import check_stack
    from harness.kube.manifests import stack_manifests, write_files
    from harness.kube.settings import load_settings
    from harness.stack.config import load_config

    try:
        cfg, settings = load_config(args.stack_config), load_settings(args.kube_config)
        problems = check_stack(stack_manifests(cfg, settings, args.run_id, password=None, on_kind=True))
        if problems:
            raise ConfigError("the generated objects do not validate:\n" + "\n".join(str(p) for p in problems))
        for path in write_files(args.out, cfg, settings, args.run_id):
            print(path)
    except ConfigError as exc:
        return _error(exc)
    return ExitCode.OK
