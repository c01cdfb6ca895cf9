"""Checkers of the traffic: pure functions History -> Verdict, with figures, a reason and the resolution they
hold at (availability, longest outage, latency, time to recover, response PIDs).

Every checker is wrapped by ``@checker``: one that raises gives ``unknown`` with the exception in its
reason, never a pass; a history with nothing to judge gives ``unknown`` too. Checkers compose with
``check_all`` (any fail -> fail; else any unknown -> unknown; else pass). What they measure is
``harness.measures`` (shared with the report); what they conclude is a ``harness.verdict.Verdict``.

- availability = successful / sent, per endpoint and overall;
- no pass without observation: a gap longer than the budget can tolerate (``GAP_SLACK_INTERVALS`` planned
  intervals, or the outage budget if longer) could hide an outage, so an availability or outage check that
  would pass is UNKNOWN instead, naming the gap. Availability counts what it cannot see against itself: a
  request abandoned in flight (no outcome) and every planned send missing from such a gap count as failures
  in the worst case; the verdict passes only if the worst case meets the budget, fails if even the best case
  does not, and is UNKNOWN in between.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from enum import StrEnum
from typing import Concatenate, ParamSpec

from harness.history import EventKind, History
from harness.measures import (
    RETRY_3X_EXPONENTIAL,
    RetryPolicy,
    fault_windows,
    gap_problem,
    hidden_sends,
    observed_resolution,
    outage_windows,
    percentile,
    pid_sets,
    served,
)
from harness.records import Figure
from harness.verdict import Status, Verdict, combine

P = ParamSpec("P")
Check = Callable[[History], Verdict]


def checker(fn: Callable[Concatenate[History, P], Verdict]) -> Callable[Concatenate[History, P], Verdict]:
    """A checker that raises, or returns something else than a Verdict, yields ``unknown``."""

    name = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", repr(fn))

    @functools.wraps(fn)
    def safe(history: History, *args: P.args, **kwargs: P.kwargs) -> Verdict:
        try:
            verdict = fn(history, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - reported as unknown, never as a pass
            return Verdict(name, Status.UNKNOWN, f"checker raised {type(exc).__name__}: {exc}")
        if not isinstance(verdict, Verdict):
            return Verdict(name, Status.UNKNOWN, f"checker returned {type(verdict).__name__}, not a Verdict")
        return verdict

    return safe


def check_all(history: History, *checks: Check, name: str = "all") -> Verdict:
    """Run every check (each made safe) on the history and combine their verdicts."""
    return combine(name, [checker(c)(history) for c in checks])


def _nothing_observed(name: str, history: History, what: str = "requests") -> Verdict:
    return Verdict(name, Status.UNKNOWN, f"nothing observed: no {what} in the history",
                   resolution=observed_resolution(history))


# ---------------------------------------------------------------------------------------------
# Availability, raw and with a client retry policy.


@checker
def availability(history: History, *, min_availability: float, retry: RetryPolicy | None = None,
                 outage_budget_s: float = 0.0, sends: History | None = None) -> Verdict:
    """Share of requests served, per endpoint and overall; every endpoint must meet the budget.

    Requests with no observed outcome (abandoned in flight) and the planned sends missing from gaps longer than
    the tolerance (``Resolution.tolerance_s(outage_budget_s)``) are counted as failures in the worst case and as
    successes in the best: PASS needs the worst case within budget, FAIL the best case out of it; else UNKNOWN.
    ``sends``: the history whose sends show the resolution, when ``history`` holds only the requests owed an
    answer (default: ``history`` itself)."""
    name = Figure.AVAILABILITY.value if retry is None else f"{Figure.AVAILABILITY}_{retry.name}"
    if not any(r.observed for r in history.requests):
        return _nothing_observed(name, history, "requests with an observed outcome")
    sends = sends if sends is not None else history
    resolution = observed_resolution(sends)
    tolerance = resolution.tolerance_s(outage_budget_s)
    interval = resolution.planned_interval_s
    figures: dict[str, float] = {}
    worst: tuple[float, str] = (math.inf, "")
    worst_case: tuple[float, str] = (math.inf, "")
    best_case: tuple[float, str] = (math.inf, "")
    total_served = 0
    observed_total = 0
    for endpoint in history.endpoints():
        requests = [r for r in history.requests if r.endpoint == endpoint.url]
        seen = [r for r in requests if r.observed]
        count = sum(served(seen, retry))
        total_served += count
        observed_total += len(seen)
        abandoned = len(requests) - len(seen)
        hidden = hidden_sends(sends, endpoint.url, endpoint.node, interval, tolerance)
        if seen:
            ratio = count / len(seen)
            figures[f"{name}.{endpoint.node}"] = ratio
            worst = min(worst, (ratio, endpoint.node))
        worst_case = min(worst_case, (count / (len(requests) + hidden), endpoint.node))
        best_case = min(best_case, ((count + abandoned) / len(requests), endpoint.node))
    failures = observed_total - total_served
    abandoned_total = len(history.requests) - observed_total
    figures[name] = total_served / observed_total
    figures[Figure.REQUESTS] = len(history.requests)
    figures[Figure.FAILURES if retry is None else f"{Figure.FAILURES}_{retry.name}"] = failures
    figures["abandoned"] = abandoned_total
    figures[f"{name}_worst_case"] = worst_case[0]
    ratio, node = worst
    policy = "raw" if retry is None else f"with client retry policy {retry.name} (horizon {retry.horizon_s:g}s)"
    shown = (f"lowest endpoint {node} {ratio:.4f}, overall {figures[name]:.4f} ({failures} of {observed_total} "
             f"observed requests not served")
    if abandoned_total:
        shown += f", {abandoned_total} abandoned in flight with no outcome"
    shown += ")"
    budget = f"budget >= {min_availability:g} on every endpoint; {resolution.text()}"
    if best_case[0] < min_availability:
        status, text = Status.FAIL, f"availability {policy}: {shown}"
        if abandoned_total:
            text += f"; below budget even if every abandoned request had been served ({best_case[1]} {best_case[0]:.4f})"
    elif worst_case[0] >= min_availability:
        status, text = Status.PASS, f"availability {policy}: {shown}"
    else:
        unseen = gap_problem(resolution, tolerance) or ""
        why = "; ".join(x for x in (
            f"{abandoned_total} request(s) were abandoned with no outcome" if abandoned_total else "",
            unseen) if x)
        status, text = Status.UNKNOWN, (f"availability {policy}: {shown}, but {why}: counting what was not seen as "
                                        f"failures gives {worst_case[1]} {worst_case[0]:.4f}")
    return Verdict(name, status, f"{text}; {budget}", figures, resolution)


# ---------------------------------------------------------------------------------------------
# Outage windows.


@checker
def longest_outage(history: History, *, max_outage_s: float, across_endpoints: bool = False,
                   sends: History | None = None) -> Verdict:
    """The longest outage window (of the worst endpoint, or across endpoints) against a budget. A gap in the
    observed sends longer than the budget tolerates makes a pass UNKNOWN (an outage could hide in it).
    ``sends`` as for ``availability``."""
    name = "longest_outage"
    if not any(r.observed for r in history.requests):
        return _nothing_observed(name, history, "requests with an observed outcome")
    resolution = observed_resolution(sends if sends is not None else history)
    per_endpoint = outage_windows(history)
    across = outage_windows(history, across_endpoints=True)
    figures: dict[str, float] = {
        f"longest_outage_s.{e.node}": max((w.duration_s for w in per_endpoint if w.scope == e.node), default=0.0)
        for e in history.endpoints()
    }
    judged = across if across_endpoints else per_endpoint
    longest = max(judged, key=lambda w: w.duration_s, default=None)
    figures[Figure.LONGEST_OUTAGE] = longest.duration_s if longest else 0.0
    figures["longest_outage_across_endpoints_s"] = max((w.duration_s for w in across), default=0.0)
    figures["outage_windows"] = len(judged)
    figures["open_ended_outages"] = sum(w.open_ended for w in judged)
    if resolution.max_gap_s is not None:
        figures["max_send_gap_s"] = resolution.max_gap_s
    if resolution.max_lag_s is not None:
        figures["max_send_lag_s"] = resolution.max_lag_s
    scope = "across endpoints" if across_endpoints else "on any endpoint"
    budget = f"budget <= {max_outage_s:g}s {scope}; {resolution.text()}"
    unseen = gap_problem(resolution, resolution.tolerance_s(max_outage_s))
    if longest is None:
        if unseen:
            return Verdict(name, Status.UNKNOWN, f"no outage seen {scope}, but {unseen}; {budget}", figures, resolution)
        return Verdict(name, Status.PASS, f"no outage {scope} in {len(history.requests)} requests; {budget}",
                       figures, resolution)
    where = f"{longest.duration_s:.3f}s on {longest.scope} ({longest.failures} failed requests)"
    if longest.duration_s > max_outage_s:
        status, verdict_text = Status.FAIL, f"longest outage {where}"
    elif any(w.open_ended for w in judged):
        status, verdict_text = Status.UNKNOWN, (
            f"an outage was still open when the history ended (longest so far {where}); it may exceed the budget"
        )
    elif unseen:
        status, verdict_text = Status.UNKNOWN, f"longest outage seen {where}, but {unseen}"
    else:
        status, verdict_text = Status.PASS, f"longest outage {where}"
    return Verdict(name, status, f"{verdict_text}; {budget}", figures, resolution)


# ---------------------------------------------------------------------------------------------
# Latency of successes.


@checker
def latency(history: History, *, max_p99_s: float) -> Verdict:
    """p50/p95/p99/max latency of the successful requests; the p99 against a budget."""
    name = "latency"
    latencies = [r.latency_s for r in history.requests if r.ok]
    if not latencies:
        return _nothing_observed(name, history, "successful requests")
    figures = {
        "latency_p50_s": percentile(latencies, 50),
        "latency_p95_s": percentile(latencies, 95),
        "latency_p99_s": percentile(latencies, 99),
        "latency_max_s": max(latencies),
        "successes": len(latencies),
    }
    status = Status.PASS if figures["latency_p99_s"] <= max_p99_s else Status.FAIL
    reason = (
        f"p99 latency {figures['latency_p99_s']:.4f}s over {len(latencies)} successes "
        f"(p50 {figures['latency_p50_s']:.4f}s, max {figures['latency_max_s']:.4f}s); budget p99 <= {max_p99_s:g}s"
    )
    return Verdict(name, status, reason, figures, observed_resolution(history))


# ---------------------------------------------------------------------------------------------
# Faults: time to recover, and who answered before, during and after.


@checker
def time_to_recover(history: History, *, max_s: float, fault: str | None = None) -> Verdict:
    """From each injection to its "recovered" event; a fault that never recovered fails."""
    name = "time_to_recover"
    windows = fault_windows(history, fault)
    if not windows:
        return _nothing_observed(name, history, f"injection of {fault}" if fault else "fault injections")
    figures = {
        f"time_to_recover_s.{w.name}@{w.target}": w.recovered - w.injected
        for w in windows if w.recovered is not None
    }
    missing = [f"{w.name}@{w.target}" for w in windows if w.recovered is None]
    slowest = max(figures.items(), key=lambda kv: kv[1], default=None)
    if slowest is not None:
        figures[Figure.TIME_TO_RECOVER] = slowest[1]
    for w in windows:  # a held fault (a freeze, a partition): Ray's part is from the end of the hold
        healed = next((e.t_mono for e in history.events if e.kind is EventKind.HEALED and e.name == w.name
                       and e.target == w.target and w.injected <= e.t_mono <= (w.recovered or -1.0)), None)
        if healed is not None and w.recovered is not None:
            figures[f"time_to_recover_after_heal_s.{w.name}@{w.target}"] = w.recovered - healed
    budget = f"budget <= {max_s:g}s"
    if missing:
        return Verdict(name, Status.FAIL, f"no recovery recorded for {', '.join(missing)}; {budget}", figures)
    assert slowest is not None
    status = Status.PASS if slowest[1] <= max_s else Status.FAIL
    return Verdict(name, status, f"slowest recovery {slowest[0].split('.', 1)[1]} took {slowest[1]:.3f}s; {budget}", figures)


class PidChange(StrEnum):
    UNCHANGED = "unchanged"  # after the fault, only PIDs seen before it answer (e.g. head failure with GCS FT)
    CHANGED = "changed"  # after the fault, a PID never seen before answers (e.g. a replaced replica)


@checker
def response_pids(history: History, *, fault: str, expect: PidChange) -> Verdict:
    """The PIDs in response bodies before, during and after a fault, against what must (not) change."""
    name = f"response_pids_{fault}"
    windows = fault_windows(history, fault)
    if not windows:
        return _nothing_observed(name, history, f"injection of {fault}")
    window = windows[0]
    if window.recovered is None:
        return Verdict(name, Status.UNKNOWN, f"{fault} has no recovered event: nothing is known to be 'after'")
    sets = pid_sets(history, window)
    new, gone = sets.after - sets.before, sets.before - sets.after
    figures = {
        "pids_before": len(sets.before), "pids_during": len(sets.during), "pids_after": len(sets.after),
        "new_pids_after": len(new), "pids_gone_after": len(gone),
    }
    shown = (
        f"before {sorted(sets.before)}, during {sorted(sets.during)}, after {sorted(sets.after)}"
    )
    if not sets.after or not sets.before:
        return Verdict(name, Status.UNKNOWN, f"no PIDs seen {'after' if not sets.after else 'before'} {fault}: {shown}", figures)
    if expect is PidChange.UNCHANGED:
        status = Status.PASS if not new else Status.FAIL
        expectation = "expected no new PID after recovery"
    else:
        status = Status.PASS if new else Status.FAIL
        expectation = "expected a new PID after recovery"
    reason = f"{expectation}; saw {len(new)} new ({sorted(new)}); {shown}"
    return Verdict(name, status, reason, figures, observed_resolution(history))


def standard_checks(
    *, min_availability: float, max_outage_s: float, retry: RetryPolicy = RETRY_3X_EXPONENTIAL
) -> tuple[Check, ...]:
    """Availability (raw and with retries) and the longest outage against the same budgets."""
    return (
        functools.partial(availability, min_availability=min_availability, outage_budget_s=max_outage_s),
        functools.partial(availability, min_availability=min_availability, retry=retry, outage_budget_s=max_outage_s),
        functools.partial(longest_outage, max_outage_s=max_outage_s),
    )

