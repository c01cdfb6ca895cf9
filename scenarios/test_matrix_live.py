"""The matrix, end to end on the real local stack: two cells (GCS fault tolerance on Redis, and on embedded
RocksDB), each a pytest session of its own on a stack of its own, one scenario each, then the grid. ``make test``
runs this in a session of its own, after the shared stack is down (two stacks at once saturate 2 cores).

What it proves: both cells ran and were torn down (the teardown check found nothing of theirs left, or removed
it), no process or namespace of either cell outlived it, and one grid shows both, with the baseline's comparison.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from harness.local import system
from harness.matrix import CellStatus, read_record
from harness.stack.config import REPO_ROOT

pytestmark = pytest.mark.stack

CELLS = ("gcs-redis", "gcs-rocksdb")
SCENARIO = "replica_failure"  # the shortest seed scenario that still kills, recovers and reads the routing
MATRIX_TIMEOUT_S = 900  # two bring-ups (about 35 s each), two scenarios (about 20 s each), two teardowns


def test_a_two_cell_matrix_runs_each_cell_on_its_own_stack_and_writes_one_grid(tmp_path):
    folder = tmp_path / "matrix"
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "matrix", "--axis", "gcs=redis,rocksdb", "--report-dir", str(folder),
         "--cell-timeout", "600", "--", "-k", SCENARIO, "--serve-chaos-replays=0"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=MATRIX_TIMEOUT_S, check=False)
    print(proc.stdout[-3000:])
    record = read_record(folder)
    runs = {r.cell_id: r for r in record.runs}
    assert sorted(runs) == sorted(CELLS), f"cells run: {sorted(runs)}; stderr: {proc.stderr[-1000:]}"
    run_ids, state_dirs = [], []
    for cell in CELLS:
        run = runs[cell]
        assert run.status is CellStatus.AS_EXPECTED and run.exit_code == 0, \
            f"{cell}: {run.status} ({run.exit_code}): {run.reason}; its log: {folder / cell / 'pytest.log'}"
        assert run.teardown_ok, f"{cell}: teardown check: {run.teardown}"
        verdict = json.loads(next((folder / run.run_dir).glob(f"test_{SCENARIO}/verdict.json")).read_text())
        assert verdict["status"] == "pass", f"{cell}: {verdict['reason']}"
        run_ids.append(verdict["stack_run_id"])
        state_dirs.append(tomllib.loads((folder / cell / "stack.toml").read_text())["network"]["state_dir"])
        print(f"{cell}: {run.status}, {run.seconds:.1f} s, stack {run_ids[-1]} in {state_dirs[-1]}, "
              f"teardown: {run.teardown}")
    assert proc.returncode == 0, proc.stderr[-1000:]
    assert len(set(run_ids)) == 2 and len(set(state_dirs)) == 2, f"the cells shared a stack: {run_ids} {state_dirs}"
    # nothing of either cell outlived it: no network namespace of its run, no process under its state folder
    left = [ns for ns in system.list_netns() if any(r in ns for r in run_ids)]
    assert not left, f"network namespaces of the cells are left: {left}"
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    alive = [pid for pid in pids if any(d in system.process_cmdline(pid) for d in state_dirs)]
    assert not alive, f"processes of the cells are left: pids {alive}"
    grid = (folder / "index.html").read_text()
    assert all(cell in grid for cell in CELLS) and SCENARIO in grid
    assert (folder / "compare-gcs-rocksdb.html").is_file(), sorted(p.name for p in folder.iterdir())

