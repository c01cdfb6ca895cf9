"""Repetition statistics from verdict files (no stack): outcomes counted like pytest's xfail, runs counted once."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from harness import nightly_cli
from harness.known_issues import STALE_PROXIES, KnownIssue, Outcome
from harness.records import Budget, ScenarioResult
from harness.stats import (
    Spread,
    format_table,
    observations,
    run_folders,
    scenario_stats,
    summary_line,
)
from harness.verdict import Status, Verdict

BUDGET = Budget(min_availability=0.9, max_outage_s=1.0, max_recovery_s=60.0)


def verdict(folder: Path, scenario: str, status: str, outage: float, recover: float, *, control: bool = False,
            known_issue: KnownIssue | None = None, ray_version: str = "2.60.0", shows_issue: bool = True) -> None:
    folder.mkdir(parents=True)
    routing = Verdict("routing_after_recovery", Status(status) if status != "unknown" else Status.PASS, "",
                      {"stale_routes": 1.0 if status == "fail" and shows_issue else 0.0})
    parts = (Verdict("longest_outage", Status.UNKNOWN if status == "unknown" else Status.PASS, "",
                     {"longest_outage_s": outage}),
             Verdict("time_to_recover", Status.PASS, "", {"time_to_recover_s": recover}), routing)
    combined = Verdict(scenario, Status(status), "", {}, None, parts)
    result = ScenarioResult(scenario, "sc000000", combined, BUDGET, ("worker1",), (), (), (),
                            Status.FAIL if control else Status.PASS, known_issue, ray_version)
    (folder / "verdict.json").write_text(json.dumps(result.to_json()))


def test_pass_rates_and_spreads_over_runs(tmp_path):
    for i, (status, outage, recover) in enumerate([("pass", 0.0, 20.0), ("fail", 4.0, 30.0), ("pass", 1.0, 22.0)]):
        verdict(tmp_path / f"run{i}" / "test_head_failure", "head_failure", status, outage, recover)
        verdict(tmp_path / f"run{i}" / "test_head_failure_control", "head_failure", "fail", 9.0, 99.0, control=True)
    table = scenario_stats(observations(sorted(tmp_path.iterdir())))
    (head,) = table
    assert (head.runs, head.passed, head.as_expected) == (3, 2, 2)  # the controls' runs are not counted
    assert (head.longest_outage_s.median, head.longest_outage_s.low, head.longest_outage_s.high) == (1.0, 0.0, 4.0)
    assert head.time_to_recover_s.median == 22.0
    assert "2/3" in format_table(table)


def test_a_known_issue_that_shows_is_an_expected_failure_apart_from_failures(tmp_path):
    verdict(tmp_path / "r1" / "test_controller_failure", "controller_failure", "fail", 0.0, 8.0, known_issue=STALE_PROXIES)
    verdict(tmp_path / "r2" / "test_controller_failure", "controller_failure", "fail", 0.0, 8.0, known_issue=STALE_PROXIES,
            shows_issue=False)  # it failed, but not by the defect: a failure
    verdict(tmp_path / "r3" / "test_controller_failure", "controller_failure", "pass", 0.0, 8.0, known_issue=STALE_PROXIES)
    verdict(tmp_path / "r4" / "test_controller_failure", "controller_failure", "unknown", 0.0, 8.0,
            known_issue=STALE_PROXIES)  # an unknown never meets the expectation
    (row,) = scenario_stats(observations(run_folders(tmp_path)))
    assert row.outcomes == {Outcome.PASSED: 0, Outcome.FAILED: 1, Outcome.UNKNOWN: 1, Outcome.EXPECTED_FAILURE: 1,
                            Outcome.UNEXPECTED_PASS: 1}
    assert (row.runs, row.as_expected) == (4, 1)
    line = summary_line([row])
    assert "1 expected failure" in line and "1 failed" in line and "unexpected pass" in line and "controller_failure" in line


def test_a_known_issue_on_a_version_it_was_not_seen_on_runs_as_a_plain_scenario(tmp_path):
    verdict(tmp_path / "r1" / "test_controller_failure", "controller_failure", "pass", 0.0, 8.0,
            known_issue=STALE_PROXIES, ray_version="2.61.0")
    verdict(tmp_path / "r2" / "test_controller_failure", "controller_failure", "fail", 0.0, 8.0,
            known_issue=STALE_PROXIES, ray_version="2.61.0")
    found = observations(run_folders(tmp_path))
    assert [o.outcome for o in found] == [Outcome.PASSED, Outcome.FAILED]
    assert all("not confirmed on Ray 2.61.0" in o.known_issue_note for o in found)
    data = json.loads((tmp_path / "r1" / "test_controller_failure" / "verdict.json").read_text())
    assert (data["expected_status"], data["outcome"], data["control"]) == ("pass", "passed", False)


def test_nightly_counts_each_run_once_and_exits_0_when_only_expected_failures(tmp_path, capsys):
    for i in (1, 2):
        verdict(tmp_path / f"2026120{i}-000000-abcd" / "test_controller_failure", "controller_failure", "fail", 0.0,
                8.0, known_issue=STALE_PROXIES)
        verdict(tmp_path / f"2026120{i}-000000-abcd" / "test_head_failure", "head_failure", "pass", 0.0, 20.0)
    os.symlink(tmp_path / "20261202-000000-abcd", tmp_path / "latest")  # what the report fixture leaves
    args = argparse.Namespace(report_dir=str(tmp_path), stats_only=True, pytest_args=[], repeat=2)
    assert nightly_cli.cmd_nightly(args) == 0
    out = capsys.readouterr().out
    assert "2 runs in" in out and "2/2" in out and "only expected failures" in out
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert {s["scenario"]: s["outcomes"]["expected failure"] for s in stats} == {"controller_failure": 2, "head_failure": 0}
    verdict(tmp_path / "20261203-000000-abcd" / "test_controller_failure", "controller_failure", "pass", 0.0, 8.0,
            known_issue=STALE_PROXIES)
    assert nightly_cli.cmd_nightly(args) == 1  # the known issue stopped showing: news
    assert "unexpected pass (a known issue stopped showing): controller_failure" in capsys.readouterr().out


def test_spread_of_nothing_and_of_one():
    assert Spread.of([]).text() == "-"
    one = Spread.of([2.5])
    assert (one.median, one.q1, one.q3, one.n) == (2.5, 2.5, 2.5, 1)
