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
- the resolution of every figure is what was OBSERVED (``observed_resolution``): per endpoint, the largest
  gap between consecutive actual sends inside the judged window (its edges included), and the largest send
  lag. The planned request interval is only the best a figure can be.

No pass without observation: a gap longer than the budget can tolerate (``GAP_SLACK_INTERVALS`` planned
intervals, or the outage budget if longer) could hide an outage, so an availability or outage check that would
pass is UNKNOWN instead, naming the gap. Availability counts what it cannot see against itself: a request
abandoned in flight (no outcome) and every planned send missing from such a gap count as failures in the
worst case; the verdict passes only if the worst case meets the budget, fails if even the best case does not,
and is UNKNOWN in between.
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
# A gap between two sends to one endpoint of up to this many planned intervals is the resolution a figure is
# stated at; a longer one is a hole in the evidence. Measured on the seed suite at 20 req/s per endpoint: see
# docs/traffic.md ("Resolution").
GAP_SLACK_INTERVALS = 4.0


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Gap:
    """The longest time one endpoint went without an observed send, inside a judged window."""

    scope: str  # the endpoint's node
    start: float  # monotonic: the send before the hole (or the window's start)
    end: float  # monotonic: the send after it (or the window's end, or when sending ended)
    origin: float | None = None  # the history's origin, to say where the gap was in run time

    @property
    def duration_s(self) -> float:
        return self.end - self.start

    def where(self) -> str:
        if self.origin is None:
            return f"{self.duration_s:.3f}s on {self.scope}"
        return f"{self.duration_s:.3f}s on {self.scope} (+{self.start - self.origin:.2f}s to +{self.end - self.origin:.2f}s)"

    def to_json(self) -> dict:
        return {"scope": self.scope, "start": self.start, "end": self.end, "seconds": self.duration_s,
                "from_s": None if self.origin is None else self.start - self.origin,
                "to_s": None if self.origin is None else self.end - self.origin}


@dataclass(frozen=True)
class Resolution:
    """The resolution a figure holds at: planned (the request interval) and OBSERVED (the largest gap between
    actual sends to one endpoint in the judged window, and the largest send lag behind the plan)."""

    planned_interval_s: float | None
    max_gap_s: float | None  # None: nothing was sent in the window
    gap: Gap | None
    max_lag_s: float | None
    abandoned: int = 0  # requests sent but abandoned in flight: no outcome observed

    def text(self) -> str:
        planned = f"{self.planned_interval_s:.3g}s" if self.planned_interval_s else "unknown"
        if self.gap is None:
            return f"resolution: planned interval {planned}, nothing observed"
        lag = f", largest send lag {self.max_lag_s:.3f}s" if self.max_lag_s is not None else ""
        abandoned = f", {self.abandoned} request(s) abandoned in flight" if self.abandoned else ""
        return f"resolution: planned interval {planned}, observed largest gap {self.gap.where()}{lag}{abandoned}"

    def tolerance_s(self, outage_budget_s: float = 0.0) -> float | None:
        """The longest gap the figures can tolerate: GAP_SLACK_INTERVALS planned intervals, or the outage budget
        if longer (an outage hidden in a gap is shorter than the gap)."""
        if self.planned_interval_s is None:
            return None
        return max(outage_budget_s, GAP_SLACK_INTERVALS * self.planned_interval_s)

    def to_json(self) -> dict:
        return {"planned_interval_s": self.planned_interval_s, "max_gap_s": self.max_gap_s,
                "gap": self.gap.to_json() if self.gap else None, "max_lag_s": self.max_lag_s,
                "abandoned": self.abandoned}

    @classmethod
    def from_json(cls, obj: Mapping | None, planned: float | None = None) -> Resolution | None:
        """From verdict.json (also an older one that stated only ``resolution_s``, the planned interval)."""
        if not obj:
            return cls(planned, None, None, None) if planned is not None else None
        gap = obj.get("gap")
        return cls(obj.get("planned_interval_s"), obj.get("max_gap_s"),
                   Gap(gap["scope"], gap["start"], gap["end"],
                       gap["start"] - gap["from_s"] if gap.get("from_s") is not None else None) if gap else None,
                   obj.get("max_lag_s"), int(obj.get("abandoned") or 0))

    @staticmethod
    def coarsest(resolutions: Sequence[Resolution | None]) -> Resolution | None:
        """The worst of several: the largest planned interval, gap and lag, the abandoned requests of the one
        with the largest gap."""
        known = [r for r in resolutions if r is not None]
        if not known:
            return None
        gaps = [r for r in known if r.gap is not None]
        worst_gap = max(gaps, key=lambda r: r.gap.duration_s) if gaps else None  # type: ignore[union-attr]
        lags = [r.max_lag_s for r in known if r.max_lag_s is not None]
        planned = [r.planned_interval_s for r in known if r.planned_interval_s is not None]
        return Resolution(max(planned, default=None), worst_gap.max_gap_s if worst_gap else None,
                          worst_gap.gap if worst_gap else None, max(lags, default=None),
                          max(r.abandoned for r in known))


