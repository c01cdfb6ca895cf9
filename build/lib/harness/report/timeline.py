"""A scenario's timeline as a plotly figure: what happened to the requests while the fault ran.

Rows, sharing one time axis (seconds since the first record of the history):

1. the scenario's phases (``phase`` events; older histories: ``note`` events "phase <name>") and the fault's marks
   (inject, taken_effect, recovered, healed, and other notes), hover for details;
2. one row per endpoint: requests per second, stacked by outcome (ok, then each error kind), with the
   outage windows of ``checkers.outage_windows`` drawn as a dark red bar over them;
3. latency of the successful requests per endpoint (median and maximum per time bin, milliseconds).

The fault's life is shaded across every row: from injection until it took effect, then until it recovered
(paired by ``checkers.fault_windows``); a fault that never recovered is shaded to the end.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from harness.history import ErrorKind, EventKind, FaultEvent, History
from harness.measures import fault_windows, outage_windows, percentile

LEGACY_PHASE_NOTE_BY, LEGACY_PHASE_PREFIX = "scenario", "phase "  # how histories before PHASE events said it

OUTCOME_COLOURS: dict[ErrorKind, str] = {
    ErrorKind.OK: "#66bb6a",
    ErrorKind.CONNECTION_REFUSED: "#d32f2f",
    ErrorKind.TIMEOUT: "#ff8f00",
    ErrorKind.RESET: "#8e24aa",
    ErrorKind.HTTP_5XX: "#c2185b",
    ErrorKind.HTTP_4XX: "#6d4c41",
    ErrorKind.WRONG_BODY: "#fbc02d",
    ErrorKind.OTHER: "#546e7a",
}
MARK_STYLE: dict[EventKind, tuple[str, str]] = {  # colour, marker symbol
    EventKind.INJECT: ("#c62828", "triangle-down"),
    EventKind.TAKEN_EFFECT: ("#ef6c00", "diamond"),
    EventKind.RECOVERED: ("#2e7d32", "circle"),
    EventKind.HEALED: ("#1565c0", "square"),
    EventKind.NOTE: ("#616161", "x-thin-open"),
}
ENDPOINT_COLOURS = ("#1f77b4", "#9467bd", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
PHASE_COLOURS = ("#e3e9f2", "#cdd7e6")
OUTAGE_COLOUR = "#7f0000"


class BandKind(StrEnum):
    INJECTING = "injected, not yet in effect"
    IN_EFFECT = "in effect, until recovered"
    NEVER_RECOVERED = "in effect, never recovered"
    UNCONFIRMED = "injected, never confirmed in effect"


BAND_COLOURS: dict[BandKind, str] = {
    BandKind.INJECTING: "rgba(255, 183, 77, 0.30)",
    BandKind.IN_EFFECT: "rgba(229, 115, 115, 0.22)",
    BandKind.NEVER_RECOVERED: "rgba(183, 28, 28, 0.22)",
    BandKind.UNCONFIRMED: "rgba(158, 158, 158, 0.25)",
}


@dataclass(frozen=True)
class PhaseSpan:
    name: str
    start: float  # monotonic
    end: float


@dataclass(frozen=True)
class FaultBand:
    fault: str
    target: str
    kind: BandKind
    start: float  # monotonic
    end: float


@dataclass(frozen=True)
class Mark:
    t: float  # monotonic
    kind: EventKind
    label: str


def time_span(history: History) -> tuple[float, float] | None:
    """First and last instant the history knows of (a request's end counts), or None if it is empty."""
    starts = [r.t_mono for r in (*history.requests, *history.events, *history.traffic)]
    if not starts:
        return None
    ends = [r.t_mono + r.latency_s for r in history.requests]
    return min(starts), max(starts + ends)


def _is_phase(event: FaultEvent) -> bool:
    return event.kind is EventKind.PHASE or (event.kind is EventKind.NOTE and event.name == LEGACY_PHASE_NOTE_BY
                                             and event.detail.startswith(LEGACY_PHASE_PREFIX))


def _phase_name(event: FaultEvent) -> str:
    return event.name if event.kind is EventKind.PHASE else event.detail.removeprefix(LEGACY_PHASE_PREFIX)


def phase_spans(history: History) -> tuple[PhaseSpan, ...]:
    """The scenario's phases, each until the next one starts (the last until the history ends)."""
    span = time_span(history)
    notes = [e for e in history.events if _is_phase(e)]
    if span is None or not notes:
        return ()
    ends = [n.t_mono for n in notes[1:]] + [span[1]]
    return tuple(PhaseSpan(_phase_name(n), n.t_mono, end) for n, end in zip(notes, ends))


def fault_bands(history: History) -> tuple[FaultBand, ...]:
    """Each injection's life as bands: until it took effect, then until it recovered (or the end)."""
    span = time_span(history)
    if span is None:
        return ()
    bands = []
    for window in fault_windows(history):
        until = window.recovered if window.recovered is not None else span[1]
        effect = next((e.t_mono for e in history.events if e.kind is EventKind.TAKEN_EFFECT
                       and (e.name, e.target) == (window.name, window.target)
                       and window.injected <= e.t_mono <= until), None)
        if effect is None:
            bands.append(FaultBand(window.name, window.target, BandKind.UNCONFIRMED, window.injected, until))
            continue
        bands.append(FaultBand(window.name, window.target, BandKind.INJECTING, window.injected, effect))
        kind = BandKind.IN_EFFECT if window.recovered is not None else BandKind.NEVER_RECOVERED
        bands.append(FaultBand(window.name, window.target, kind, effect, until))
    return tuple(bands)


def marks(history: History) -> tuple[Mark, ...]:
    """Every fault event and note except the phase notes (those are the phase spans)."""
    return tuple(
        Mark(e.t_mono, e.kind, " ".join(filter(None, [str(e.kind), f"{e.name}@{e.target}" if e.target else e.name,
                                                       e.detail])))
        for e in history.events if not _is_phase(e)
    )


def bin_seconds(duration_s: float) -> float:
    """1 s bins, coarser for long runs so that a timeline has at most about 300 bins."""
    for step in (1.0, 2.0, 5.0, 10.0, 30.0, 60.0):
        if duration_s / step <= 300:
            return step
    return 60.0 * math.ceil(duration_s / 300 / 60)


def _seconds(delta: float) -> str:
    return f"{delta:.3f} s" if delta < 10 else f"{delta:.1f} s"


def timeline_figure(history: History) -> go.Figure | None:
    """The figure, or None when the history holds nothing to draw."""
    span = time_span(history)
    if span is None:
        return None
    t0, t_end = span
    endpoints = history.endpoints()
    rows = 2 + len(endpoints)
    heights = [0.6] + [1.0] * len(endpoints) + [1.3]
    titles = ["scenario phases and fault events", *(f"requests to {e.node}" for e in endpoints),
              "latency of successful requests"]
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=min(0.06, 0.3 / rows),
                        row_heights=heights, subplot_titles=titles)
    _phases_row(fig, history, t0)
    step = bin_seconds(t_end - t0)
    for row, endpoint in enumerate(endpoints, start=2):
        _requests_row(fig, history, endpoint.url, endpoint.node, row, t0, step)
    _latency_row(fig, history, rows, t0, step)
    # Bands and lines span every row: the subplots share one x axis, so x in data units, y over the paper.
    # (Shapes are set in one go: plotly's add_vrect(row="all") is slow.)
    bands = fault_bands(history)
    shapes = [*fig.layout.shapes, *(
        {"type": "rect", "xref": "x", "yref": "paper", "x0": b.start - t0, "x1": b.end - t0, "y0": 0, "y1": 1,
         "fillcolor": BAND_COLOURS[b.kind], "line": {"width": 0}, "layer": "below"} for b in bands), *(
        {"type": "line", "xref": "x", "yref": "paper", "x0": m.t - t0, "x1": m.t - t0, "y0": 0, "y1": 1,
         "line": {"color": MARK_STYLE[m.kind][0], "width": 1, "dash": "dot"}}
        for m in marks(history) if m.kind is not EventKind.NOTE)]
    fig.update_layout(shapes=shapes)
    for kind in dict.fromkeys(b.kind for b in bands):  # the bands' legend
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"fault {kind}", legendgroup="bands",
                                 marker={"symbol": "square", "size": 14, "color": BAND_COLOURS[kind]}), row=1, col=1)
    started = datetime.fromtimestamp(_wall_at(history, t0), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    fig.update_xaxes(title_text=f"seconds since {started} (bins of {step:g} s)", row=rows, col=1)
    fig.update_xaxes(showticklabels=True, ticksuffix=" s", range=[-0.5, t_end - t0 + 0.5])
    fig.update_layout(
        height=150 + 70 + 170 * len(endpoints) + 210, barmode="stack", bargap=0.05, hovermode="closest",
        template="plotly_white", font={"family": "system-ui, -apple-system, Segoe UI, sans-serif", "size": 12},
        margin={"l": 80, "r": 20, "t": 40, "b": 60},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0, "font": {"size": 11}},
        uniformtext={"mode": "hide", "minsize": 9},
    )
    return fig


