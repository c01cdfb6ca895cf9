"""History: the append-only record of a run, the single source of truth for every verdict.

Four kinds of record, all typed and frozen:

- ``RequestRecord``: one HTTP request sent by Traffic, whatever its outcome;
- ``FaultEvent``: a fault's life (inject, taken_effect, recovered, healed), a scenario's phase starting
  (``phase``: its name), or a free note;
- ``TrafficMark``: traffic started, finished on its own, or was stopped, with its plan;
- ``Snapshot``: what the stack ran at a moment (nodes, controller, proxies, replicas with PIDs and ids),
  labelled ``before`` or ``after``: the identity evidence every check reads.

On disk a History is JSON Lines (schema in ``docs/history.md``), written while the run goes: every
``append`` is one ``os.write`` of whole lines on a file opened with ``O_APPEND``, so several processes
(the traffic child and the scenario) can append to the same file, and a crash keeps every line written
before it. ``History.load`` tolerates a last line cut short (a history cut at any byte still loads).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from harness.stack.cluster import Endpoint, StackStatus


class ErrorKind(StrEnum):
    """How a request ended. ``ok`` is the only success."""

    OK = "ok"
    CONNECTION_REFUSED = "connection_refused"
    TIMEOUT = "timeout"
    RESET = "reset"  # the connection was reset or closed under the request
    HTTP_5XX = "http_5xx"
    HTTP_4XX = "http_4xx"
    WRONG_BODY = "wrong_body"  # a 2xx whose body the response check rejected
    OTHER = "other"
    ABANDONED = "abandoned"  # sent, then abandoned in flight when traffic stopped: no outcome was observed


class EventKind(StrEnum):
    INJECT = "inject"
    TAKEN_EFFECT = "taken_effect"
    RECOVERED = "recovered"
    HEALED = "healed"
    PHASE = "phase"  # a scenario's phase starts: name = the phase, target = the scenario
    NOTE = "note"


class TrafficPhase(StrEnum):
    STARTED = "started"
    FINISHED = "finished"  # reached its duration
    STOPPED = "stopped"  # asked to stop (or its parent went away)


@dataclass(frozen=True)
class RequestRecord:
    t_mono: float  # send time, time.monotonic() (CLOCK_MONOTONIC: one clock for every process)
    t_wall: float  # send time, time.time()
    node: str  # the endpoint's node name
    endpoint: str  # the URL requested
    latency_s: float
    status: int | None  # HTTP status, None when no response came
    error: ErrorKind
    pid: int | None = None  # the PID the response body carried, when the check extracts one
    lag_s: float = 0.0  # how late the send was against its open-loop schedule
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.error is ErrorKind.OK

    @property
    def observed(self) -> bool:
        """An outcome was seen (success or failure); an abandoned request has none."""
        return self.error is not ErrorKind.ABANDONED


@dataclass(frozen=True)
class FaultEvent:
    t_mono: float
    t_wall: float
    kind: EventKind
    name: str  # the fault's name, e.g. KillHead; for notes, who wrote it
    target: str  # node, actor or app the fault acts on
    detail: str = ""


@dataclass(frozen=True)
class TrafficMark:
    t_mono: float
    t_wall: float
    traffic_id: str
    phase: TrafficPhase
    endpoints: tuple[Endpoint, ...]
    rate_per_endpoint: float
    timeout_s: float
    duration_s: float
    check: str
    detail: str = ""
    # on the final mark (finished or stopped): what the child did, and when its sending ended (monotonic)
    sent: int | None = None
    recorded: int | None = None
    abandoned: int | None = None
    sending_ended: float | None = None


@dataclass(frozen=True)
class Snapshot:
    """The stack as a status read saw it, at a labelled moment of a scenario ("before", "after")."""

    t_mono: float
    t_wall: float
    label: str
    status: StackStatus


Record = RequestRecord | FaultEvent | TrafficMark | Snapshot

_TAGS: dict[type, str] = {RequestRecord: "request", FaultEvent: "fault", TrafficMark: "traffic", Snapshot: "snapshot"}


class HistoryError(ValueError):
    """A history file that cannot be read (beyond a truncated last line)."""


def encode(record: Record) -> bytes:
    """One JSON line (with its newline) for a record."""
    fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    if isinstance(record, TrafficMark):
        fields["endpoints"] = [dataclasses.asdict(e) for e in record.endpoints]
    elif isinstance(record, Snapshot):
        fields["status"] = record.status.to_json()
    line = json.dumps({"type": _TAGS[type(record)], **fields}, separators=(",", ":"))
    return line.encode() + b"\n"


def decode(obj: dict) -> Record:
    """The record a decoded JSON line describes; unknown fields are ignored (forward compatible)."""
    tag = obj.get("type")
    cls = next((c for c, t in _TAGS.items() if t == tag), None)
    if cls is None:
        raise HistoryError(f"unknown record type {tag!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    fields = {k: v for k, v in obj.items() if k in names}
    if cls is RequestRecord:
        fields["error"] = ErrorKind(fields["error"])
    elif cls is FaultEvent:
        fields["kind"] = EventKind(fields["kind"])
    elif cls is Snapshot:
        fields["status"] = StackStatus.from_json(fields["status"])
    else:
        fields["phase"] = TrafficPhase(fields["phase"])
        fields["endpoints"] = tuple(Endpoint(**e) for e in fields["endpoints"])
    try:
        return cls(**fields)
    except TypeError as exc:
        raise HistoryError(f"{tag} record with missing fields: {exc}") from None


def _decode_line(line: bytes) -> Record:
    obj = json.loads(line)
    if not isinstance(obj, dict):
        raise HistoryError(f"a record is a JSON object, not {type(obj).__name__}")
    return decode(obj)


def decode_lines(data: bytes, *, final: bool) -> tuple[list[Record], bytes]:
    """Decode the complete lines of ``data``; returns the records and the unconsumed rest.

    With ``final`` the rest (a last line without newline) is decoded too if it is a whole record and
    dropped if it was cut short; the returned rest is then that cut line (empty if none).
    """
    *lines, rest = data.split(b"\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(_decode_line(line))
        except (ValueError, KeyError, TypeError) as exc:
            raise HistoryError(f"line {number}: cannot read record: {exc}") from None
    if final and rest.strip():
        try:
            records.append(_decode_line(rest))
            rest = b""
        except (ValueError, KeyError, TypeError):
            pass  # cut short by a crash: everything before it still counts
    return records, rest


@dataclass(frozen=True)
class History:
    """A run's records, each kind sorted by monotonic time (requests by send time)."""

    requests: tuple[RequestRecord, ...] = ()
    events: tuple[FaultEvent, ...] = ()
    traffic: tuple[TrafficMark, ...] = ()
    snapshots: tuple[Snapshot, ...] = ()
    truncated: bool = False  # the file's last line was cut short and left out
    # the judged window (``between``): requests sent in [window_start, window_end); None: unbounded
    window_start: float | None = None
    window_end: float | None = None

    @classmethod
    def of(cls, records: Iterable[Record], *, truncated: bool = False) -> History:
        records = list(records)

        def sort(kind: type) -> tuple:
            return tuple(sorted((r for r in records if isinstance(r, kind)), key=lambda r: r.t_mono))

        return cls(sort(RequestRecord), sort(FaultEvent), sort(TrafficMark), sort(Snapshot), truncated)

    @classmethod
    def load(cls, path: str | Path) -> History:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise HistoryError(f"cannot read history {path}: {exc.strerror}") from None
        try:
            records, cut = decode_lines(data, final=True)
        except HistoryError as exc:
            raise HistoryError(f"{path}: {exc}") from None
        return cls.of(records, truncated=bool(cut.strip()))

    def endpoints(self) -> tuple[Endpoint, ...]:
        """The endpoints requests went to, in order of their first request."""
        return tuple(dict.fromkeys(Endpoint(r.node, r.endpoint) for r in self.requests))

    def select(self, endpoints: Collection[str] | None) -> History:
        """Only the requests to these endpoints, named by node or URL (None: all)."""
        if endpoints is None:
            return self
        chosen = set(endpoints)
        requests = tuple(r for r in self.requests if r.node in chosen or r.endpoint in chosen)
        return dataclasses.replace(self, requests=requests)

    def between(self, start: float, end: float) -> History:
        """Requests sent and events that happened in [start, end) (monotonic seconds); the window is kept, so
        that a checker can tell a hole at its edges from the end of the data."""
        if self.window_start is not None:
            start = max(start, self.window_start)
        if self.window_end is not None:
            end = min(end, self.window_end)
        return dataclasses.replace(
            self,
            requests=tuple(r for r in self.requests if start <= r.t_mono < end),
            events=tuple(e for e in self.events if start <= e.t_mono < end),
            window_start=start if start > -math.inf else None,
            window_end=end if end < math.inf else None,
        )

    def snapshot(self, label: str) -> StackStatus | None:
        """The last snapshot with this label (None: none was taken)."""
        found = [s for s in self.snapshots if s.label == label]
        return found[-1].status if found else None

    def phases(self) -> tuple[FaultEvent, ...]:
        """The scenario's phase events, in order."""
        return tuple(e for e in self.events if e.kind is EventKind.PHASE)

    @property
    def origin(self) -> float | None:
        """Where relative times start: the first traffic start, else the first request (monotonic)."""
        starts = [m.t_mono for m in self.traffic if m.phase is TrafficPhase.STARTED]
        firsts = [self.requests[0].t_mono] if self.requests else []
        return min(starts or firsts, default=None)

    def sending_ended(self, endpoint_url: str) -> float | None:
        """When the traffic that sent to this endpoint stopped sending (its final mark), if recorded."""
        ends = [m.sending_ended for m in self.traffic if m.sending_ended is not None
                and any(e.url == endpoint_url for e in m.endpoints)]
        return max(ends, default=None)

    def request_interval(self) -> float | None:
        """The PLANNED interval between two requests to one endpoint (the finest resolution a figure can have;
        what was observed is ``checkers.observed_resolution``).

        Taken from the traffic plans (the coarsest), else estimated as the median gap between
        consecutive requests to one endpoint; None when nothing tells.
        """
        planned = [1.0 / m.rate_per_endpoint for m in self.traffic if m.rate_per_endpoint > 0]
        if planned:
            return max(planned)
        gaps = []
        for endpoint in self.endpoints():
            sends = [r.t_mono for r in self.requests if r.endpoint == endpoint.url]
            gaps += [b - a for a, b in zip(sends, sends[1:])]
        return statistics.median(gaps) if gaps else None


