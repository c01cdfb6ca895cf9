"""Hand-built histories for checker tests: requests and fault events at chosen times."""

from __future__ import annotations

from collections.abc import Iterable

from harness.history import (
    ErrorKind,
    EventKind,
    FaultEvent,
    RequestRecord,
    TrafficMark,
    TrafficPhase,
)
from harness.stack.cluster import Endpoint

WALL_OFFSET = 1_700_000_000.0  # wall clock = monotonic + this, in built histories


def request(
    t: float,
    *,
    node: str = "a",
    error: ErrorKind = ErrorKind.OK,
    latency_s: float = 0.01,
    pid: int | None = None,
) -> RequestRecord:
    status = {ErrorKind.OK: 200, ErrorKind.HTTP_5XX: 503, ErrorKind.HTTP_4XX: 404, ErrorKind.WRONG_BODY: 200}.get(error)
    return RequestRecord(
        t_mono=t, t_wall=t + WALL_OFFSET, node=node, endpoint=f"http://127.0.0.1:8000/{node}",
        latency_s=latency_s, status=status, error=error, pid=pid,
    )


def steady(
    node: str,
    start: float,
    end: float,
    interval: float,
    *,
    failing: tuple[float, float] | None = None,
    error: ErrorKind = ErrorKind.CONNECTION_REFUSED,
    pid: int | None = None,
) -> list[RequestRecord]:
    """Requests every ``interval`` in [start, end); those sent inside ``failing`` fail with ``error``."""
    records = []
    i = 0
    while (t := start + i * interval) < end:
        fails = failing is not None and failing[0] <= t < failing[1]
        records.append(request(t, node=node, error=error if fails else ErrorKind.OK, pid=None if fails else pid))
        i += 1
    return records


def event(t: float, kind: EventKind, name: str = "KillHead", target: str = "head") -> FaultEvent:
    return FaultEvent(t, t + WALL_OFFSET, kind, name, target)


def traffic_mark(t: float, nodes: Iterable[str], rate: float, phase: TrafficPhase = TrafficPhase.STARTED) -> TrafficMark:
    endpoints = tuple(Endpoint(n, f"http://127.0.0.1:8000/{n}") for n in nodes)
    return TrafficMark(t, t + WALL_OFFSET, "test", phase, endpoints, rate, 2.0, 60.0, "PidBody()")