def _wall_at(history: History, t_mono: float) -> float:
    """The wall-clock time of a monotonic instant, from the record closest to it."""
    records = (*history.requests, *history.events, *history.traffic)
    nearest = min(records, key=lambda r: abs(r.t_mono - t_mono))
    return nearest.t_wall + (t_mono - nearest.t_mono)


def _phases_row(fig: go.Figure, history: History, t0: float) -> None:
    spans = phase_spans(history)
    for i, span in enumerate(spans):
        fig.add_shape(type="rect", x0=span.start - t0, x1=span.end - t0, y0=0, y1=1, line_width=0,
                      fillcolor=PHASE_COLOURS[i % 2], layer="below", row=1, col=1)
    if spans:
        total = max(spans[-1].end - spans[0].start, 1e-9)
        fig.add_trace(go.Scatter(
            x=[(s.start + s.end) / 2 - t0 for s in spans], y=[0.5] * len(spans), mode="text",
            text=[s.name if (s.end - s.start) / total >= 0.04 else "" for s in spans],  # short ones: hover only
            textfont={"size": 11, "color": "#263238"}, showlegend=False,
            hovertext=[f"phase {s.name}: {s.start - t0:.2f} s → {s.end - t0:.2f} s ({_seconds(s.end - s.start)})"
                       for s in spans], hoverinfo="text"), row=1, col=1)
    by_kind: dict[EventKind, list[Mark]] = defaultdict(list)
    for mark in marks(history):
        by_kind[mark.kind].append(mark)
    for kind, group in by_kind.items():
        colour, symbol = MARK_STYLE[kind]
        fig.add_trace(go.Scatter(
            x=[m.t - t0 for m in group], y=[1.5] * len(group), mode="markers", name=str(kind).replace("_", " "),
            marker={"color": colour, "symbol": symbol, "size": 11, "line": {"width": 1, "color": colour}},
            hovertext=[f"{m.t - t0:.2f} s: {m.label}" for m in group], hoverinfo="text", legendgroup="marks"),
            row=1, col=1)
    fig.update_yaxes(range=[0, 2], showticklabels=False, showgrid=False, row=1, col=1)


