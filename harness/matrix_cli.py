"""``serve-chaos matrix``: the same scenarios across axes (Ray version, GCS storage, ingress, any environment
variable or stack-config key), each cell on a stack of its own, one grid report (docs/matrix.md).

    serve-chaos matrix --axis ray=2.60.0,2.59.0 --axis ingress=proxy,haproxy [--baseline CELL] [-- -k head]
    serve-chaos matrix --axis gcs=redis,rocksdb,none --dry-run      # the cells and what each sets; nothing runs
    serve-chaos matrix --report-only --report-dir reports/matrix-...  # (re)write the grid of a matrix that ran

Exit 0 when every cell ran as expected (pytest exited 0, its teardown check found the stack gone or removed it);
1 when a cell did not (it failed, could not start, ran out of time); 2 on a usage or configuration error.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.backends import BACKENDS
from harness.exit_codes import ExitCode
from harness.matrix import (
    CELL_CONFIG,
    DEFAULT_SUBNET_POOL,
    MATRIX_FILE,
    AxisError,
    CellBudgets,
    MatrixCell,
    MatrixFileError,
    MatrixRecord,
    backend_problem,
    budget_changes,
    budgets_of,
    cell_config,
    find_cell,
    parse_axes,
    parse_budgets_for,
    plan_cells,
    product,
    read_record,
    write_cell_config,
    write_record,
)
from harness.matrix import (
    kube_image as image_of,
)
from harness.matrix_run import SubprocessCells, run_matrix
from harness.records import DEFAULT_BUDGETS
from harness.report.matrix import MatrixGrid
from harness.report.render import write_matrix_report
from harness.stack.config import ConfigError
from harness.venvs import VenvError, planned_env

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CELL_TIMEOUT_S = 3600.0  # the seed suite took 441 s with its bring-up here (README); 8x that, for slow cells
OUTCOME_STYLES = {"passed": "green", "expected failure": "green", "failed": "bold red", "unknown": "yellow",
                  "unexpected pass": "bold yellow"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("matrix", help="the same scenarios across Ray versions, GCS storage, ingress and "
                                             "stack keys: one stack per cell, one grid report")
    p.add_argument("--axis", action="append", default=[], metavar="NAME=V1,V2",
                   help="an axis and its values, repeatable: ray=2.60.0,2.59.0 | gcs=redis,rocksdb,none | "
                        "ingress=proxy,haproxy | ENV_VAR=a,b (on every Ray node) | section.key=a,b (a stack-config "
                        "key, e.g. workers.count=1,2)")
    p.add_argument("--baseline", metavar="CELL", help="the cell every other is compared with: its id, or its choices "
                                                     "(ray=2.60.0,ingress=proxy); default: the first cell")
    p.add_argument("--scenarios", default="scenarios/test_guide.py",
                   help="the scenario file(s) every cell runs, comma-separated (default: the seed suite)")
    p.add_argument("--report-dir", default=None, help="the matrix folder (default: reports/matrix-<date>-<time>)")
    p.add_argument("--stack-config", metavar="FILE", help="the stack config every cell's derives from "
                                                          "(default: cluster/local.toml)")
    p.add_argument("--backend", choices=BACKENDS, default="local", help="where the cells' stacks run (default: local)")
    p.add_argument("--kube-config", metavar="FILE", help="kind/kube: settings over cluster/kube/kube.toml; a cell's "
                                                         "Ray version replaces its ray_image's tag")
    p.add_argument("--budgets-for", action="append", default=[], metavar="AXIS=VALUE:FILE",
                   help="the cells with this choice run with this budgets file; every budget in it that differs from "
                        "the base budgets needs a measured figure in the comment beside it")
    p.add_argument("--cell-timeout", type=float, default=DEFAULT_CELL_TIMEOUT_S, metavar="SECONDS",
                   help=f"stop a cell that runs longer (default {DEFAULT_CELL_TIMEOUT_S:.0f})")
    p.add_argument("--subnet-pool", default=DEFAULT_SUBNET_POOL, metavar="CIDR",
                   help=f"cell i's stack gets the i-th /24 of it (default {DEFAULT_SUBNET_POOL})")
    p.add_argument("--dry-run", action="store_true", help="print the cells and what each sets; run nothing")
    p.add_argument("--report-only", action="store_true", help="only (re)write the grid of the matrix in --report-dir")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: extra pytest arguments for every cell")
    p.set_defaults(func=cmd_matrix)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return ExitCode.UNKNOWN


def _budgets(args: argparse.Namespace, axes) -> tuple[CellBudgets, ...]:
    found = []
    for spec in args.budgets_for:
        choice, path = parse_budgets_for(spec, axes)
        found.append(budget_changes(choice, path, DEFAULT_BUDGETS))
    return tuple(found)


def cmd_matrix(args: argparse.Namespace) -> int:
    extra = tuple(a for a in args.pytest_args if a != "--")
    if args.report_only:
        if not args.report_dir:
            return _error("--report-only needs --report-dir, the matrix folder to report")
        return _report(Path(args.report_dir), Console(width=None if sys.stdout.isatty() else 200))
    folder = Path(args.report_dir or REPO / "reports" / f"matrix-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    try:
        axes = parse_axes(args.axis)
        cells = product(axes)
        baseline = find_cell(cells, args.baseline) if args.baseline else cells[0]
        plans = plan_cells(cells, folder, args.subnet_pool)
        budgets = _budgets(args, axes)
        cell_budgets = {p.id: budgets_of(p, budgets) for p in plans}
        configs = {}
        for plan in plans:
            try:
                configs[plan.id] = cell_config(plan, args.stack_config)
            except ConfigError as exc:
                raise AxisError(f"cell {plan.id}: {exc}") from None
        kube_image = ""
        if args.backend != "local":
            from harness.kube.settings import load_settings

            kube_image = load_settings(args.kube_config).kube.ray_image
            for plan in plans:  # a Ray version whose image cannot be named is the command line's error
                if plan.ray_version:
                    image_of(kube_image, plan.ray_version)
    except (AxisError, ConfigError) as exc:
        return _error(str(exc))
    scenarios = tuple(s for s in args.scenarios.split(",") if s)
    if args.dry_run:
        return _dry_run(plans, baseline.id, folder, scenarios, extra, args, cell_budgets)
    if (folder / MATRIX_FILE).exists():
        return _error(f"{folder} already holds a matrix ({MATRIX_FILE}): give another --report-dir, or "
                      "--report-only to write its grid again")
    cells_recorded = []
    for plan in plans:
        config_path = write_cell_config(folder / plan.id / CELL_CONFIG, configs[plan.id], plan, args.stack_config)
        cells_recorded.append(MatrixCell(plan.id, plan.index, plan.cell.choices, plan.settings(),
                                         config_path.relative_to(folder).as_posix(), cell_budgets[plan.id]))
    record = MatrixRecord(axes, tuple(cells_recorded), baseline.id, scenarios, extra, args.backend,
                          str(args.stack_config or "cluster/local.toml"), time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    write_record(folder, record)
    executor = SubprocessCells(folder, scenarios, extra, backend=args.backend, kube_ray_image=kube_image,
                               base_kube_config=args.kube_config,
                               budgets=tuple((cid, b.path) for cid, b in cell_budgets.items() if b))
    console = Console(width=None if sys.stdout.isatty() else 200)
    signal.signal(signal.SIGTERM, _interrupt)  # stopped from outside: the running cell is stopped and torn down too
    print(f"matrix: {len(plans)} cells into {folder}; baseline {baseline.id}", flush=True)
    started = time.monotonic()
    try:
        record = run_matrix(record, plans, executor, timeout_s=args.cell_timeout, folder=folder,
                            progress=lambda msg: print(msg, flush=True))
    except KeyboardInterrupt:
        print("interrupted: writing the grid of the cells that ran", file=sys.stderr)
        _report(folder, console)
        return ExitCode.INTERRUPTED
    print(f"matrix: {len(record.runs)} cells in {time.monotonic() - started:.0f} s", flush=True)
    return _report(folder, console)


def _dry_run(plans, baseline: str, folder: Path, scenarios, extra, args, cell_budgets) -> int:
    print(f"{len(plans)} cells; baseline {baseline}; scenarios {', '.join(scenarios)}; backend {args.backend}; "
          f"matrix folder {folder} (dry run: nothing is written, nothing runs)")
    for plan in plans:
        print(f"\ncell {plan.index}/{len(plans)} {plan.id}{' (baseline)' if plan.id == baseline else ''}")
        try:
            python = planned_env(plan.ray_version) if plan.ray_version else f"{sys.executable} (this interpreter)"
        except VenvError as exc:
            python = f"cannot run: {exc}"
        print(f"  python: {python}")
        for line in plan.settings():
            print(f"  {line}")
        if plan.needs_haproxy:
            print("  needs: an haproxy binary for its Ray (checked when the cell starts)")
        if problem := backend_problem(plan, args.backend):
            print(f"  cannot run on {args.backend}: {problem}")
        if budgets := cell_budgets.get(plan.id):
            for change in budgets.changes:
                print(f"  budget [{change.scenario}] {change.key} = {change.value} (base {change.base}): {change.why}")
        print(f"  stack config: {folder / plan.id / CELL_CONFIG}")
        print(f"  runs: python -m pytest {' '.join(scenarios)} --serve-chaos-stack-config {plan.id}/{CELL_CONFIG} "
              f"--serve-chaos-report-dir {plan.id}{(' ' + ' '.join(extra)) if extra else ''}")
    return ExitCode.OK


def grid_table(grid: MatrixGrid) -> Table:
    table = Table(title=f"matrix: {grid.as_expected} of {len(grid.columns)} cells as expected; baseline "
                        f"{grid.baseline.id}", title_justify="left",
                  caption="each entry: outcome, longest outage; * differs from the baseline", caption_justify="left")
    table.add_column("scenario", no_wrap=True)
    for column in grid.columns:
        table.add_column(f"{column.id}\n{column.status}", justify="left")
    for row in grid.rows:
        cells = []
        for entry in row.entries:
            s = entry.summary
            if s is None:
                cells.append(Text("absent", style="dim"))
                continue
            outage = s.figures.longest_outage_s
            text = f"{s.outcome}{' *' if entry.differs else ''}\n{'-' if outage is None else f'{outage:.2f} s'}"
            cells.append(Text(text, style=OUTCOME_STYLES.get(str(s.outcome), "")))
        table.add_row(row.scenario, *cells)
    return table


def _report(folder: Path, console: Console) -> int:
    try:
        page, grid = write_matrix_report(folder)
        record = read_record(folder)
    except (MatrixFileError, FileNotFoundError) as exc:
        return _error(f"no matrix to report in {folder}: {exc}")
    console.print(grid_table(grid))
    for column in grid.columns:
        if column.run is not None and not column.run.as_expected:
            why = column.run.reason or f"teardown: {column.run.teardown}"
            console.print(f"  {column.id}: {column.run.status}: {why}", markup=False, highlight=False)
    console.print(f"report: {page}", markup=False, highlight=False)
    return ExitCode.OK if record.as_expected else ExitCode.FAIL
