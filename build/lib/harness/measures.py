"""Measurements of a History, shared by the checkers (which judge them against budgets) and the report (which
draws them): the resolution actually observed, served requests under a client retry policy, outage windows,
fault windows, percentiles and the PIDs seen. Pure functions; no budget, no verdict.

Definitions (see ``docs/traffic.md``):

- an outage window is a maximal run of failed requests, from the first failure's send time to the next
  success's send time; a run still failing at the end is open-ended at the last send time;
- with a retry policy, a failed request counts as served if the policy retries its kind of error and a
  request to the SAME endpoint sent after it, no later than its completion plus the policy's total backoff,
  succeeded (the endpoint served within the time the client would still be retrying);
- the resolution of every figure is what was OBSERVED (``observed_resolution``): per endpoint, the largest
  gap between consecutive actual sends inside the judged window (its edges included), and the largest send
  lag. The planned request interval is only the best a figure can be.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from harness.history import ErrorKind, EventKind, History, RequestRecord
from harness.verdict import Gap, Resolution

ACROSS_ENDPOINTS = "all endpoints"


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


def hidden_sends(history: History, url: str, node: str, interval: float | None, tolerance_s: float | None) -> float:
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


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


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
