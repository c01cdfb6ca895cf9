"""Writing the pages: a run's ``index.html``, a comparison of two runs, a scenario's standalone timeline.

Every page opens offline: plotly's JavaScript is inlined once per page, nothing is loaded from a network.
Pages are jinja2 templates in ``templates/``; figures come from ``timeline.timeline_figure``.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import jinja2
import plotly.graph_objects as go
import plotly.offline
from markupsafe import Markup

from harness.history import History, HistoryError
from harness.matrix import read_record
from harness.measures import observed_resolution
from harness.records import CONFIG, HISTORY, TIMELINE, Budget
from harness.report import fmt
from harness.report.compare import Movement, RunComparison, Tolerances, compare_runs
from harness.report.matrix import INDEX, MatrixGrid, build_grid, comparison_page
from harness.report.model import RunSummary, ScenarioSummary, load_run
from harness.report.redact import ConfigEntry, RedactedConfig, redact_config
from harness.report.timeline import timeline_figure
from harness.verdict import Status

GRID = "grid.json"  # in a matrix folder: the grid's figures, for a program to read
CONFIG_REDACTED = "config.redacted.json"  # the report's own file
LATEST = "latest"
RUN_ID = re.compile(r"^\d{8}-\d{6}(-[0-9a-f]+)?$")  # the pytest plugin's <date>-<time>-<hex>
PLOT_CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "png", "scale": 2}}
VERSIONED = ("ray", "serve-chaos-harness", "plotly", "jinja2", "allure-pytest")

def scenario_anchor(scenario: ScenarioSummary) -> str:
    """The id of a scenario's section on the run page."""
    return "s-" + re.sub(r"[^A-Za-z0-9_-]", "-", scenario.folder)


_env = jinja2.Environment(
    loader=jinja2.PackageLoader("harness.report", "templates"),
    autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
)
_env.filters.update(percent=fmt.percent, seconds=fmt.seconds, interval=fmt.interval, observed=fmt.observed,
                    change_value=fmt.change_value, change_delta=fmt.change_delta, anchor=scenario_anchor)
_env.globals.update(Status=Status, Movement=Movement)


@dataclass(frozen=True)
class ConfigView:
    """The configuration as the page shows it: redacted entries, budgets per scenario, versions."""

    entries: tuple[ConfigEntry, ...]
    source: str  # where the entries came from
    budgets: tuple[tuple[str, Budget], ...]  # (scenario folder, budget)
    budget_fields: tuple[str, ...]
    versions: tuple[ConfigEntry, ...]
    versions_source: str


def plotly_js() -> Markup:
    """plotly.js, to inline once in a page (about 4.8 MB; the page then needs no network)."""
    return Markup(plotly.offline.get_plotlyjs())


def figure_div(fig: go.Figure, div_id: str) -> Markup:
    return Markup(fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG))


def _read_config(run_dir: Path, config: Mapping | None) -> tuple[Mapping | None, str, list[str]]:
    if config is not None:
        return config, "passed to the report by the runner", []
    path = run_dir / CONFIG
    if not path.exists():
        return None, "", [f"no {CONFIG} in the run folder: the stack configuration is not recorded"]
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return None, "", [f"{CONFIG} unreadable: {exc}"]
    if not isinstance(data, Mapping):
        return None, "", [f"{CONFIG} is not a JSON object"]
    return data, f"{CONFIG} in the run folder", []


def _versions(redacted: RedactedConfig | None) -> tuple[tuple[ConfigEntry, ...], str]:
    recorded = tuple(dataclasses.replace(e, key=e.key.removeprefix("versions.")) for e in redacted.entries
                     if e.key.startswith("versions.")) if redacted else ()
    if recorded:
        return recorded, "recorded with the run"
    entries = [ConfigEntry("python", platform.python_version(), False)]
    for dist in VERSIONED:
        try:
            entries.append(ConfigEntry(dist, importlib.metadata.version(dist), False))
        except importlib.metadata.PackageNotFoundError:
            entries.append(ConfigEntry(dist, "not installed", False))
    return tuple(entries), "of the environment that wrote this report (the run recorded none)"


def config_view(run: RunSummary, redacted: RedactedConfig | None, source: str) -> ConfigView:
    budgets = tuple((s.folder, s.budget) for s in run.scenarios if s.budget is not None)
    versions, versions_source = _versions(redacted)
    entries = tuple(e for e in redacted.entries if not e.key.startswith("versions.")) if redacted else ()
    return ConfigView(entries, source, budgets, tuple(f.name for f in dataclasses.fields(Budget)),
                      versions, versions_source)


