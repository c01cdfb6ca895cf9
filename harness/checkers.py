"""Checkers: pure functions History -> Verdict, with figures, a reason and the resolution they hold at.

Every checker is wrapped by ``@checker``: one that raises gives ``unknown`` with the exception in its
reason, never a pass; a history with nothing to judge gives ``unknown`` too. Checkers compose with
``check_all`` (any fail -> fail; else any unknown -> unknown; else pass).

Measurements (``outage_windows``, ``served``, ``percentile``, ``pid_sets``, ``recovery_times``) are
plain functions the checkers and the reports share. Definitions (see ``docs/traffic.md``):

- availability = successful / sent, per endpoint and overall;
- an outage window is a maximal run of failed requests, from the first failure's send time to the
  next success's send time; a run still failing at the end is open-ended at the last send time;
- with a retry policy, a failed request counts as served if the policy retries its kind of error and
  a request to the SAME endpoint sent after it, no later than its completion plus the policy's total
  backoff, succeeded (the endpoint served within the time the client would still be retrying);
- the resolution of every figure is the request interval (1 / rate per endpoint).
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Concatenate, ParamSpec

from harness.history import ErrorKind, EventKind, History, RequestRecord

ACROSS_ENDPOINTS = "all endpoints"


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Verdict:
    name: str
    status: Status
    reason: str  # states the budget and the figure it was checked against
    figures: Mapping[str, float] = field(default_factory=dict)
    resolution_s: float | None = None  # the request interval: no figure is finer than this
    parts: tuple[Verdict, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "figures", MappingProxyType(dict(self.figures)))

    @property
    def passed(self) -> bool:
        return self.status is Status.PASS

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "status": str(self.status),
            "reason": self.reason,
            "figures": dict(self.figures),
            "resolution_s": self.resolution_s,
            "parts": [p.to_json() for p in self.parts],
        }


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


def combine(name: str, verdicts: Sequence[Verdict]) -> Verdict:
    """One verdict of many: any fail -> fail; else any unknown (or none at all) -> unknown; else pass."""
    statuses = {v.status for v in verdicts}
    if Status.FAIL in statuses:
        status = Status.FAIL
    elif Status.UNKNOWN in statuses or not verdicts:
        status = Status.UNKNOWN
    else:
        status = Status.PASS
    figures: dict[str, float] = {}
    for verdict in verdicts:
        for key, value in verdict.figures.items():
            figures[key if figures.get(key, value) == value else f"{verdict.name}.{key}"] = value
    resolutions = [v.resolution_s for v in verdicts if v.resolution_s is not None]
    reason = "; ".join(f"{v.name}: {v.status}" for v in verdicts) or "no checks"
    return Verdict(name, status, reason, figures, max(resolutions, default=None), tuple(verdicts))


def check_all(history: History, *checks: Check, name: str = "all") -> Verdict:
    """Run every check (each made safe) on the history and combine their verdicts."""
    return combine(name, [checker(c)(history) for c in checks])


def _nothing_observed(name: str, history: History, what: str = "requests") -> Verdict:
    return Verdict(name, Status.UNKNOWN, f"nothing observed: no {what} in the history", resolution_s=history.request_interval())


def _resolution(history: History) -> str:
    interval = history.request_interval()
    return f"resolution {interval:.3g}s" if interval is not None else "resolution unknown"


# ---------------------------------------------------------------------------------------------
# Availability, raw and with a client retry policy.


@dataclass(frozen=True)
class RetryPolicy:
    """A client retry policy, as Ray's production guide recommends: a few retries, exponential backoff."""

    name: str
    delays_s: tuple[float, ...]  # the wait before each retry
    retry_on: frozenset[ErrorKind]

    @property
    def horizon_s(self) -> float:
        """How long after a failed attempt the client is still retrying (its total backoff)."""
        return sum(self.delays_s)


RETRY_3X_EXPONENTIAL = RetryPolicy(
    name="retry_3x_exponential",
    delays_s=(0.5, 1.0, 2.0),
    retry_on=frozenset(
        {ErrorKind.CONNECTION_REFUSED, ErrorKind.TIMEOUT, ErrorKind.RESET, ErrorKind.HTTP_5XX}
    ),
)


