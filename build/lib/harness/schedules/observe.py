"""Reading a schedule's own traffic as it is recorded: when every endpoint has had so many sends past a time,
and whether every request sent before a cut is recorded (the open-loop sends leave a hole for one in flight).
Time in a schedule is read from the traffic, not slept."""

from __future__ import annotations

import bisect
import time
from pathlib import Path

from harness.history import HistoryTail, RequestRecord


class TrafficWatch:
    def __init__(self, history_path: Path, labels: tuple[str, ...], settle_s: float, rate_per_endpoint: float) -> None:
        self._reader = HistoryTail(history_path)
        self.labels = labels
        self.settle_s = settle_s
        self.rate_per_endpoint = rate_per_endpoint
        self._sends: dict[str, list[float]] = {}  # label -> recorded send times, sorted

    def _read_traffic(self) -> None:
        for record in self._reader.read_new():
            if isinstance(record, RequestRecord):
                bisect.insort(self._sends.setdefault(record.node, []), record.t_mono)

    def sent_since(self, since: float, count: int) -> float | None:
        """The time by which every endpoint had ``count`` recorded sends at or after ``since``, or None yet."""
        self._read_traffic()
        reached = []
        for label in self.labels:
            sends = self._sends.get(label, [])
            first = bisect.bisect_left(sends, since)
            if len(sends) - first < count:
                return None
            reached.append(sends[first + count - 1])
        return max(reached)

    def recorded_before(self, cut: float) -> bool:
        """Every request sent before ``cut`` is recorded: each endpoint has a recorded send after the cut, and
        either its recorded sends show no hole (the traffic is open-loop: a request still in flight leaves
        one) in the last ``settle_s`` before the cut, or ``settle_s`` has passed since the cut."""
        self._read_traffic()
        settle = self.settle_s
        late = time.monotonic() >= cut + settle
        hole = 1.5 / self.rate_per_endpoint
        for label in self.labels:
            sends = self._sends.get(label, [])
            after = bisect.bisect_left(sends, cut)
            if after == len(sends):
                return False
            recent = sends[bisect.bisect_left(sends, cut - settle):after + 1]
            if not late and any(b - a > hole for a, b in zip(recent, recent[1:])):
                return False
        return True
