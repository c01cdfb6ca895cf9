"""``serve-chaos report``: a run's HTML report, or two runs compared.

    serve-chaos report reports/latest                      # writes reports/<run>/index.html, prints it
    serve-chaos report --compare reports/RUN_A reports/RUN_B   # HTML page + a table on the terminal

``report`` exits 0 once the page is written, 2 when the folder is not there. ``--compare`` exits 1 when a
scenario regressed from run A to run B (see docs/report.md for what counts), 0 otherwise, 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.report import fmt
from harness.report.compare import Movement, RunComparison, ScenarioDelta
from harness.report.render import write_comparison, write_run_report

STYLES = {"pass": "green", "fail": "bold red", "unknown": "yellow"}


def register(subparsers: argparse._SubParsersAction) -> None:
    report = subparsers.add_parser("report", help="write a run's HTML report, or compare two runs")
    report.add_argument("run", type=Path, nargs="?", metavar="RUN_DIR", help="a run folder, e.g. reports/latest")
    report.add_argument("--compare", type=Path, nargs=2, metavar=("RUN_A", "RUN_B"),
                        help="compare run B against run A: an HTML page and a table; exit 1 on a regression")
    report.add_argument("--out", type=Path, metavar="FILE",
                        help="with --compare: where the page goes (default RUN_B/compare-<run A>.html)")
    report.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    if (args.run is None) == (args.compare is None):
        print("give either RUN_DIR or --compare RUN_A RUN_B", file=sys.stderr)
        return 2
    folders = args.compare or [args.run]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        print(f"not a run folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.compare is None:
        print(write_run_report(args.run))
        return 0
    page, comparison = write_comparison(*args.compare, out=args.out)
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(comparison_table(comparison))
    console.print(f"page: {page}", markup=False, highlight=False)
    return 1 if comparison.regressed else 0


def _status(delta: ScenarioDelta) -> Text:
    text = Text()
    for i, side in enumerate((delta.before, delta.after)):
        if i:
            text.append(" → ")
        text.append(str(side.status) if side else "absent", style=STYLES[str(side.status)] if side else "dim")
    return text


def comparison_table(comparison: RunComparison) -> Table:
    title = (f"{comparison.before.run_id} → {comparison.after.run_id}: "
             + (f"{len(comparison.regressed)} scenario(s) regressed" if comparison.regressed else "no regression"))
    table = Table(title=title, title_justify="left", caption="each figure: run A → run B (change)",
                  caption_justify="left")
    table.add_column("scenario", no_wrap=True)
    table.add_column("verdict A → B")
    metrics = [c.metric for c in comparison.scenarios[0].changes] if comparison.scenarios else []
    for metric in metrics:
        table.add_column(metric, justify="right")
    table.add_column("regressions")
    for delta in comparison.scenarios:
        cells = []
        for change in delta.changes:
            style = {Movement.REGRESSED: "bold red", Movement.BETTER: "green", Movement.WORSE: "yellow"}.get(
                change.movement, "")
            text = f"{fmt.change_value(change, change.before)} → {fmt.change_value(change, change.after)}"
            if change.delta is not None:
                text += f" ({fmt.change_delta(change)})"
            cells.append(Text(text, style=style))
        regressions = Text(", ".join(delta.regressions) or "none", style="bold red" if delta.regressed else "dim")
        table.add_row(delta.folder, _status(delta), *cells, regressions,
                      style="on grey15" if delta.regressed and sys.stdout.isatty() else "")
    return table
