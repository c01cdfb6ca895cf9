"""The harness's shape is enforced: the layers of docs/architecture.md (imports only run down), the backends'
independence, a report that reads records only, test doubles out of production code (``.importlinter``, checked
by import-linter), and no import cycle between any two of the harness's modules (grimp's import graph)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
        "sys.exit(lint_imports_command())"]


def cycles(graph: grimp.ImportGraph, package: str = "harness") -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each a cycle of imports."""
    modules = sorted(m for m in graph.modules if m == package or m.startswith(package + "."))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        on_stack.add(m)
        for n in sorted(graph.find_modules_directly_imported_by(m)):
            if not n.startswith(package):
                continue
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in on_stack:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            component = []
            while True:
                n = stack.pop()
                on_stack.discard(n)
                component.append(n)
                if n == m:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for m in modules:
        if m not in index:
            visit(m)
    return found


def test_no_import_cycle_between_the_harness_modules():
    graph = grimp.build_graph("harness", cache_dir=None)
    assert cycles(graph) == [], "import cycles"


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for module in ("harness", "harness.a", "harness.b", "harness.c"):
        graph.add_module(module)
    graph.add_import(importer="harness.a", imported="harness.b")
    graph.add_import(importer="harness.b", imported="harness.a")
    graph.add_import(importer="harness.c", imported="harness.a")
    assert cycles(graph) == [["harness.a", "harness.b"]]


def test_the_layer_contracts_hold():
    res = subprocess.run([*LINT, "--config", str(ROOT / ".importlinter"), "--no-cache"], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "4 kept, 0 broken" in res.stdout


def test_an_import_back_up_a_layer_or_between_backends_breaks_the_contracts(tmp_path):
    """The contracts can fail: the same package with a checker importing the scenario runtime, and the kube
    backend importing the local one."""
    copy = tmp_path / "harness"
    shutil.copytree(ROOT / "harness", copy, ignore=shutil.ignore_patterns("__pycache__"))
    with (copy / "checkers" / "traffic.py").open("a") as fh:
        fh.write("\nfrom harness.scenario import ScenarioRun  # noqa: E402,F401 - the violation under test\n")
    with (copy / "kube" / "tools.py").open("a") as fh:
        fh.write("\nfrom harness.local import system  # noqa: E402,F401 - the violation under test\n")
    res = subprocess.run([*LINT, "--config", str(ROOT / ".importlinter"), "--no-cache"], capture_output=True,
                         text=True, cwd=tmp_path, timeout=300, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin"})
    assert res.returncode != 0, res.stdout[-3000:]
    assert "harness.checkers.traffic -> harness.scenario" in res.stdout
    assert "harness.kube.tools -> harness.local" in res.stdout
