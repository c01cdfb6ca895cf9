"""Verdicts: what a check concludes (pass / fail / unknown), its figures, its reason and the resolution it holds
at. Records, shared by the checkers that make them, the scenarios that combine them and the report that reads
them back (``Verdict.to_json`` / ``Verdict.from_json``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

# A gap between two sends to one endpoint of up to this many planned intervals is the resolution a figure is
# stated at; a longer one is a hole in the evidence (docs/traffic.md, "Resolution"). Measured on the seed suite
# (scenarios/budgets.toml).
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


def explain(verdict: Verdict) -> str:
    """The failing (or unknown) parts' reasons, else the overall reason."""
    bad = [v for v in verdict.parts if v.status is not Status.PASS]
    return "; ".join(f"{v.name}: {v.status}: {v.reason}" for v in bad) if bad else verdict.reason
