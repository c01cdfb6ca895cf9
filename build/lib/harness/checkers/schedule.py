"""A schedule's invariants as pure checks of its History and its steps' windows (no clock, no cluster).

Which endpoints must keep serving: from a step's injection until it converged (every fault recovered), every
endpoint except those of nodes the step kills (``KillWorkerPod``, ``KillHead``) and of proxies it kills
(``KillProxy``); from then on, every endpoint. A request is judged with what held when it was sent, except that
a request still in flight when a step killed its endpoint is not owed an answer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Protocol, TypeVar

from harness.checkers.faults import fault_took_effect
from harness.checkers.traffic import availability, time_to_recover
from harness.history import History, RequestRecord
from harness.measures import gap_problem, observed_resolution, outage_windows
from harness.records import Budget, Figure
from harness.verdict import Status, Verdict, combine, explain


class StepWindow(Protocol):
    """When a step began (its first injection), when it converged, the endpoints it spared, and its budget."""

    @property
    def start(self) -> float: ...
    @property
    def converged(self) -> float: ...
    @property
    def serving(self) -> tuple[str, ...]: ...
    @property
    def budget(self) -> Budget: ...


W = TypeVar("W", bound=StepWindow)


def step_at(states: Sequence[W], t: float) -> W | None:
    """The step under way at ``t``: the last one injected by then (None before the first)."""
    current = None
    for state in states:
        if state.start <= t:
            current = state
    return current


def serving_at(states: Sequence[StepWindow], labels: tuple[str, ...], t: float) -> tuple[str, ...]:
    """The endpoints that had to serve a request sent at ``t``: those the step it was sent in spared, until
    that step converged; every endpoint (``labels``) before the first step and after a step converged."""
    current = step_at(states, t)
    if current is None or not current.converged > t:
        return labels
    return current.serving


def owed_answer(states: Sequence[StepWindow], labels: tuple[str, ...], request: RequestRecord) -> bool:
    """Whether the request's endpoint had to answer it: it had to serve when the request was sent, and no step
    injected while the request was in flight killed it (a proxy killed mid-request owes no answer)."""
    sent, node = request.t_mono, request.node
    if node not in serving_at(states, labels, sent):
        return False
    return not any(sent < s.start <= sent + request.latency_s and node not in s.serving for s in states)


def kept(history: History, states: Sequence[StepWindow], labels: tuple[str, ...], start: float, end: float) -> History:
    """The requests sent in [start, end) to endpoints that had to serve them."""
    return dataclasses.replace(history, requests=tuple(
        r for r in history.requests if start <= r.t_mono < end and owed_answer(states, labels, r)))


def recovery_verdict(window: History, budget: Budget, routing: Verdict | None) -> Verdict:
    """Every fault of the step took effect and recovered within the step's budget; once converged, every proxy
    routes to the controller's replicas (when checked; an unread routing table is UNKNOWN, never a pass)."""
    parts = [fault_took_effect(window), time_to_recover(window, max_s=budget.max_recovery_s)]
    if routing is not None:
        parts.append(routing)
    verdict = combine("recovered_within_budget", parts)
    reason = explain(verdict) if verdict.status is not Status.PASS else \
        f"every fault took effect and recovered; {verdict.parts[1].reason}"
    return dataclasses.replace(verdict, reason=reason)


def outage_verdict(history: History, states: Sequence[StepWindow], labels: tuple[str, ...], start: float,
                   end: float) -> Verdict:
    """Outage windows (on endpoints that had to serve) still open at or after ``start``, each against the largest
    outage budget of the steps it spans; an outage still open at ``end`` counts as long as it is. A hole in the
    sends longer than the budget tolerates makes a pass UNKNOWN."""
    name = "longest_outage"
    judged = kept(history, states, labels, -math.inf, end)
    windows = [w for w in outage_windows(judged) if w.end >= start]
    figures = {Figure.LONGEST_OUTAGE.value: max((w.duration_s for w in windows), default=0.0),
               "outage_windows": float(len(windows))}

    def budget_at(t: float) -> float:
        return (step_at(states, t) or states[0]).budget.max_outage_s

    over = []
    for w in windows:
        budget = max(budget_at(w.start), budget_at(w.end))
        if w.duration_s > budget:
            over.append(f"{w.duration_s:.3f}s on {w.scope} ({w.failures} failed requests, budget <= {budget:g}s)")
    sends = history.between(start, end)
    resolution = observed_resolution(sends)
    if over:
        return Verdict(name, Status.FAIL, "outage over budget: " + "; ".join(over), figures, resolution)
    longest = max(windows, key=lambda w: w.duration_s, default=None)
    text = f"longest outage {longest.duration_s:.3f}s on {longest.scope}" if longest else "no outage"
    last = sends.requests[-1].t_mono if sends.requests else start
    budget = budget_at(min(end, last))
    stated = f"budget <= {budget:g}s (the largest of the steps an outage spans); {resolution.text()}"
    if unseen := gap_problem(resolution, resolution.tolerance_s(budget)):
        return Verdict(name, Status.UNKNOWN, f"{text} seen on the endpoints that had to serve, but {unseen}; {stated}",
                       figures, resolution)
    return Verdict(name, Status.PASS, f"{text} on the endpoints that had to serve; {stated}", figures, resolution)


def coverage_verdict(history: History, state: StepWindow, labels: tuple[str, ...], start: float, end: float) -> Verdict:
    """Traffic overlapped the step: in this judgement's window, every endpoint has requests sent before the
    step's first injection (unless the window starts after it) and after the step converged."""
    name = "traffic_coverage"
    after = state.converged if not math.isnan(state.converged) else state.start
    gaps = []
    for label in labels:
        sends = [r.t_mono for r in history.requests if r.node == label and start <= r.t_mono < end]
        if start < state.start and not any(t < state.start for t in sends):
            gaps.append(f"{label}: no request before the injection")
        if not any(t >= after for t in sends):
            gaps.append(f"{label}: no request after the step converged")
    if gaps:
        return Verdict(name, Status.FAIL, "traffic did not cover the step: " + "; ".join(gaps))
    return Verdict(name, Status.PASS, "traffic on every endpoint from before the injection to past convergence")


def traffic_verdict(history: History, states: Sequence[StepWindow], labels: tuple[str, ...], state: StepWindow,
                    start: float, end: float, name: str = "traffic_within_budget") -> Verdict:
    """Availability and the longest outage of the traffic in [start, end) on the endpoints that had to serve, and
    traffic coverage of the step."""
    window = kept(history, states, labels, start, end)
    checks = [availability(window, min_availability=state.budget.min_availability,
                           outage_budget_s=state.budget.max_outage_s, sends=history.between(start, end)),
              outage_verdict(history, states, labels, start, end),
              coverage_verdict(history, state, labels, start, end)]
    verdict = combine(name, checks)
    reason = explain(verdict) if verdict.status is not Status.PASS else "; ".join(c.reason for c in checks)
    return dataclasses.replace(verdict, reason=reason)
