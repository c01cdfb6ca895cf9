"""The pytest plugin's own behaviour (no stack)."""

from __future__ import annotations

import subprocess
import sys


def test_progress_lines_reach_the_terminal_while_pytest_captures_output(tmp_path):
    (tmp_path / "test_inner.py").write_text(
        "from harness.pytest_plugin import progress_writer\n"
        "def test_inner(pytestconfig):\n"
        "    progress_writer(pytestconfig)('[scenario] 1.0s inject ... (requests ok 20, failed 0)')\n")
    res = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(tmp_path / "test_inner.py")],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "[scenario] 1.0s inject ... (requests ok 20, failed 0)" in res.stdout


def test_plugin_options_are_registered(tmp_path):
    res = subprocess.run([sys.executable, "-m", "pytest", "--help"], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    for option in ("--backend", "--stack-config", "--keep-stack", "--report-dir", "--budgets"):
        assert option in res.stdout, option
