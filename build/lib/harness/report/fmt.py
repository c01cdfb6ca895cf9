"""How figures are written, the same on the page and on the terminal. A missing figure is an em dash."""

from __future__ import annotations

import math

from harness.report.compare import Change

MISSING = "—"


def percent(value: float | None) -> str:
    """Availability as a percentage, rounded down: 0.99996 is "99.99 %", never "100.00 %"."""
    if value is None:
        return MISSING
    return f"{math.floor(value * 10000 + 1e-9) / 100:.2f} %"


def seconds(value: float | None) -> str:
    if value is None:
        return MISSING
    return f"{value:.3f} s" if abs(value) < 10 else f"{value:.1f} s"


def interval(value: float | None) -> str:
    """The request interval, and the rate per endpoint it comes from."""
    if value is None or value <= 0:
        return "unknown"
    return f"{value * 1000:.0f} ms ({1 / value:.3g} req/s per endpoint)"


def observed(resolution) -> str:  # a harness.checkers.Resolution, or None
    """What the traffic really observed: the largest gap between sends to one endpoint and the largest send lag."""
    if resolution is None or resolution.gap is None:
        return "nothing observed"
    gap = resolution.gap
    where = f" (+{gap.start - gap.origin:.1f} s)" if gap.origin is not None else ""
    lag = f"; largest lag {resolution.max_lag_s * 1000:.0f} ms" if resolution.max_lag_s is not None else ""
    abandoned = f"; {resolution.abandoned} abandoned" if resolution.abandoned else ""
    return f"largest gap {gap.duration_s * 1000:.0f} ms on {gap.scope}{where}{lag}{abandoned}"


def change_value(change: Change, value: float | None) -> str:
    return percent(value) if change.metric.startswith("availability") else seconds(value)


def change_delta(change: Change) -> str:
    """The change with its sign: percentage points for availability, seconds otherwise."""
    delta = change.delta
    if delta is None:
        return ""
    if change.metric.startswith("availability"):
        return f"{delta * 100:+.2f} pp"
    return f"{delta:+.3f} s" if abs(delta) < 10 else f"{delta:+.1f} s"
