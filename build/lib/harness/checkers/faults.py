"""Checks of the faults themselves: every injected fault took effect (and, with a budget, fast enough: the
health check's detection time), and traffic overlapped the whole fault. Pure functions of a History."""

from __future__ import annotations

from collections.abc import Sequence

from harness.checkers.traffic import checker
from harness.history import EventKind, History
from harness.measures import fault_windows
from harness.verdict import Status, Verdict


@checker
def traffic_coverage(history: History, nodes: Sequence[str], after_recovery_s: float,
                     fault: str | None = None) -> Verdict:
    """Traffic overlapped the whole fault (``fault``, or every one): each endpoint of ``nodes`` has requests sent
    before every injection and at least ``after_recovery_s`` after its recovery (or, without recovery, until the
    traffic ended)."""
    name = "traffic_coverage"
    windows = fault_windows(history, fault)
    if not windows:
        return Verdict(name, Status.UNKNOWN, "no fault was injected")
    gaps = []
    for w in windows:
        end_needed = (w.recovered if w.recovered is not None else w.injected) + after_recovery_s
        for node in nodes:
            sends = [r.t_mono for r in history.requests if r.node == node]
            if not sends or sends[0] >= w.injected:
                gaps.append(f"{node}: no request before {w.name} was injected")
            elif sends[-1] < end_needed - 1.0:
                gaps.append(f"{node}: traffic ended {end_needed - sends[-1]:.1f}s before {after_recovery_s:g}s past recovery")
    if gaps:
        return Verdict(name, Status.FAIL, "traffic did not cover the fault: " + "; ".join(gaps))
    return Verdict(name, Status.PASS, f"traffic on {', '.join(nodes)} ran from before injection to "
                   f"{after_recovery_s:g}s past recovery")


@checker
def fault_took_effect(history: History, max_s: float | None = None) -> Verdict:
    """Every injected fault took effect (and, with ``max_s``, within that long: e.g. detection time)."""
    name = "fault_took_effect"
    injected = [e for e in history.events if e.kind is EventKind.INJECT]
    if not injected:
        return Verdict(name, Status.UNKNOWN, "no fault was injected")
    figures: dict[str, float] = {}
    missing = []
    for inject in injected:
        effect = next((e for e in history.events if e.kind is EventKind.TAKEN_EFFECT and e.name == inject.name
                       and e.target == inject.target and e.t_mono >= inject.t_mono), None)
        if effect is None:
            missing.append(f"{inject.name}@{inject.target}")
        else:
            figures[f"time_to_take_effect_s.{inject.name}"] = effect.t_mono - inject.t_mono
    slowest = max(figures.values(), default=0.0)
    figures["time_to_take_effect_s"] = slowest
    if missing:
        return Verdict(name, Status.FAIL, f"never took effect: {', '.join(missing)}", figures)
    if max_s is not None and slowest > max_s:
        return Verdict(name, Status.FAIL, f"took effect after {slowest:.2f}s, budget <= {max_s:g}s", figures)
    budget = f" (budget <= {max_s:g}s)" if max_s is not None else ""
    return Verdict(name, Status.PASS, f"took effect after {slowest:.2f}s{budget}", figures)
