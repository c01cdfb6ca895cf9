"""What every schedule of one run shares (the cluster, settings, budgets, the numbering of examples), a step
while it runs and is judged, and how a schedule can end early (a violation, a known issue, something not
judged)."""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.faults import Fault
from harness.known_issues import KnownIssue
from harness.records import Budget
from harness.schedules.profiles import ScheduleBudgets
from harness.schedules.spec import FaultSpec, ScheduleConfig
from harness.stack.cluster import Cluster
from harness.stack.drivers import DRIVER_TIMEOUT_S
from harness.verdict import Status, Verdict, combine, explain


class ScheduleViolation(AssertionError):
    """A step broke an invariant."""


class KnownIssueShown(ScheduleViolation):
    """A step broke an invariant exactly as a known issue pinned to this Ray version says."""


class NotJudged(RuntimeError):
    """An invariant could not be judged (UNKNOWN): the schedule proves nothing past this step."""


@dataclass
class StepState:
    """A step while it runs and is judged (``Step`` is its frozen record)."""

    index: int
    drawn: tuple[FaultSpec, ...]
    specs: tuple[FaultSpec, ...]  # resolved, in injection order
    resolutions: tuple[str, ...]
    faults: tuple[Fault, ...]
    serving: tuple[str, ...]  # endpoint labels
    budget: Budget
    start: float  # monotonic: first injection
    converged: float = math.nan  # monotonic: every fault recovered (or the recovery wait gave up)
    cut: float = math.nan  # monotonic: requests sent before this are judged with this step
    end: float = math.nan  # monotonic: the step's end
    recovery: Verdict | None = None
    traffic: Verdict | None = None
    routing: Verdict | None = None

    def verdict(self) -> Verdict:
        parts = [v for v in (self.recovery, self.traffic) if v is not None]
        combined = combine(f"step {self.index}: {' + '.join(map(str, self.specs))}", parts)
        if combined.status is Status.PASS:
            reason = "; ".join(p.reason for p in parts)
        elif parts:
            reason = explain(combined)
        else:
            reason = "not judged: the schedule stopped before this step's invariants"
        return dataclasses.replace(combined, reason=reason)


class ScheduleContext:
    """What every schedule of one run shares: the cluster, settings, budgets, and the numbering of examples."""

    def __init__(self, cluster: Cluster, out_dir: str | Path, *, config: ScheduleConfig, budgets: ScheduleBudgets,
                 known_issue: KnownIssue | None = None, prepare: Callable[[Cluster], object] | None = None,
                 progress: Callable[[str], None] | None = None) -> None:
        self.cluster = cluster
        self.out_dir = Path(out_dir)
        self.config = config
        self.budgets = budgets
        self.known_issue = known_issue
        self.prepare = prepare or (lambda cluster: None)
        self.progress = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._numbers = 0

    @property
    def settle_s(self) -> float:
        """How long after a request's send it is surely recorded: connect and read timeouts, and a margin."""
        return 2 * self.budgets.traffic.timeout_s + self.config.settle_margin_s

    def observe_timeout_s(self, budget: Budget) -> float:
        """How long a step may wait for its traffic past convergence (a stalled traffic child fails it)."""
        return budget.observe_s + self.settle_s + 10.0

    def traffic_cap_s(self, steps: int) -> float:
        """A bound on a schedule's traffic, so that it stops by itself: every wait at its deadline, twice."""
        worst = self.budgets.for_step(self.config.faults)
        routing = self.config.routing_timeout_s + 2 * DRIVER_TIMEOUT_S if self.config.check_routing else 0.0
        step = worst.confirm_s + 1.25 * worst.max_recovery_s + self.config.recovery_grace_s + routing + \
            self.observe_timeout_s(worst)
        return 2 * (self.config.healthy_timeout_s + steps * step) + 120.0

    def next_number(self) -> int:
        self._numbers += 1
        return self._numbers
