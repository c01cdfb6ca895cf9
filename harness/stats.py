"""Repetition statistics: pass rates and the spread of outage and recovery figures over many runs, so that
flakiness is a number. Reads only the verdict.json files that scenario runs wrote."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.scenario import is_control


@dataclass(frozen=True)
class Spread:
    n: int
    median: float | None
    low: float | None  # the smallest
    high: float | None  # the largest
    q1: float | None
    q3: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            return cls(0, None, None, None, None, None)
        ordered = sorted(values)
        if len(ordered) >= 2:
            q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
        else:
            q1 = q3 = ordered[0]
        return cls(len(ordered), statistics.median(ordered), ordered[0], ordered[-1], q1, q3)

    def text(self, unit: str = "s") -> str:
        if self.median is None:
            return "-"
        return f"{self.median:.2f}{unit} [{self.low:.2f}-{self.high:.2f}]"


@dataclass(frozen=True)
class ScenarioStats:
    scenario: str
    runs: int
    passed: int
    longest_outage_s: Spread
    time_to_recover_s: Spread
    availability: Spread

    @property
    def pass_rate(self) -> float:
        return self.passed / self.runs if self.runs else 0.0


@dataclass(frozen=True)
class Observation:
    scenario: str
    status: str
    figures: dict[str, float]


def observations(run_dirs: Iterable[Path]) -> list[Observation]:
    found = []
    for run_dir in run_dirs:
        for verdict_file in sorted(Path(run_dir).glob("*/verdict.json")):
            data = json.loads(verdict_file.read_text())
            if is_control(data):
                continue  # a control's figures are not the scenario's
            figures: dict[str, float] = {}
            for part in data["verdict"].get("parts", []):
                figures.update({k: float(v) for k, v in part.get("figures", {}).items()})
            found.append(Observation(data["scenario"], data["status"], figures))
    return found


def scenario_stats(found: Sequence[Observation]) -> list[ScenarioStats]:
    names = sorted({o.scenario for o in found})
    table = []
    for name in names:
        mine = [o for o in found if o.scenario == name]

        def values(key: str) -> list[float]:
            return [o.figures[key] for o in mine if key in o.figures]

        table.append(ScenarioStats(name, len(mine), sum(o.status == "pass" for o in mine),
                                   Spread.of(values("longest_outage_s")), Spread.of(values("time_to_recover_s")),
                                   Spread.of(values("availability"))))
    return table


def format_table(table: Sequence[ScenarioStats]) -> str:
    lines = [f"{'scenario':<22}{'pass rate':>12}  {'longest outage median [min-max]':<34}{'time to recover median [min-max]':<34}"]
    for s in table:
        lines.append(f"{s.scenario:<22}{f'{s.passed}/{s.runs}':>12}  {s.longest_outage_s.text():<34}{s.time_to_recover_s.text():<34}")
    return "\n".join(lines)
