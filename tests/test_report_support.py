"""Run folders for the report tests, written the way a scenario writes them (no tests in this module).

A scenario folder gets ``history.jsonl`` through HistoryWriter and ``verdict.json`` from a ScenarioResult whose
checks are the scenario runner's own (``ScenarioRun.standard_checks``), on a hand-built history: steady traffic
to two endpoints, the guide's phases as notes, one fault injected, taken effect, recovered and healed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

from history_builders import WALL_OFFSET, event, steady, traffic_mark

from harness.checkers.faults import fault_took_effect
from harness.history import (
    EventKind,
    FaultEvent,
    History,
    HistoryWriter,
    Record,
    TrafficPhase,
)
from harness.identity import IdentityRow
from harness.known_issues import KnownIssue
from harness.records import Budget, PhaseTiming, ScenarioResult
from harness.scenario import ScenarioRun
from harness.verdict import Status, combine

DATA = Path(__file__).parent / "data" / "report"
REAL_RUN = "20261125-095509-07e7"  # a real run (trimmed): worker_pod_failure, failed on replicas_running, logs
INTERVAL = 0.05
NODES = ("a", "b")
BUDGET = Budget(min_availability=0.95, max_outage_s=3.0, max_recovery_s=10.0, rate_per_endpoint=1 / INTERVAL)
PHASES = (("arrange", 0.0), ("traffic", 0.5), ("inject", 5.0), ("confirm", 5.05), ("recover", 5.3),
          ("observe", 9.0), ("verdict", 19.5))
INJECT, TAKEN_EFFECT, RECOVERED, HEALED = 5.0, 5.3, 9.0, 19.6


def note(t: float, text: str, name: str = "scenario", target: str = "demo") -> FaultEvent:
    return FaultEvent(t, t + WALL_OFFSET, EventKind.NOTE, name, target, text)


def scenario_records(*, outage: tuple[float, float] | None, fault: bool = True,
                     recovered: bool = True) -> list[Record]:
    """Traffic to a and b from 1 s to 19 s; node a fails inside ``outage``; the fault's life and phases."""
    records: list[Record] = [FaultEvent(t, t + WALL_OFFSET, EventKind.PHASE, name, "demo") for name, t in PHASES]
    records += [traffic_mark(1.0, NODES, 1 / INTERVAL), traffic_mark(19.0, NODES, 1 / INTERVAL, TrafficPhase.STOPPED)]
    records += steady("a", 1.0, 19.0, INTERVAL, failing=outage, pid=101)
    records += steady("b", 1.0 + INTERVAL / 2, 19.0, INTERVAL, pid=202)
    if fault:
        records += [event(INJECT, EventKind.INJECT), event(TAKEN_EFFECT, EventKind.TAKEN_EFFECT),
                    event(HEALED, EventKind.HEALED)]
        if recovered:
            records.append(event(RECOVERED, EventKind.RECOVERED))
    return records


IDENTITIES = (
    IdentityRow("node", "head", "3724da83ebc6", "3724da83ebc6", False),
    IdentityRow("controller", "Serve controller", "pid 401 on head", "pid 512 on head", True),
    IdentityRow("replica", "SleepyPid ioir5vst on a", "pid 101", "pid 101", False),
)


def write_history(folder: Path, records: list[Record]) -> History:
    folder.mkdir(parents=True, exist_ok=True)
    with HistoryWriter(folder / "history.jsonl") as writer:
        writer.append(*records)
    return History.load(folder / "history.jsonl")


def write_scenario(run_dir: Path, name: str, *, outage: tuple[float, float] | None = None, fault: bool = True,
                   recovered: bool = True, verdict: bool = True, logs: dict[str, str] | None = None,
                   expected: str | None = None, known_issue: KnownIssue | None = None,
                   ray_version: str = "2.60.0") -> Path:
    """A scenario folder as ScenarioRun leaves it; ``verdict=False`` stops before verdict.json (a crash);
    ``expected="fail"`` marks a control scenario; ``known_issue`` a scenario that shows one."""
    folder = run_dir / f"test_{name}"
    history = write_history(folder, scenario_records(outage=outage, fault=fault, recovered=recovered))
    if verdict:
        runner = SimpleNamespace(budget=BUDGET)  # standard_checks reads only the budget
        checks = [fault_took_effect(history), *ScenarioRun.standard_checks(runner, history, list(NODES))]
        phases = tuple(PhaseTiming(n, t, 0.1, "ok") for n, t in PHASES)
        result = ScenarioResult(name, "sc000000", combine(name, checks), BUDGET, NODES, IDENTITIES, (), phases,
                                Status(expected) if expected else Status.PASS, known_issue, ray_version)
        obj = result.to_json()
        (folder / "verdict.json").write_text(json.dumps(obj, indent=2, default=str))
    for rel, text in (logs or {}).items():
        (folder / "logs" / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / "logs" / rel).write_text(text)
    return folder


def three_verdicts_run(run_dir: Path) -> Path:
    """A run with a pass, a fail (a 7 s outage against a 3 s budget) and an unknown (no fault injected)."""
    write_scenario(run_dir, "replica_failure", outage=(5.0, 5.5))
    write_scenario(run_dir, "head_failure", outage=(5.0, 12.0), logs={"logs__head.log": "head died\n"})
    write_scenario(run_dir, "proxy_failure", fault=False)
    return run_dir


def copy_real_run(dest_parent: Path) -> Path:
    return Path(shutil.copytree(DATA / REAL_RUN, dest_parent / REAL_RUN))