def _write(path: Path, text: str) -> None:
    """Atomically: a reader (or a browser) never sees half a page."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _figures(run: RunSummary) -> dict[str, Markup]:
    figures = {}
    for i, scenario in enumerate(run.scenarios):
        fig = timeline_figure(scenario.history) if scenario.history is not None else None
        if fig is not None:
            figures[scenario.folder] = figure_div(fig, f"timeline-{i}")
    return figures


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def write_run_report(run_dir: Path, *, config: dict | None = None) -> Path:
    """Write ``run_dir/index.html`` (and ``config.redacted.json`` when a configuration is known), point
    ``<parent>/latest`` at the newest run, and return the page's path. A partial run renders too."""
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    data, source, problems = _read_config(run_dir, config)
    redacted = redact_config(data) if data is not None else None
    if redacted is not None:
        _write(run_dir / CONFIG_REDACTED, json.dumps(redacted.tree, indent=2, default=str) + "\n")
    figures = _figures(run)
    html = _env.get_template("run.html.j2").render(
        run=run, problems=[*run.problems, *problems], figures=figures, plotly_js=plotly_js() if figures else "",
        config=config_view(run, redacted, source), config_file=CONFIG_REDACTED if redacted else None,
        generated=_now(), counts={s: run.count(s) for s in Status}, outcomes=run.outcomes(),
    )
    index = run_dir / INDEX
    _write(index, redacted.scrub(html) if redacted else html)
    update_latest(run_dir)
    return index


def update_latest(run_dir: Path) -> Path | None:
    """Make ``<parent>/latest`` a relative symlink to the newest run folder there (by run id, which starts
    with the date and time). Only for run folders named like the plugin names them, so that reporting an
    arbitrary folder never drops a link beside it; a ``latest`` that is not a symlink is left alone."""
    run_dir = Path(run_dir).resolve()
    if not RUN_ID.match(run_dir.name):
        return None
    parent = run_dir.parent
    runs = sorted(p.name for p in parent.iterdir() if RUN_ID.match(p.name) and p.is_dir() and not p.is_symlink())
    link = parent / LATEST
    if link.exists() and not link.is_symlink():
        return None
    tmp = parent / f".{LATEST}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(runs[-1], tmp)
    os.replace(tmp, link)
    return link


def write_comparison(run_a: Path, run_b: Path, out: Path | None = None,
                     tolerances: Tolerances = Tolerances()) -> tuple[Path, RunComparison]:
    """Compare two run folders; write the HTML page (default: ``<run B>/compare-<run A>.html``)."""
    comparison = compare_runs(load_run(Path(run_a)), load_run(Path(run_b)), tolerances)
    out = Path(out) if out else Path(run_b) / f"compare-{comparison.before.run_id}.html"

    def link(run: RunSummary) -> str:
        return Path(os.path.relpath(run.path / INDEX, out.resolve().parent)).as_posix()

    html = _env.get_template("compare.html.j2").render(
        cmp=comparison, link_a=link(comparison.before), link_b=link(comparison.after), generated=_now())
    _write(out, html)
    return out, comparison


def attach_timeline(scenario_dir: Path) -> Path:
    """Render the scenario's timeline as a standalone page ``scenario_dir/timeline.html`` and attach it to
    the current Allure test when allure is importable. Returns the page's path."""
    scenario_dir = Path(scenario_dir)
    problem = ""
    try:
        history: History | None = History.load(scenario_dir / HISTORY)
    except HistoryError as exc:
        history, problem = None, str(exc)
    fig = timeline_figure(history) if history is not None else None
    html = _env.get_template("timeline.html.j2").render(
        title=scenario_dir.name, figure=figure_div(fig, "timeline") if fig is not None else None,
        plotly_js=plotly_js() if fig is not None else "", problem=problem,
        truncated=bool(history and history.truncated),
        resolution=history.request_interval() if history else None,
        observed=observed_resolution(history) if history else None, generated=_now())
    path = scenario_dir / TIMELINE
    _write(path, html)
    try:
        import allure
    except ImportError:
        return path
    allure.attach.file(str(path), name="timeline", attachment_type=allure.attachment_type.HTML)
    return path


def write_matrix_report(folder: Path, tolerances: Tolerances = Tolerances()) -> tuple[Path, MatrixGrid]:
    """Write a matrix folder's page, ``<folder>/index.html`` (one file; it opens offline and loads nothing), with
    beside it each non-baseline cell's comparison with the baseline cell (``compare-<cell>.html``: the page
    ``report --compare BASELINE CELL`` writes), the run page of a cell whose session stopped before writing its
    own, and ``grid.json``. A matrix stopped midway renders with what ran."""
    folder = Path(folder)
    record = read_record(folder)
    runs = {r.cell_id: folder / r.run_dir for r in record.runs if r.run_dir and (folder / r.run_dir).is_dir()}
    for run_dir in runs.values():
        if not (run_dir / INDEX).exists():
            write_run_report(run_dir)
    comparisons: dict[str, tuple[str, RunComparison]] = {}
    if record.baseline in runs:
        for cell_id, run_dir in runs.items():
            if cell_id != record.baseline:
                _, comparison = write_comparison(runs[record.baseline], run_dir, out=folder / comparison_page(cell_id),
                                                 tolerances=tolerances)
                comparisons[cell_id] = (comparison_page(cell_id), comparison)
    grid = build_grid(folder, record, comparisons)
    html = _env.get_template("matrix.html.j2").render(grid=grid, generated=_now())
    page = folder / INDEX
    _write(page, html)
    _write(folder / GRID, json.dumps(grid.to_json(), indent=2) + "\n")
    return page, grid
