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


def test_each_scenario_folder_a_test_wrote_gets_its_timeline_after_the_test(tmp_path):
    """The report is drawn by the plugin (the entry layer), after each test, for the folders that test wrote: the
    scenario runtime never imports the report."""
    (tmp_path / "test_inner.py").write_text(
        "from harness.history import HistoryWriter, RequestRecord, ErrorKind\n"
        "def test_inner(report_dir):\n"
        "    with HistoryWriter(report_dir / 'test_inner' / 'history.jsonl') as w:\n"
        "        w.append(*(RequestRecord(i * 0.05, i * 0.05, 'a', 'http://127.0.0.1/a', 0.01, 200, ErrorKind.OK)\n"
        "                   for i in range(40)))\n")
    res = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--report-dir",
                          str(tmp_path / "reports"), str(tmp_path / "test_inner.py")],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    (timeline,) = (tmp_path / "reports").glob("2*/test_inner/timeline.html")
    assert "plotly" in timeline.read_text().lower()


def test_a_scenario_that_does_not_apply_to_the_app_is_skipped_with_its_reason(tmp_path):
    """A guide scenario that cannot apply to the app under test (no health-check target) is SKIPPED, with the
    reason, never passed: the health-check scenario on a stack whose app says mode = "skip"."""
    (tmp_path / "test_inner.py").write_text(
        "from harness import guide\n"
        "from harness.stack.app import AppUnderTest\n"
        "from harness.stack.config import CheckConfig, RequestConfig\n"
        "class Stack:\n"
        "    def app(self):\n"
        "        return AppUnderTest('shop', 'Front', ('/',), ('shop',), (), RequestConfig(), CheckConfig(), None,\n"
        "                            \"app.health.mode is 'skip'\")\n"
        "def test_inner():\n"
        "    guide.health_check_failure(None, Stack(), 'worker1')\n")
    res = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", str(tmp_path / "test_inner.py")],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 skipped" in res.stdout and "health_check_failure does not apply: app.health.mode is 'skip'" in res.stdout


def test_a_running_stack_is_reused_only_with_the_same_configuration(tmp_path):
    """config_difference names the keys two stack configurations differ in, and nothing when they are the same."""
    from harness.pytest_plugin import config_difference
    from harness.stack.config import load_config

    other = tmp_path / "other.toml"
    other.write_text('[network]\nsubnet = "10.213.44.0/24"\n[workers]\ncount = 3\n')
    assert config_difference(load_config(), load_config()) == ""
    assert config_difference(load_config(), load_config(other)) == "network.subnet, workers.count"
