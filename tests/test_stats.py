"""Repetition statistics from verdict files (no stack)."""

from __future__ import annotations

import json
from pathlib import Path

from harness.stats import Spread, format_table, observations, scenario_stats


def verdict(folder: Path, scenario: str, status: str, outage: float, recover: float, expected: str = "pass") -> None:
    folder.mkdir(parents=True)
    parts = [{"figures": {"longest_outage_s": outage}}, {"figures": {"time_to_recover_s": recover}}]
    (folder / "verdict.json").write_text(json.dumps({"scenario": scenario, "status": status,
                                                     "expected_status": expected, "verdict": {"parts": parts}}))


def test_pass_rates_and_spreads_over_runs(tmp_path):
    for i, (status, outage, recover) in enumerate([("pass", 0.0, 20.0), ("fail", 4.0, 30.0), ("pass", 1.0, 22.0)]):
        verdict(tmp_path / f"run{i}" / "test_head_failure", "head_failure", status, outage, recover)
        verdict(tmp_path / f"run{i}" / "test_head_failure_control", "head_failure", "fail", 9.0, 99.0, expected="fail")
    table = scenario_stats(observations(sorted(tmp_path.iterdir())))
    (head,) = table
    assert (head.runs, head.passed) == (3, 2)  # the controls' runs are not counted
    assert (head.longest_outage_s.median, head.longest_outage_s.low, head.longest_outage_s.high) == (1.0, 0.0, 4.0)
    assert head.time_to_recover_s.median == 22.0
    assert "2/3" in format_table(table)


def test_a_known_issue_scenario_is_counted_a_control_is_not(tmp_path):
    verdict(tmp_path / "run" / "test_controller_failure", "controller_failure", "fail", 0.0, 8.0, expected="fail")
    data = json.loads((tmp_path / "run" / "test_controller_failure" / "verdict.json").read_text())
    assert observations([tmp_path / "run"]) == []  # expected to fail, no known issue: a control
    data["known_issue"] = "ray-project/ray#63784"
    (tmp_path / "run" / "test_controller_failure" / "verdict.json").write_text(json.dumps(data))
    (row,) = scenario_stats(observations([tmp_path / "run"]))
    assert (row.scenario, row.runs, row.passed) == ("controller_failure", 1, 0)


def test_spread_of_nothing_and_of_one():
    assert Spread.of([]).text() == "-"
    one = Spread.of([2.5])
    assert (one.median, one.q1, one.q3, one.n) == (2.5, 2.5, 2.5, 1)
