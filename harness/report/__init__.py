"""Availability reports for reviewers: a run's ``index.html``, run comparisons, Allure timelines.

    from harness.report import write_run_report, attach_timeline, scrub_tree
    write_run_report(Path("reports/20261125-095808-c78e"))   # -> reports/<run>/index.html, reports/latest
    attach_timeline(scenario_dir)                              # timeline.html, attached to the Allure test
    scrub_tree(run_dir, [password])                            # a secret out of every text file
    write_matrix_report(matrix_dir)                            # -> <matrix>/index.html: the grid (docs/matrix.md)

The report reads histories and verdicts only (``model``), draws with plotly (``timeline``), renders jinja2
templates (``render``), compares runs (``compare``), lays a matrix's cells out as a grid (``matrix``) and redacts
secrets (``redact``). See docs/report.md.
"""

from harness.report.compare import (
    RunComparison,
    ScenarioDelta,
    Tolerances,
    compare_runs,
)
from harness.report.matrix import MatrixGrid, build_grid
from harness.report.model import (
    Figures,
    RunSummary,
    ScenarioSummary,
    load_run,
    load_scenario,
)
from harness.report.redact import ScrubResult, redact_config, scrub_tree
from harness.report.render import (
    attach_timeline,
    update_latest,
    write_comparison,
    write_matrix_report,
    write_run_report,
)

__all__ = [
    "Figures", "MatrixGrid", "RunComparison", "RunSummary", "ScenarioDelta", "ScenarioSummary", "ScrubResult",
    "Tolerances",
    "attach_timeline", "build_grid", "compare_runs", "load_run", "load_scenario", "redact_config", "scrub_tree",
    "update_latest", "write_comparison", "write_matrix_report", "write_run_report",
]