class HistoryWriter:
    """Appends records to a JSON Lines history as they happen; safe to share between processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def append(self, *records: Record) -> None:
        if self._fd is None:
            raise ValueError(f"history writer for {self.path} is closed")
        data = b"".join(encode(r) for r in records)
        while data:  # a regular file takes it in one write unless the disk is full
            written = os.write(self._fd, data)
            data = data[written:]

    def event(self, kind: EventKind, name: str, target: str, detail: str = "") -> FaultEvent:
        """Record a fault event stamped now, and return it."""
        event = FaultEvent(time.monotonic(), time.time(), EventKind(kind), name, target, detail)
        self.append(event)
        return event

    def note(self, text: str, *, name: str = "harness", target: str = "") -> FaultEvent:
        return self.event(EventKind.NOTE, name, target, text)

    def snapshot(self, label: str, status: StackStatus) -> Snapshot:
        """Record what the stack runs now under ``label``, and return it."""
        record = Snapshot(time.monotonic(), time.time(), label, status)
        self.append(record)
        return record

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HistoryTail:
    """Reads the records appended to a history file since the last call (for progress and readiness)."""

    def __init__(self, path: str | Path, *, from_end: bool = False) -> None:
        self.path = Path(path)
        self._offset = self.path.stat().st_size if from_end and self.path.exists() else 0
        self._rest = b""

    def read_new(self) -> list[Record]:
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        records, self._rest = decode_lines(self._rest + data, final=False)
        return records
