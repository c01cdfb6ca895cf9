"""A matrix's grid: every scenario × every cell, read from the matrix's record (``matrix.json``) and each cell's run
folder (through the records' readers, as the run page reads one), each cell compared with the baseline cell the way
``report --compare`` compares two runs (``compare.compare_runs``: its page is ``render.write_comparison``'s).

An entry differs from the baseline's when its outcome does, or when a figure moved beyond what the figures can tell
apart, either way: worse is the comparison's regression; better is the same test with the two runs swapped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.known_issues import Outcome
from harness.matrix import CELL_LOG, CellRun, MatrixCell, MatrixRecord, read_record
from harness.report.compare import (
    Movement,
    RunComparison,
    ScenarioDelta,
    Tolerances,
    compare_scenarios,
)
from harness.report.model import RunSummary, ScenarioSummary, load_run

INDEX = "index.html"  # the run page's name in its folder, and the matrix page's in the matrix folder
REPLAY = re.compile(r"-replay\d+$")  # the pytest plugin's folder of a failed scenario's replay: shown in its entry


def comparison_page(cell_id: str) -> str:
    """The comparison of a cell with the baseline, in the matrix folder."""
    return f"compare-{cell_id}.html"


@dataclass(frozen=True)
class GridEntry:
    """One scenario in one cell."""

    cell_id: str
    summary: ScenarioSummary | None  # None: the scenario is not in this cell's run
    delta: ScenarioDelta | None  # against the baseline's entry (None: the baseline itself, or nothing to compare)
    differs: tuple[str, ...]  # what differs from the baseline's entry, in words ("outcome", "longest outage worse")

    @property
    def outcome(self) -> Outcome | None:
        return self.summary.outcome if self.summary else None

    @property
    def note(self) -> str:
        return self.summary.known_issue_note if self.summary else ""


@dataclass(frozen=True)
class GridRow:
    folder: str  # the scenario's folder (the test's name): cells' scenarios match by it, as two runs' do
    scenario: str
    entries: tuple[GridEntry, ...]  # in the cells' order

    @property
    def differs(self) -> bool:
        return any(e.differs for e in self.entries)


@dataclass(frozen=True)
class CellColumn:
    cell: MatrixCell
    run: CellRun | None  # None: the matrix has not run it (stopped before)
    summary: RunSummary | None  # its run folder, read; None when it wrote none
    baseline: bool
    differing_axes: tuple[str, ...]  # the axes whose value is not the baseline's
    comparison: RunComparison | None  # against the baseline (None: the baseline, or a side without a run)
    comparison_page: str  # relative to the matrix folder ("" when there is none)
    index_page: str  # the cell's run page, relative to the matrix folder ("" when it wrote no run folder)
    log_page: str  # what its pytest printed, relative to the matrix folder ("" when there is none)
    problems: tuple[str, ...]

    @property
    def id(self) -> str:
        return self.cell.id

    @property
    def as_expected(self) -> bool:
        return self.run is not None and self.run.as_expected

    @property
    def status(self) -> str:
        return str(self.run.status) if self.run else "not reached"

    @property
    def known_issue_notes(self) -> tuple[str, ...]:
        """What this cell says of each known issue: shown, not shown (an unexpected pass), not confirmed here."""
        if self.summary is None:
            return ()
        return tuple(dict.fromkeys(f"{s.scenario}: {s.known_issue_note}" for s in self.summary.scenarios
                                   if s.known_issue_note and not REPLAY.search(s.folder)))


@dataclass(frozen=True)
class MatrixGrid:
    path: Path
    record: MatrixRecord
    columns: tuple[CellColumn, ...]
    rows: tuple[GridRow, ...]
    problems: tuple[str, ...]

    @property
    def baseline(self) -> CellColumn:
        return next(c for c in self.columns if c.baseline)

    @property
    def as_expected(self) -> int:
        return sum(c.as_expected for c in self.columns)

    def to_json(self) -> dict:
        def figures(s: ScenarioSummary | None) -> dict | None:
            if s is None:
                return None
            f = s.figures
            return {"status": str(s.status), "outcome": str(s.outcome), "availability": f.availability,
                    "longest_outage_s": f.longest_outage_s, "time_to_recover_s": f.time_to_recover_s,
                    "known_issue_note": s.known_issue_note}

        return {
            "baseline": self.baseline.id,
            "cells": [{"id": c.id, "status": c.status, "as_expected": c.as_expected, "baseline": c.baseline,
                       "differing_axes": list(c.differing_axes), "index_page": c.index_page,
                       "comparison_page": c.comparison_page,
                       "regressed": [d.folder for d in c.comparison.regressed] if c.comparison else [],
                       "known_issue_notes": list(c.known_issue_notes), "problems": list(c.problems)}
                      for c in self.columns],
            "rows": [{"folder": r.folder, "scenario": r.scenario, "differs": r.differs,
                      "cells": {e.cell_id: {"figures": figures(e.summary), "differs": list(e.differs)}
                                for e in r.entries}} for r in self.rows],
            "problems": list(self.problems),
        }


def differences(base: ScenarioSummary | None, mine: ScenarioSummary | None, delta: ScenarioDelta | None,
                tolerances: Tolerances = Tolerances()) -> tuple[str, ...]:
    """What differs between a cell's entry and the baseline's, in words."""
    if base is None and mine is None:
        return ()
    if mine is None:
        return ("absent in this cell",)
    if base is None:
        return ("absent in the baseline",)
    found = ["outcome"] if base.outcome is not mine.outcome else []
    delta = delta or compare_scenarios(base, mine, tolerances)
    back = compare_scenarios(mine, base, tolerances)  # the baseline "regressed" from this cell: this one is better
    for forward, backward in zip(delta.changes, back.changes, strict=True):
        if forward.movement is Movement.REGRESSED:
            found.append(f"{forward.metric} worse")
        elif backward.movement is Movement.REGRESSED:
            found.append(f"{forward.metric} better")
    return tuple(found)


def _cell_run(folder: Path, cell: MatrixCell, run: CellRun | None) -> tuple[RunSummary | None, str, list[str]]:
    problems: list[str] = []
    if run is None:
        return None, "", ["the matrix stopped before this cell"]
    if not run.run_dir:
        if run.reason:
            problems.append(f"no run folder: {run.reason}")
        else:
            problems.append("no run folder was written")
        return None, "", problems
    path = folder / run.run_dir
    try:
        summary = load_run(path)
    except FileNotFoundError:
        return None, "", [f"its run folder {run.run_dir} is gone"]
    return summary, f"{run.run_dir}/{INDEX}", problems


def build_grid(folder: Path, record: MatrixRecord | None = None,
               comparisons: Mapping[str, tuple[str, RunComparison]] | None = None) -> MatrixGrid:
    """The grid of the matrix in ``folder``. ``comparisons``: cell id → (its comparison page, relative to the
    folder; the comparison), as ``render.write_matrix_report`` writes them; without them, none are linked and the
    differences are worked out from the runs."""
    folder = Path(folder)
    record = record or read_record(folder)
    comparisons = comparisons or {}
    base_cell = record.cell(record.baseline)
    loaded = {c.id: _cell_run(folder, c, record.run(c.id)) for c in record.cells}
    base_summary = loaded[base_cell.id][0]
    columns = []
    for cell in record.cells:
        summary, index_page, problems = loaded[cell.id]
        page, comparison = comparisons.get(cell.id, ("", None))
        log = f"{cell.id}/{CELL_LOG}"
        columns.append(CellColumn(cell, record.run(cell.id), summary, cell.id == base_cell.id,
                                  cell.cell.differs_from(base_cell.cell), comparison, page, index_page,
                                  log if (folder / log).is_file() else "", tuple(problems)))
    folders: dict[str, str] = {}
    for column in sorted(columns, key=lambda c: not c.baseline):  # the baseline's order first
        for s in column.summary.scenarios if column.summary else ():
            if not REPLAY.search(s.folder):
                folders.setdefault(s.folder, s.scenario)
    rows = []
    for name, scenario in folders.items():
        base = base_summary.scenario(name) if base_summary else None
        entries = []
        for column in columns:
            mine = column.summary.scenario(name) if column.summary else None
            if column.baseline or column.summary is None or base_summary is None:
                entries.append(GridEntry(column.id, mine, None, ()))
                continue
            delta = next((d for d in column.comparison.scenarios if d.folder == name), None) \
                if column.comparison else None
            entries.append(GridEntry(column.id, mine, delta, differences(base, mine, delta)))
        rows.append(GridRow(name, scenario, tuple(entries)))
    problems = [] if base_summary is not None else [
        f"the baseline cell {base_cell.id} has no run to compare with: no cell is compared"]
    return MatrixGrid(folder, record, tuple(columns), tuple(rows), tuple(problems))
