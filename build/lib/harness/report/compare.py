"""Two runs side by side: per scenario, how its verdict and its figures moved from run A to run B.

Scenarios match by folder name (the test's name). A change counts as a regression when it is worse by more
than the figures can tell apart (``Tolerances``):

- a verdict that was a pass and is not, or that became a fail (for a control scenario, which must fail on its
  broken stack: a fail that is not); a control's figures are reported but not judged;
- availability lower by more than 0.1 percentage point and more than one request's share;
- a longest outage longer by more than one request interval (the resolution it is measured at);
- a recovery slower by more than 20 % and more than 1 s (recoveries vary from run to run);
- a scenario missing from run B. One new in run B is reported, not judged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from harness.report.model import Figures, RunSummary, ScenarioSummary
from harness.verdict import Status


@dataclass(frozen=True)
class Tolerances:
    availability: float = 0.001  # absolute (0.1 percentage point)
    recovery_ratio: float = 0.2  # slower by more than this share ...
    recovery_s: float = 1.0  # ... and by more than this many seconds
    outage_floor_s: float = 0.05  # when neither run states its resolution


class Movement(StrEnum):
    SAME = "same"
    BETTER = "better"
    WORSE = "worse"  # worse, within tolerance: not a regression
    REGRESSED = "regressed"
    UNKNOWN = "unknown"  # a side has no figure


@dataclass(frozen=True)
class Change:
    metric: str
    before: float | None
    after: float | None
    movement: Movement

    @property
    def delta(self) -> float | None:
        return None if self.before is None or self.after is None else self.after - self.before


@dataclass(frozen=True)
class ScenarioDelta:
    folder: str
    before: ScenarioSummary | None  # None: not in run A
    after: ScenarioSummary | None  # None: not in run B
    verdict: Movement
    changes: tuple[Change, ...]  # availability, availability with retries, longest outage, time to recover

    @property
    def regressions(self) -> tuple[str, ...]:
        found = [c.metric for c in self.changes if c.movement is Movement.REGRESSED]
        if self.verdict is Movement.REGRESSED:
            found.insert(0, "verdict" if self.after is not None else "missing in run B")
        return tuple(found)

    @property
    def regressed(self) -> bool:
        return bool(self.regressions)


@dataclass(frozen=True)
class RunComparison:
    before: RunSummary
    after: RunSummary
    tolerances: Tolerances
    scenarios: tuple[ScenarioDelta, ...]

    @property
    def regressed(self) -> tuple[ScenarioDelta, ...]:
        return tuple(s for s in self.scenarios if s.regressed)


EPSILON = 1e-9  # figures computed from float times: equal within this


def _move(before: float | None, after: float | None, *, higher_is_better: bool, tolerance: float) -> Movement:
    if before is None or after is None:
        return Movement.UNKNOWN
    gain = (after - before) if higher_is_better else (before - after)
    if abs(gain) <= EPSILON:
        return Movement.SAME
    if gain > 0:
        return Movement.BETTER
    return Movement.REGRESSED if -gain > tolerance + EPSILON else Movement.WORSE


def _verdict_move(before: ScenarioSummary | None, after: ScenarioSummary | None) -> Movement:
    if after is None:
        return Movement.REGRESSED if before is not None else Movement.UNKNOWN
    if before is None:
        return Movement.UNKNOWN
    # closer to what the scenario expects is better: a pass, or a fail for a control (a broken stack)
    rank = {after.expected: 2, Status.UNKNOWN: 1}
    a, b = rank.get(before.status, 0), rank.get(after.status, 0)
    if b == a:
        return Movement.SAME
    if b > a:
        return Movement.BETTER
    return Movement.REGRESSED if a == 2 or b == 0 else Movement.WORSE


METRICS: tuple[tuple[str, Callable[[Figures], float | None], bool], ...] = (
    ("availability", lambda f: f.availability, True),
    ("availability with retries", lambda f: f.availability_with_retries, True),
    ("longest outage", lambda f: f.longest_outage_s, False),
    ("time to recover", lambda f: f.time_to_recover_s, False),
)


def _tolerance(metric: str, before: Figures, tolerances: Tolerances) -> float:
    if metric.startswith("availability"):  # one request's share is the finest step availability takes
        return max(tolerances.availability, 1 / before.requests if before.requests else 0.0)
    if metric == "longest outage":
        return before.resolution_s or tolerances.outage_floor_s
    base = before.time_to_recover_s or 0.0
    return max(tolerances.recovery_s, tolerances.recovery_ratio * base)


def compare_scenarios(before: ScenarioSummary | None, after: ScenarioSummary | None,
                      tolerances: Tolerances = Tolerances()) -> ScenarioDelta:
    folder = (after or before).folder  # type: ignore[union-attr]
    changes = []
    for metric, get, higher_is_better in METRICS:
        a = get(before.figures) if before else None
        b = get(after.figures) if after else None
        tolerance = _tolerance(metric, before.figures, tolerances) if before else 0.0
        movement = _move(a, b, higher_is_better=higher_is_better, tolerance=tolerance)
        if movement is Movement.REGRESSED and after is not None and after.expected is not Status.PASS:
            movement = Movement.WORSE  # a control's figures are meant to be bad: only its verdict is judged
        changes.append(Change(metric, a, b, movement))
    return ScenarioDelta(folder, before, after, _verdict_move(before, after), tuple(changes))


def compare_runs(before: RunSummary, after: RunSummary, tolerances: Tolerances = Tolerances()) -> RunComparison:
    folders = dict.fromkeys([*(s.folder for s in before.scenarios), *(s.folder for s in after.scenarios)])
    deltas = tuple(compare_scenarios(before.scenario(f), after.scenario(f), tolerances) for f in folders)
    return RunComparison(before, after, tolerances, deltas)