def _requests_row(fig: go.Figure, history: History, url: str, node: str, row: int, t0: float, step: float) -> None:
    counts: dict[ErrorKind, Counter[int]] = defaultdict(Counter)
    for r in history.requests:
        if r.endpoint == url:
            counts[r.error][int((r.t_mono - t0) // step)] += 1
    peak = 0.0
    for kind in OUTCOME_COLOURS:  # ok first, so failures stack on top of it
        if kind not in counts:
            continue
        bins = sorted(counts[kind])
        rates = [counts[kind][b] / step for b in bins]
        peak = max(peak, max(rates))
        label = "ok" if kind is ErrorKind.OK else f"failed: {kind.replace('_', ' ')}"
        fig.add_trace(go.Bar(
            x=[(b + 0.5) * step for b in bins], y=rates, width=step * 0.95, name=label, legendgroup=str(kind),
            showlegend=not any(t.legendgroup == str(kind) for t in fig.data), marker={"color": OUTCOME_COLOURS[kind]},
            hovertemplate=f"{node} %{{x:.0f}} s: %{{y:.3g}} req/s {label}<extra></extra>"), row=row, col=1)
    windows = [w for w in outage_windows(history) if w.scope == node]
    level = max(peak, 1.0) * 1.1
    for w in windows:
        how = " (still failing when the history ends)" if w.open_ended else ""
        fig.add_trace(go.Scatter(
            x=[w.start - t0, w.end - t0], y=[level, level], mode="lines", line={"color": OUTAGE_COLOUR, "width": 5},
            name="outage window", legendgroup="outage",
            showlegend=not any(t.legendgroup == "outage" for t in fig.data),
            hovertext=f"outage on {node}: {_seconds(w.duration_s)}, {w.failures} failed requests{how}",
            hoverinfo="text"), row=row, col=1)
    fig.update_yaxes(title_text=f"{node}<br>req/s", rangemode="tozero", range=[0, level * 1.12], row=row, col=1)


def _latency_row(fig: go.Figure, history: History, row: int, t0: float, step: float) -> None:
    for i, endpoint in enumerate(history.endpoints()):
        bins: dict[int, list[float]] = defaultdict(list)
        for r in history.requests:
            if r.endpoint == endpoint.url and r.ok:
                bins[int((r.t_mono - t0) // step)].append(r.latency_s * 1000.0)
        if not bins:
            continue
        every = range(min(bins), max(bins) + 1)  # a bin without a success is a gap in the line, not a ramp
        x = [(b + 0.5) * step for b in every]
        colour = ENDPOINT_COLOURS[i % len(ENDPOINT_COLOURS)]
        for stat, dash, values in (
            ("median", "solid", [percentile(bins[b], 50) if b in bins else None for b in every]),
            ("max", "dot", [max(bins[b]) if b in bins else None for b in every]),
        ):
            fig.add_trace(go.Scatter(
                x=x, y=values, mode="lines", line={"color": colour, "dash": dash, "width": 1.5},
                name=f"latency {stat}, {endpoint.node}", legendgroup=f"latency-{endpoint.node}", connectgaps=False,
                hovertemplate=f"{endpoint.node} %{{x:.0f}} s: {stat} %{{y:.1f}} ms<extra></extra>"), row=row, col=1)
    fig.update_yaxes(title_text="latency<br>ms (log)", type="log", row=row, col=1)