def served(requests: Sequence[RequestRecord], retry: RetryPolicy | None = None) -> tuple[bool, ...]:
    """For each request (sorted by send time, one endpoint or many): did the client get served?

    Without a policy, served means the request succeeded. With one, a failed request also counts as
    served if its error is retried and a request to the same endpoint sent after it, no later than its
    completion plus the policy's horizon, succeeded.
    """
    if retry is None:
        return tuple(r.ok for r in requests)
    successes: dict[str, list[float]] = {}
    for r in requests:
        if r.ok:
            successes.setdefault(r.endpoint, []).append(r.t_mono)
    result = []
    for r in requests:
        if r.ok:
            result.append(True)
            continue
        later = successes.get(r.endpoint, [])
        first_later = bisect.bisect_right(later, r.t_mono)
        deadline = r.t_mono + r.latency_s + retry.horizon_s
        result.append(r.error in retry.retry_on and first_later < len(later) and later[first_later] <= deadline)
    return tuple(result)


@checker
def availability(history: History, *, min_availability: float, retry: RetryPolicy | None = None) -> Verdict:
    """Share of requests served, per endpoint and overall; every endpoint must meet the budget."""
    name = "availability" if retry is None else f"availability_{retry.name}"
    if not history.requests:
        return _nothing_observed(name, history)
    figures: dict[str, float] = {}
    worst: tuple[float, str] = (math.inf, "")
    total_served = 0
    for endpoint in history.endpoints():
        requests = [r for r in history.requests if r.endpoint == endpoint.url]
        count = sum(served(requests, retry))
        total_served += count
        ratio = count / len(requests)
        figures[f"{name}.{endpoint.node}"] = ratio
        worst = min(worst, (ratio, endpoint.node))
    failures = len(history.requests) - total_served
    figures[name] = total_served / len(history.requests)
    figures["requests"] = len(history.requests)
    figures["failures" if retry is None else f"failures_{retry.name}"] = failures
    ratio, node = worst
    status = Status.PASS if ratio >= min_availability else Status.FAIL
    policy = "raw" if retry is None else f"with client retry policy {retry.name} (horizon {retry.horizon_s:g}s)"
    reason = (
        f"availability {policy}: lowest endpoint {node} {ratio:.4f}, overall {figures[name]:.4f} "
        f"({failures} of {len(history.requests)} requests not served); budget >= {min_availability:g} "
        f"on every endpoint; {_resolution(history)}"
    )
    return Verdict(name, status, reason, figures, history.request_interval())


# ---------------------------------------------------------------------------------------------
# Outage windows.


@dataclass(frozen=True)
class OutageWindow:
    scope: str  # an endpoint's node, or ACROSS_ENDPOINTS
    start: float  # send time of the first failed request (monotonic)
    end: float  # send time of the next success, or of the last request if open-ended
    failures: int
    open_ended: bool  # still failing when the history ends: the true outage is at least this long

    @property
    def duration_s(self) -> float:
        return self.end - self.start


def _windows(scope: str, requests: Sequence[RequestRecord]) -> list[OutageWindow]:
    windows = []
    first_failure: RequestRecord | None = None
    failures = 0
    for r in requests:
        if r.ok:
            if first_failure is not None:
                windows.append(OutageWindow(scope, first_failure.t_mono, r.t_mono, failures, False))
                first_failure, failures = None, 0
        else:
            first_failure = first_failure or r
            failures += 1
    if first_failure is not None:
        windows.append(OutageWindow(scope, first_failure.t_mono, requests[-1].t_mono, failures, True))
    return windows


def outage_windows(history: History, *, across_endpoints: bool = False) -> tuple[OutageWindow, ...]:
    """Maximal runs of failed requests, per endpoint, or over all endpoints' requests merged by send time.

    Across endpoints, a window is a time when every request, whichever endpoint it went to, failed:
    what a client that can use any endpoint saw.
    """
    if across_endpoints:
        return tuple(_windows(ACROSS_ENDPOINTS, history.requests))
    windows = []
    for endpoint in history.endpoints():
        windows += _windows(endpoint.node, [r for r in history.requests if r.endpoint == endpoint.url])
    return tuple(sorted(windows, key=lambda w: (w.start, w.scope)))


