"""A failed scenario is run again on the same stack: a failure that comes back fails, one that no replay repeats
is flaky (a warning with its figures, and replays.json for the report), an UNKNOWN or a control is never
replayed (no stack: the scenario runs are scripted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.pytest_plugin import FlakyVerdict, assert_passed
from harness.records import Budget, Judged, Replays, ScenarioFolder, ScenarioResult
from harness.verdict import Status, Verdict

BUDGET = Budget(min_availability=0.995, max_outage_s=1.0, max_recovery_s=80.0)


def result(status: str, *, expected: Status = Status.PASS) -> ScenarioResult:
    part = Verdict("longest_outage", Status(status), f"longest outage {'2.900' if status == 'fail' else '0.000'}s",
                   {"longest_outage_s": 2.9 if status == "fail" else 0.0})
    return ScenarioResult("head_failure", "sc000000", Verdict("head_failure", Status(status), "", {}, None, (part,)),
                          BUDGET, ("worker1",), (), (), (), expected)


def test_a_pass_is_a_pass_and_needs_no_replay():
    judged = Judged(result("pass"))
    assert judged.passed and not judged.flaky and judged.replays is None
    assert_passed(judged)


def test_a_failure_no_replay_repeats_is_flaky_and_warns_with_its_figure():
    judged = Judged(result("fail"), (result("pass"), result("pass")), ("test_x-replay1", "test_x-replay2"))
    assert judged.flaky and not judged.passed
    assert judged.replays == Replays(0, 2) and not judged.replays.reproduced
    with pytest.warns(FlakyVerdict, match=r"longest outage 2\.900s.*failed 0 of 2 replays.*test_x-replay2"):
        assert_passed(judged)


@pytest.mark.parametrize("replays", [("fail", "pass"), ("pass", "fail"), ("fail", "fail"), ("unknown", "pass")])
def test_a_failure_that_comes_back_in_any_replay_fails(replays):
    judged = Judged(result("fail"), tuple(result(s) for s in replays))
    assert not judged.flaky and judged.replays.reproduced
    with pytest.raises(AssertionError, match=r"longest outage 2\.900s"):
        assert_passed(judged)


def test_a_failure_not_replayed_and_an_unknown_are_never_flaky():
    for judged in (Judged(result("fail")), Judged(result("unknown"), (result("pass"),))):
        assert not judged.flaky
        with pytest.raises(AssertionError):
            assert_passed(judged)


def test_replays_json_is_written_and_read_back(tmp_path):
    folder = ScenarioFolder(tmp_path / "test_head_failure")
    folder.write_replays(Judged(result("fail"), (result("pass"), result("fail")), ("a", "b")))
    assert folder.read_replays() == Replays(1, 2)
    assert json.loads((folder.path / "replays.json").read_text())["flaky"] is False
    (folder.path / "replays.json").write_text("{damaged")
    assert folder.read_replays() is None


INNER = '''
from types import SimpleNamespace

import pytest
from harness.pytest_plugin import assert_passed
from harness.records import Budget, ScenarioResult
from harness.verdict import Status, Verdict

RUNS = []

@pytest.fixture
def serve_chaos_scenario(request, report_dir):
    def make(cluster, name, *, replay=0, **kwargs):  # a run's folder, named as the plugin's own factory names it
        RUNS.append((request.node.name, replay))
        return SimpleNamespace(out_dir=report_dir / (request.node.name + (f"-replay{replay}" if replay else "")))
    return make

def scripted(*statuses, expected=Status.PASS):
    it = iter(statuses)
    def run_it(run):
        s = Status(next(it))
        part = Verdict("availability", s, "availability 0.9641 on worker2", {"availability": 0.9641})
        return ScenarioResult("head_failure", "sc0", Verdict("head_failure", s, "", {}, None, (part,)),
                              Budget(0.995, 1.0, 80.0), (), (), (), (), expected)
    return run_it

def test_flaky(serve_chaos_replay):
    assert_passed(serve_chaos_replay(None, "head_failure", scripted("fail", "pass", "pass")))

def test_came_back(serve_chaos_replay):
    assert_passed(serve_chaos_replay(None, "head_failure", scripted("fail", "pass", "fail")))

def test_unknown_not_replayed(serve_chaos_replay):
    assert_passed(serve_chaos_replay(None, "head_failure", scripted("unknown")))

def test_control_not_replayed(serve_chaos_replay):
    judged = serve_chaos_replay(None, "head_failure", scripted("pass", expected=Status.FAIL))
    assert judged.replays is None and not judged.passed

def test_runs():
    print("RUNS", RUNS)
'''


def run_inner(tmp_path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_inner.py").write_text(INNER)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", "-W",
                           "default::harness.pytest_plugin.FlakyVerdict", "--report-dir", str(tmp_path / "reports"),
                           str(tmp_path / "test_inner.py"), *args],
                          check=False, capture_output=True, text=True, timeout=120, cwd=tmp_path)


def test_the_replay_fixture_runs_a_failure_again_in_folders_of_its_own(tmp_path):
    res = run_inner(tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "2 failed, 3 passed" in out, out
    assert ("RUNS [('test_flaky', 0), ('test_flaky', 1), ('test_flaky', 2), ('test_came_back', 0), "
            "('test_came_back', 1), ('test_came_back', 2), ('test_unknown_not_replayed', 0), "
            "('test_control_not_replayed', 0)]") in out
    assert "FlakyVerdict: flaky: head_failure: availability: fail: availability 0.9641 on worker2" in out
    assert "failed 0 of 2 replays; every replay passed: test_flaky-replay1, test_flaky-replay2" in out
    assert ("replays: flaky: failed 1 of 2 replays; the failure came back: test_came_back-replay1, "
            "test_came_back-replay2") in out  # test_came_back's failure message
    (flaky,) = (tmp_path / "reports").glob("2*/test_flaky/replays.json")
    assert json.loads(flaky.read_text())["replays"] == {"failed": 0, "of": 2, "text": "flaky: failed 0 of 2 replays"}
    assert not list((tmp_path / "reports").glob("2*/test_unknown_not_replayed/replays.json"))


def test_no_replays_makes_every_failure_a_failure(tmp_path):
    res = run_inner(tmp_path, "--serve-chaos-replays=0", "-k", "flaky or runs")
    assert res.returncode == 1 and "1 failed, 1 passed" in res.stdout, res.stdout + res.stderr
    assert "RUNS [('test_flaky', 0)]" in res.stdout
