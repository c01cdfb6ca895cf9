"""Repetition statistics: pass rates and the spread of outage and recovery figures over many runs, so that
flakiness is a number. Reads only the verdict.json files that scenario runs wrote."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.known_issues import Outcome
from harness.records import scenario_folders


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
    outcomes: Mapping[Outcome, int]  # how many runs ended in each outcome
    longest_outage_s: Spread
    time_to_recover_s: Spread
    availability: Spread

    @property
    def passed(self) -> int:
        return self.outcomes.get(Outcome.PASSED, 0)

    @property
    def expected_failures(self) -> int:
        return self.outcomes.get(Outcome.EXPECTED_FAILURE, 0)

    @property
    def as_expected(self) -> int:
        """Passed, or failed exactly as its known issue says (pytest's xfail)."""
        return self.passed + self.expected_failures

    @property
    def pass_rate(self) -> float:
        return self.as_expected / self.runs if self.runs else 0.0

    def to_json(self) -> dict:
        return {"scenario": self.scenario, "runs": self.runs, "pass_rate": self.pass_rate,
                "outcomes": {str(o): n for o, n in self.outcomes.items()},
                "longest_outage_s": asdict(self.longest_outage_s), "time_to_recover_s": asdict(self.time_to_recover_s),
                "availability": asdict(self.availability)}


@dataclass(frozen=True)
class Observation:
    scenario: str
    outcome: Outcome
    figures: Mapping[str, float]
    known_issue_note: str = ""


def run_folders(folder: Path) -> list[Path]:
    """The run folders inside a folder of runs, each once: a symlink (``latest``) is not another run."""
    return sorted(p for p in Path(folder).iterdir() if p.is_dir() and not p.is_symlink())


def observations(run_dirs: Iterable[Path]) -> list[Observation]:
    """Every scenario's verdict in these runs, read by the records' typed reader; controls left out (their
    figures are not the scenario's)."""
    found = []
    for run_dir in run_dirs:
        for folder in scenario_folders(run_dir):
            result = folder.read_result()
            if result.is_control:
                continue
            figures: dict[str, float] = {}
            for part in result.verdict.parts:
                figures.update(part.figures)
            found.append(Observation(result.scenario, result.outcome, figures, result.known_issue_note))
    return found


def scenario_stats(found: Sequence[Observation]) -> list[ScenarioStats]:
    names = sorted({o.scenario for o in found})
    table = []
    for name in names:
        mine = [o for o in found if o.scenario == name]

        def values(key: str) -> list[float]:
            return [o.figures[key] for o in mine if key in o.figures]

        table.append(ScenarioStats(name, len(mine), {o: sum(x.outcome is o for x in mine) for o in Outcome},
                                   Spread.of(values("longest_outage_s")), Spread.of(values("time_to_recover_s")),
                                   Spread.of(values("availability"))))
    return table


def format_table(table: Sequence[ScenarioStats]) -> str:
    lines = [f"{'scenario':<22}{'as expected':>12}  {'outcomes':<40}{'longest outage median [min-max]':<34}"
             f"{'time to recover median [min-max]':<34}"]
    for s in table:
        outcomes = ", ".join(f"{n} {o}" for o, n in s.outcomes.items() if n)
        lines.append(f"{s.scenario:<22}{f'{s.as_expected}/{s.runs}':>12}  {outcomes:<40}{s.longest_outage_s.text():<34}"
                     f"{s.time_to_recover_s.text():<34}")
    return "\n".join(lines)


def summary_line(table: Sequence[ScenarioStats]) -> str:
    """Failures apart from expected failures, and unexpected passes named."""
    total = {o: sum(s.outcomes.get(o, 0) for s in table) for o in Outcome}
    text = ", ".join(f"{n} {o}" for o, n in total.items() if n) or "nothing ran"
    surprising = [s.scenario for s in table if s.outcomes.get(Outcome.UNEXPECTED_PASS)]
    if surprising:
        text += f"; unexpected pass (a known issue stopped showing): {', '.join(surprising)}"
    return text
