"""The observer effect: does the way the harness injects change what it measures? The guide's replica and controller
failures, repeated on one stack, alternating the two paths run by run: a one-shot Ray driver per command (as
before the fault agent) and the fault agent.

    .venv/bin/python benchmarks/observer_bench.py [--reps N] [--report-dir DIR]

Per path and scenario it prints the serving endpoints' availability (worst endpoint, raw) and longest outage
(median and worst over the runs), failed requests, the inject phase's length and the verdicts. The paths
alternate (one-shot, agent, one-shot, ...) so that both see the same stack as it ages. Each run is a full guide
scenario (restore, traffic, inject, confirm, recover, observe, verdict), judged by the shipped budgets.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from harness import guide
from harness.known_issues import STALE_PROXIES
from harness.local.backend import LocalCluster
from harness.records import Figure, ScenarioResult, load_budget
from harness.repair import restore
from harness.scenario import ScenarioRun
from harness.stack.config import load_config

PATHS = (("one-shot driver", False), ("fault agent", True))
SCENARIOS = ("replica_failure", "controller_failure")


def run_one(cluster: LocalCluster, name: str, folder: Path) -> ScenarioResult:
    restore(cluster, lambda msg: None)
    run = ScenarioRun(name, cluster, folder, load_budget(name, None), allowed_networks=cluster.allowed_networks(),
                      progress=lambda msg: None, known_issue=STALE_PROXIES if name == "controller_failure" else None)
    try:
        if name == "replica_failure":
            return guide.replica_failure(run, cluster, cluster.worker_names()[0])
        return guide.controller_failure(run, cluster)
    finally:
        run.close()


def figure(result: ScenarioResult, key: str) -> float | None:
    value = result.verdict.figures.get(key)
    return float(value) if value is not None else None


def inject_s(result: ScenarioResult) -> float | None:
    """How long the inject phase took (call -> the fault sent, as the scenario timed it)."""
    return next((p.seconds for p in result.phases if p.name == "inject"), None)


def lowest_endpoint(result: ScenarioResult) -> float | None:
    """The raw availability of the worst serving endpoint (the figure the budget holds every endpoint to)."""
    prefix = f"{Figure.AVAILABILITY}."
    per_endpoint = [float(v) for k, v in result.verdict.figures.items() if k.startswith(prefix)]
    return min(per_endpoint) if per_endpoint else figure(result, Figure.AVAILABILITY)


def summary(values: list[float | None], fmt: str, worst=min) -> str:
    seen = [v for v in values if v is not None]
    if not seen:
        return "not observed"
    return f"median {format(statistics.median(seen), fmt)}, worst {format(worst(seen), fmt)} (n={len(seen)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="runs of each scenario per path")
    parser.add_argument("--report-dir", default=None, help="keep each run's folder here (default: a temp folder)")
    args = parser.parse_args()
    root = Path(args.report_dir or tempfile.mkdtemp(prefix="observer-bench-"))

    cluster = LocalCluster(load_config())
    results: dict[tuple[str, str], list[ScenarioResult]] = {}
    started = time.monotonic()
    try:
        report = cluster.up(progress=lambda msg: print(f"[up] {msg}", flush=True))
        print(f"stack {cluster.run_id} up in {report.total_s:.1f}s; runs in {root}", flush=True)
        for rep in range(1, args.reps + 1):
            for name in SCENARIOS:
                for label, agent in PATHS:
                    cluster.use_agent = agent
                    folder = root / f"{name}-{'agent' if agent else 'oneshot'}-{rep}"
                    result = run_one(cluster, name, folder)
                    results.setdefault((label, name), []).append(result)
                    inject = inject_s(result)
                    print(f"  rep {rep} {name:<19} {label:<16} {result.outcome!s:<17} lowest endpoint "
                          f"{lowest_endpoint(result)} outage {figure(result, Figure.LONGEST_OUTAGE)}s "
                          f"failed {figure(result, Figure.FAILURES)} of {figure(result, Figure.REQUESTS)} "
                          f"inject {inject if inject is None else round(inject, 2)}s ({time.monotonic() - started:.0f}s so far)", flush=True)
    finally:
        cluster.use_agent = True
        cluster.down()

    print(f"\nside by side (one stack, paths alternating, {args.reps} runs each; budgets: the shipped ones):")
    for name in SCENARIOS:
        print(f"{name}:")
        for label, _ in PATHS:
            rows = results.get((label, name), [])
            print(f"  {label:<16} lowest endpoint availability {summary([lowest_endpoint(r) for r in rows], '.4f')}; "
                  f"longest outage {summary([figure(r, Figure.LONGEST_OUTAGE) for r in rows], '.3f', max)} s; "
                  f"failed requests {sum(figure(r, Figure.FAILURES) or 0 for r in rows):.0f} of "
                  f"{sum(figure(r, Figure.REQUESTS) or 0 for r in rows):.0f}; "
                  f"inject phase {summary([inject_s(r) for r in rows], '.2f', max)} s; "
                  f"as expected {sum(r.outcome.as_expected for r in rows)}/{len(rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
