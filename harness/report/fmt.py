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
