"""``serve-chaos traffic`` (send open-loop load, record a History) and ``serve-chaos verdict``
(judge a History: availability and longest outage against budgets).

    serve-chaos traffic --url http://127.0.0.1:8000/ --rate 20 --duration 60 --out run.jsonl
    serve-chaos verdict run.jsonl --min-availability 0.99 --max-outage 5 --json

``verdict`` exits 0 on pass, 1 on fail, 2 on unknown or unreadable input. Unknown includes a hole in the
evidence: a gap between observed sends longer than the budget tolerates (``harness.checkers.traffic``). Its default budgets are
strict (availability 1.0, no outage): KubeRay's GCS fault-tolerance test asks for zero failed requests.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from urllib.parse import urlsplit

from rich.console import Console

from harness.checkers.traffic import check_all, standard_checks
from harness.history import History, HistoryError
from harness.measures import RETRY_3X_EXPONENTIAL, observed_resolution
from harness.stack.cluster import Endpoint
from harness.traffic import (
    AnyOk,
    PidBody,
    ResponseCheck,
    Traffic,
    TrafficError,
    TrafficTargetRefused,
)
from harness.verdict import Status, Verdict

CHECKS: dict[str, ResponseCheck] = {"pid": PidBody(), "any": AnyOk()}
EXIT_CODES = {Status.PASS: 0, Status.FAIL: 1, Status.UNKNOWN: 2}
PROGRESS_PERIOD_S = 0.5


def register(subparsers: argparse._SubParsersAction) -> None:
    traffic = subparsers.add_parser("traffic", help="send open-loop HTTP load and record every request")
    traffic.add_argument("--url", action="append", required=True, metavar="[NODE=]URL",
                         help="an endpoint (repeatable); NODE names it in the history (default host:port)")
    traffic.add_argument("--rate", type=float, required=True, help="requests per second to each endpoint")
    traffic.add_argument("--duration", type=float, required=True, help="seconds; traffic stops by itself then")
    traffic.add_argument("--out", type=Path, required=True, help="history file (JSON Lines, appended to)")
    traffic.add_argument("--timeout", type=float, default=2.0, help="client timeout in seconds (default 2)")
    traffic.add_argument("--check", choices=sorted(CHECKS), default="pid",
                         help="what a 2xx body must be: pid (an integer PID, the guide's app) or any")
    traffic.add_argument("--allow-network", action="append", metavar="CIDR",
                         help="a private network traffic may go to besides loopback (repeatable); the subnets "
                              "of the local stacks that the harness runs on this machine are always allowed")
    traffic.set_defaults(func=run_traffic)

    verdict = subparsers.add_parser("verdict", help="judge a history: availability and longest outage")
    verdict.add_argument("history", type=Path)
    verdict.add_argument("--min-availability", type=float, default=1.0, help="per endpoint (default 1.0)")
    verdict.add_argument("--max-outage", type=float, default=0.0, help="seconds (default 0: no outage)")
    verdict.add_argument("--endpoint", action="append", metavar="NODE|URL",
                         help="judge only these endpoints (repeatable; default all)")
    verdict.add_argument("--json", action="store_true", help="print the figures and verdicts as JSON")
    verdict.set_defaults(func=run_verdict)


def parse_endpoint(text: str) -> Endpoint:
    node, sep, url = text.partition("=")
    if not sep or "://" in node:
        url = text
        parts = urlsplit(url)
        node = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    return Endpoint(node, url)


def harness_stack_networks() -> list[str]:
    """The subnets of the live local stacks the harness made on this machine (their bridges exist only here)."""
    from harness.local.backend import live_runs
    from harness.local.layout import RunLayout

    networks = []
    for run_id, folder in live_runs().items():
        try:
            networks.append(RunLayout(folder.parent, run_id).read_config().network.subnet)
        except (OSError, ValueError):
            continue
    return networks


def run_traffic(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    try:
        traffic = Traffic(
            [parse_endpoint(u) for u in args.url],
            rate_per_endpoint=args.rate,
            timeout_s=args.timeout,
            duration_s=args.duration,
            history_path=args.out,
            check=CHECKS[args.check],
            allowed_networks=[*(args.allow_network or []), *harness_stack_networks()],
        )
    except (TrafficTargetRefused, ValueError) as exc:
        console.print(f"refused: {exc}", markup=False)
        return 2
    try:
        with traffic:
            if console.is_terminal:
                with console.status("") as status:
                    while not traffic.poll(PROGRESS_PERIOD_S):
                        counts = traffic.counts()
                        status.update(f"traffic: {counts.ok} ok, {counts.failed} failed", spinner="dots")
            counts = traffic.wait()
    except TrafficError as exc:
        console.print(f"traffic failed: {exc}", markup=False)
        return 1
    console.print(f"traffic done: {counts.ok} ok, {counts.failed} failed; history in {args.out}", markup=False)
    return 0


def verdict_json(history: History, verdict: Verdict) -> dict:
    figures = dict(verdict.figures)
    resolution = observed_resolution(history)
    return {
        "status": str(verdict.status),
        "availability": figures.get("availability"),
        f"availability_{RETRY_3X_EXPONENTIAL.name}": figures.get(f"availability_{RETRY_3X_EXPONENTIAL.name}"),
        "longest_outage_s": figures.get("longest_outage_s"),
        "requests": len(history.requests),
        "failures": sum(r.observed and not r.ok for r in history.requests),
        "abandoned": sum(not r.observed for r in history.requests),
        "resolution_s": verdict.resolution_s,
        "resolution": resolution.to_json(),
        "truncated": history.truncated,
        "figures": figures,
        "verdicts": [p.to_json() for p in verdict.parts],
    }


def run_verdict(args: argparse.Namespace) -> int:
    try:
        history = History.load(args.history).select(args.endpoint)
    except HistoryError as exc:
        print(f"cannot read history: {exc}", file=sys.stderr)
        return 2
    verdict = check_all(
        history, *standard_checks(min_availability=args.min_availability, max_outage_s=args.max_outage)
    )
    summary = verdict_json(history, verdict)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{verdict.status.upper()}: {summary['requests']} requests, {summary['failures']} failed"
              + (f", {summary['abandoned']} abandoned in flight" if summary["abandoned"] else "")
              + (" (history truncated: its last line was cut)" if history.truncated else ""))
        print(f"  {observed_resolution(history).text()}")
        for part in verdict.parts:
            print(f"  {part.status:<7} {part.name}: {part.reason}")
    return EXIT_CODES[verdict.status]