@dataclass(frozen=True)
class Verdict:
    name: str
    status: Status
    reason: str  # states the budget and the figure it was checked against
    figures: Mapping[str, float] = field(default_factory=dict)
    resolution: Resolution | None = None  # what was observed: no figure is finer than this
    parts: tuple[Verdict, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "figures", MappingProxyType(dict(self.figures)))

    @property
    def passed(self) -> bool:
        return self.status is Status.PASS

    @property
    def resolution_s(self) -> float | None:
        """The planned request interval (the finest any figure can be)."""
        return self.resolution.planned_interval_s if self.resolution else None

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "status": str(self.status),
            "reason": self.reason,
            "figures": dict(self.figures),
            "resolution_s": self.resolution_s,
            "resolution": self.resolution.to_json() if self.resolution else None,
            "parts": [p.to_json() for p in self.parts],
        }

    @classmethod
    def from_json(cls, obj: Mapping) -> Verdict:
        return cls(str(obj.get("name", "")), Status(obj.get("status", Status.UNKNOWN)), str(obj.get("reason", "")),
                   {str(k): float(v) for k, v in (obj.get("figures") or {}).items()},
                   Resolution.from_json(obj.get("resolution"), obj.get("resolution_s")),
                   tuple(cls.from_json(p) for p in obj.get("parts") or ()))


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
    reason = "; ".join(f"{v.name}: {v.status}" for v in verdicts) or "no checks"
    return Verdict(name, status, reason, figures, Resolution.coarsest([v.resolution for v in verdicts]),
                   tuple(verdicts))


def check_all(history: History, *checks: Check, name: str = "all") -> Verdict:
    """Run every check (each made safe) on the history and combine their verdicts."""
    return combine(name, [checker(c)(history) for c in checks])


def _nothing_observed(name: str, history: History, what: str = "requests") -> Verdict:
    return Verdict(name, Status.UNKNOWN, f"nothing observed: no {what} in the history",
                   resolution=observed_resolution(history))


def _endpoint_gaps(history: History, url: str, node: str, origin: float | None) -> list[Gap]:
    """The holes between consecutive observed sends to one endpoint, the window's edges included: from the
    window's start to the first send, and from the last send to the window's end or to when sending ended."""
    sends = [r.t_mono for r in history.requests if r.endpoint == url and r.observed]
    edges_start = history.window_start
    ended = history.sending_ended(url)
    edges_end = min(x for x in (history.window_end, ended) if x is not None) \
        if history.window_end is not None or ended is not None else None
    points = sends
    if edges_start is not None and (not sends or edges_start < sends[0]):
        points = [edges_start, *points]
    if edges_end is not None and points and edges_end > points[-1]:
        points = [*points, edges_end]
    return [Gap(node, a, b, origin) for a, b in zip(points, points[1:])]


def observed_resolution(history: History) -> Resolution:
    """What the history really saw: per endpoint, the largest gap between actual sends (with outcomes) inside
    the judged window, and the largest lag of a send behind its plan."""
    origin = history.origin
    gaps: list[Gap] = []
    for endpoint in history.endpoints():
        gaps += _endpoint_gaps(history, endpoint.url, endpoint.node, origin)
    widest = max(gaps, key=lambda g: g.duration_s, default=None)
    lags = [r.lag_s for r in history.requests]
    return Resolution(history.request_interval(), widest.duration_s if widest else None, widest,
                      max(lags, default=None), sum(not r.observed for r in history.requests))


def _hidden_sends(history: History, url: str, node: str, interval: float | None, tolerance_s: float | None) -> float:
    """Planned sends that gaps longer than the tolerance left out (each could have failed, unseen)."""
    if interval is None or tolerance_s is None:
        return 0.0
    return sum(max(0.0, g.duration_s / interval - 1.0)
               for g in _endpoint_gaps(history, url, node, None) if g.duration_s > tolerance_s + 1e-9)


def gap_problem(resolution: Resolution, tolerance_s: float | None) -> str | None:
    """Why the observed resolution cannot support a pass, or None."""
    if resolution.gap is None or tolerance_s is None:
        return None
    if resolution.gap.duration_s > tolerance_s + 1e-9:
        return (f"no request was observed for {resolution.gap.where()}, longer than the {tolerance_s:.3g}s the budget "
                f"can tolerate (an outage could hide there; the generator or the machine stalled?)")
    return None


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
def availability(history: History, *, min_availability: float, retry: RetryPolicy | None = None,
                 outage_budget_s: float = 0.0, sends: History | None = None) -> Verdict:
    """Share of requests served, per endpoint and overall; every endpoint must meet the budget.

    Requests with no observed outcome (abandoned in flight) and the planned sends missing from gaps longer than
    the tolerance (``Resolution.tolerance_s(outage_budget_s)``) are counted as failures in the worst case and as
    successes in the best: PASS needs the worst case within budget, FAIL the best case out of it; else UNKNOWN.
    ``sends``: the history whose sends show the resolution, when ``history`` holds only the requests owed an
    answer (default: ``history`` itself)."""
    name = "availability" if retry is None else f"availability_{retry.name}"
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
        hidden = _hidden_sends(sends, endpoint.url, endpoint.node, interval, tolerance)
        if seen:
            ratio = count / len(seen)
            figures[f"{name}.{endpoint.node}"] = ratio
            worst = min(worst, (ratio, endpoint.node))
        worst_case = min(worst_case, (count / (len(requests) + hidden), endpoint.node))
        best_case = min(best_case, ((count + abandoned) / len(requests), endpoint.node))
    failures = observed_total - total_served
    abandoned_total = len(history.requests) - observed_total
    figures[name] = total_served / observed_total
    figures["requests"] = len(history.requests)
    figures["failures" if retry is None else f"failures_{retry.name}"] = failures
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
    requests = [r for r in requests if r.observed]  # an abandoned request is neither a success nor a failure
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
    figures["longest_outage_s"] = longest.duration_s if longest else 0.0
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
    return Verdict(name, status, reason, figures, observed_resolution(history))


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

