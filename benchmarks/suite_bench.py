"""Seed suite benchmark: the suite's wall time and, per scenario, the time Ray needed to recover against
the harness's own overhead.

    .venv/bin/python benchmarks/suite_bench.py [--report-dir DIR] [-- extra pytest args]

Per scenario (from the phase timings in each verdict.json):
  ray          = from the end of the injection to "recovered" (the confirm and recover phases): Ray at work,
                 including Serve's own detection (a killed replica or a failing health check shows only
                 when Serve notices it), the pod restart and the operator
  after        = the checks that run a second change after recovery (head: scale up and back; controller:
                 a replica killed and replaced) -- Ray at work again, reported apart
  overhead     = everything else: arrange, baseline traffic, injecting (e.g. starting a driver), confirming,
                 the observation window past recovery, the verdict
Goals on a 2-core machine: suite within 15 minutes, overhead at most 25% of each scenario's time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.records import scenario_folders
from harness.stats import run_folders

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report-dir", default=None, help="keep the reports here (default: a temp folder)")
    parser.add_argument("--from-reports", action="store_true", help="do not run: aggregate what --report-dir holds")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments, e.g. -k head_failure")
    args = parser.parse_args()
    report_dir = Path(args.report_dir or tempfile.mkdtemp(prefix="suite-bench-"))
    start = time.monotonic()
    returncode = 0
    if not args.from_reports:
        returncode = subprocess.run([sys.executable, "-m", "pytest", "scenarios/test_guide.py", "-q", "-p",
                                     "no:cacheprovider", "--report-dir", str(report_dir), *args.pytest_args],
                                    cwd=REPO).returncode
    wall = time.monotonic() - start
    rows = []
    for folder in (f for run in run_folders(report_dir) for f in scenario_folders(run)):  # not reports/latest
        v = folder.read_result()
        if v.scenario == "random_schedule" or v.is_control:
            continue  # the seed scenarios only: not a random schedule's example, not a control
        phases = {p.name: p.seconds for p in v.phases}
        total = sum(phases.values())
        ray = phases.get("confirm", 0.0) + phases.get("recover", 0.0)
        after = phases.get("after recovery", 0.0)
        overhead = total - ray - after
        rows.append((v.scenario, str(v.verdict.status), total, ray, after, overhead))
    print(f"\n{'scenario':<22}{'verdict':>8}{'total s':>9}{'ray s':>8}{'after s':>9}{'overhead s':>12}{'overhead %':>12}")
    for name, status, total, ray, after, overhead in rows:
        print(f"{name:<22}{status:>8}{total:>9.1f}{ray:>8.1f}{after:>9.1f}{overhead:>12.1f}{100 * overhead / total:>11.0f}%")
    scenario_time = sum(r[2] for r in rows)
    if not args.from_reports:
        print(f"suite wall time {wall:.0f} s (goal 900 s: {wall / 900:.2f} of it), of which scenarios "
              f"{scenario_time:.0f} s and stack bring-up/teardown and pytest {wall - scenario_time:.0f} s; "
              f"pytest exit {returncode}")
    worst = max((r[5] / r[2] for r in rows), default=0.0)
    print(f"largest overhead share {100 * worst:.0f}% (goal 25%)")
    return returncode


if __name__ == "__main__":
    sys.exit(main())