@checker
def longest_outage(history: History, *, max_outage_s: float, across_endpoints: bool = False) -> Verdict:
    """The longest outage window (of the worst endpoint, or across endpoints) against a budget."""
    name = "longest_outage"
    if not history.requests:
        return _nothing_observed(name, history)
    per_endpoint = outage_windows(history)
    across = outage_windows(history, across_endpoints=True)
    figures: dict[str, float] = {
        f"longest_outage_s.{e.node}": max((w.duration_s for w in per_endpoint if w.scope == e.node), default=0.0)
        for e in history.endpoints()
    }
    judged = across if across_endpoints else per_endpoint
    longest = max(judged, key=lambda w: w.duration_s, default=None)
    figures["longest_outage_s"] = longest.duration_s if longest else 0.0
    figures["longest_outage_across_endpoints_s"] = max((w.duration_s for w in across), default=0.0)
    figures["outage_windows"] = len(judged)
    figures["open_ended_outages"] = sum(w.open_ended for w in judged)
    scope = "across endpoints" if across_endpoints else "on any endpoint"
    budget = f"budget <= {max_outage_s:g}s {scope}; {_resolution(history)}"
    if longest is None:
        return Verdict(name, Status.PASS, f"no outage {scope} in {len(history.requests)} requests; {budget}",
                       figures, history.request_interval())
    where = f"{longest.duration_s:.3f}s on {longest.scope} ({longest.failures} failed requests)"
    if longest.duration_s > max_outage_s:
        status, verdict_text = Status.FAIL, f"longest outage {where}"
    elif any(w.open_ended for w in judged):
        status, verdict_text = Status.UNKNOWN, (
            f"an outage was still open when the history ended (longest so far {where}); it may exceed the budget"
        )
    else:
        status, verdict_text = Status.PASS, f"longest outage {where}"
    return Verdict(name, status, f"{verdict_text}; {budget}", figures, history.request_interval())


# ---------------------------------------------------------------------------------------------
# Latency of successes.


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


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
    return Verdict(name, status, reason, figures, history.request_interval())


# ---------------------------------------------------------------------------------------------
# Faults: time to recover, and who answered before, during and after.


@dataclass(frozen=True)
class FaultWindow:
    name: str
    target: str
    injected: float  # monotonic
    recovered: float | None  # None: no "recovered" event followed the injection


def fault_windows(history: History, fault: str | None = None) -> tuple[FaultWindow, ...]:
    """Each injection (of ``fault``, or of every fault) paired with the first recovery of the same
    fault and target that follows it."""
    windows = []
    for inject in (e for e in history.events if e.kind is EventKind.INJECT and fault in (None, e.name)):
        recovered = next(
            (
                e.t_mono
                for e in history.events
                if e.kind is EventKind.RECOVERED and e.name == inject.name and e.target == inject.target
                and e.t_mono >= inject.t_mono
            ),
            None,
        )
        windows.append(FaultWindow(inject.name, inject.target, inject.t_mono, recovered))
    return tuple(windows)


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
        figures["time_to_recover_s"] = slowest[1]
    budget = f"budget <= {max_s:g}s"
    if missing:
        return Verdict(name, Status.FAIL, f"no recovery recorded for {', '.join(missing)}; {budget}", figures)
    assert slowest is not None
    status = Status.PASS if slowest[1] <= max_s else Status.FAIL
    return Verdict(name, status, f"slowest recovery {slowest[0].split('.', 1)[1]} took {slowest[1]:.3f}s; {budget}", figures)


class PidChange(StrEnum):
    UNCHANGED = "unchanged"  # after the fault, only PIDs seen before it answer (e.g. head failure with GCS FT)
    CHANGED = "changed"  # after the fault, a PID never seen before answers (e.g. a replaced replica)


@dataclass(frozen=True)
class PidSets:
    before: frozenset[int]  # sent before the injection
    during: frozenset[int]  # sent between injection and recovery
    after: frozenset[int]  # sent after the recovery


def pid_sets(history: History, window: FaultWindow) -> PidSets:
    def pids(keep: Callable[[float], bool]) -> frozenset[int]:
        return frozenset(r.pid for r in history.requests if r.ok and r.pid is not None and keep(r.t_mono))

    recovered = window.recovered if window.recovered is not None else math.inf
    return PidSets(
        before=pids(lambda t: t < window.injected),
        during=pids(lambda t: window.injected <= t < recovered),
        after=pids(lambda t: t >= recovered),
    )


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
    return Verdict(name, status, reason, figures, history.request_interval())


def standard_checks(
    *, min_availability: float, max_outage_s: float, retry: RetryPolicy = RETRY_3X_EXPONENTIAL
) -> tuple[Check, ...]:
    """Availability (raw and with retries) and the longest outage against the same budgets."""
    return (
        functools.partial(availability, min_availability=min_availability),
        functools.partial(availability, min_availability=min_availability, retry=retry),
        functools.partial(longest_outage, max_outage_s=max_outage_s),
    )

