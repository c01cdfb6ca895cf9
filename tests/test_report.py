"""The availability report: what it reads from a run folder, what the page says, secrets, comparisons, CLI."""

from __future__ import annotations

import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from history_builders import event, steady
from test_report_support import (
    HEALED,
    INJECT,
    NODES,
    RECOVERED,
    TAKEN_EFFECT,
    copy_real_run,
    note,
    scenario_records,
    three_verdicts_run,
    write_scenario,
)

from harness.checkers.traffic import availability, longest_outage
from harness.cli import main
from harness.history import EventKind, History
from harness.known_issues import KnownIssue, Outcome
from harness.records import Figure
from harness.report import (
    attach_timeline,
    compare_runs,
    fmt,
    load_run,
    load_scenario,
    scrub_tree,
    update_latest,
    write_comparison,
    write_run_report,
)
from harness.report.compare import Movement
from harness.report.redact import redact_config
from harness.report.timeline import (
    BandKind,
    bin_seconds,
    fault_bands,
    marks,
    phase_spans,
    timeline_figure,
)
from harness.schedules import FaultSpec, Step
from harness.secrets import REDACTED
from harness.verdict import Status

PLOTLY_BANNER = "* plotly.js v"
PASSWORD = "s3cret-redis-pw-Zq8"


class Links(HTMLParser):
    """Every src and href of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []  # tag, attribute, value

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [(tag, k, v) for k, v in attrs if k in ("src", "href") and v]


def links(html: str) -> list[tuple[str, str, str]]:
    parser = Links()
    parser.feed(html)
    return parser.urls


def rows_by_scenario(html: str) -> dict[str, str]:
    """The summary table's rows, by the scenario's folder name."""
    summary = html.split('id="summary"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr class=\"(\w+)\">(.*?)</tr>", summary, re.S)
    return {re.search(r"test_\w+", body).group(0): f"{status} {body}" for status, body in rows}


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return three_verdicts_run(tmp_path / "reports" / "20261125-120000-abcd")


# -- reading a run -----------------------------------------------------------------------------


def test_summaries_carry_the_verdicts_and_the_runners_figures(run_dir: Path):
    run = load_run(run_dir)
    assert [(s.folder, s.status) for s in run.scenarios] == [
        ("test_head_failure", Status.FAIL), ("test_proxy_failure", Status.UNKNOWN),
        ("test_replica_failure", Status.PASS)]
    failed = run.scenario("test_head_failure")
    verdict = json.loads((run_dir / "test_head_failure" / "verdict.json").read_text())["verdict"]["figures"]
    assert failed.figures.availability == verdict["availability"] == pytest.approx(0.75)  # a at 0.5, b at 1
    assert failed.figures.availability_with_retries == verdict[Figure.AVAILABILITY_WITH_RETRIES]
    assert failed.figures.longest_outage_s == pytest.approx(7.0)
    assert failed.figures.time_to_recover_s == pytest.approx(RECOVERED - INJECT)
    assert failed.figures.resolution_s == pytest.approx(0.05)
    assert not failed.figures.provisional and failed.problems == ()
    assert "longest_outage: fail" in failed.reason and "budget <= 3s" in failed.reason
    assert [r.what for r in failed.identities if r.changed] == ["Serve controller"]
    assert [p.name for p in failed.phases][:2] == ["arrange", "traffic"]
    assert {a.path for a in failed.files} >= {"test_head_failure/history.jsonl", "test_head_failure/verdict.json",
                                               "test_head_failure/logs/"}
    assert [a.path for a in failed.logs] == ["test_head_failure/logs/logs__head.log"]
    assert "no logs/ collected" in " ".join(run.scenario("test_proxy_failure").problems)


def test_a_scenario_without_verdict_is_unknown_with_provisional_figures_from_the_checkers(tmp_path: Path):
    folder = write_scenario(tmp_path, "head_failure", outage=(5.0, 12.0), verdict=False)
    summary = load_scenario(folder)
    history = History.load(folder / "history.jsonl")
    assert summary.status is Status.UNKNOWN and summary.result is None
    assert any("no verdict.json" in p for p in summary.problems)
    assert summary.figures.provisional and "provisional" in summary.reason
    # over every endpoint and the whole history, by the same checkers a verdict uses
    assert summary.figures.availability == availability(history, min_availability=0).figures["availability"]
    assert summary.figures.availability == pytest.approx(1 - 140 / 720)
    assert summary.figures.longest_outage_s == longest_outage(history, max_outage_s=1).figures["longest_outage_s"]
    assert summary.figures.time_to_recover_s == pytest.approx(RECOVERED - INJECT)


def test_a_history_cut_mid_line_and_a_verdict_cut_short_are_reported_not_raised(tmp_path: Path):
    folder = write_scenario(tmp_path, "head_failure")
    with (folder / "history.jsonl").open("ab") as fh:
        fh.write(b'{"type":"request","t_mono":19.5,"t_wall":17')  # the crash came mid-write
    text = (folder / "verdict.json").read_text()
    (folder / "verdict.json").write_text(text[: len(text) // 2])
    summary = load_scenario(folder)
    assert summary.status is Status.UNKNOWN and summary.history is not None and summary.history.truncated
    problems = " ".join(summary.problems)
    assert "cut short" in problems and "verdict.json unreadable" in problems


def test_a_damaged_history_leaves_the_scenario_unknown_without_figures(tmp_path: Path):
    folder = tmp_path / "test_broken"
    folder.mkdir()
    (folder / "history.jsonl").write_text('{"type":"request"}\n{"type":"fault"}\n')
    summary = load_scenario(folder)
    assert summary.status is Status.UNKNOWN and summary.history is None
    assert summary.figures.availability is None and "history unreadable" in " ".join(summary.problems)


# -- the page ----------------------------------------------------------------------------------


def test_the_page_shows_each_verdict_its_figures_against_budgets_and_one_plot_each(run_dir: Path):
    page = write_run_report(run_dir)
    assert page == run_dir / "index.html"
    html = page.read_text()
    rows = rows_by_scenario(html)
    assert set(rows) == {"test_head_failure", "test_proxy_failure", "test_replica_failure"}
    assert rows["test_replica_failure"].startswith("pass") and 'badge pass' in rows["test_replica_failure"]
    assert rows["test_proxy_failure"].startswith("unknown")
    failed = rows["test_head_failure"]
    assert failed.startswith("fail")
    # figures outside their budget are marked, with the budget beside them
    assert re.search(r'class="over">75\.00 %</span><span class="budget">budget ≥ 95\.00 %', failed)
    assert re.search(r'class="over">7\.000 s</span><span class="budget">budget ≤ 3\.000 s', failed)
    assert "pid 401 on head → pid 512 on head" in failed and "1 changed" in failed
    assert "50 ms (20 req/s per endpoint)" in failed
    assert html.count(PLOTLY_BANNER) == 1  # plotly inlined once for the whole page
    assert len(re.findall(r'<div id="timeline-\d+" class="plotly-graph-div"', html)) == 3
    assert "retry_3x" not in rows["test_replica_failure"]  # figures are named for people, not by key


def test_a_failed_scenario_shows_how_its_replays_went_flaky_or_reproduced(run_dir: Path):
    (run_dir / "test_head_failure" / "replays.json").write_text(json.dumps(
        {"replays": {"failed": 0, "of": 2, "text": "flaky: failed 0 of 2 replays"}}))
    run = load_run(run_dir)
    failed = run.scenario("test_head_failure")
    assert failed.status is Status.FAIL and failed.flaky  # a FAIL on record, and flaky: never counted as a pass
    assert not failed.as_expected and run.scenario("test_replica_failure").replays is None
    html = write_run_report(run_dir).read_text()
    assert "Replays on the same stack: flaky: failed 0 of 2 replays.</strong>" in html
    assert "No replay repeated this failure: it is flaky" in html
    (run_dir / "test_head_failure" / "replays.json").write_text(json.dumps(
        {"replays": {"failed": 1, "of": 2, "text": "flaky: failed 1 of 2 replays"}}))
    html = write_run_report(run_dir).read_text()
    assert not load_run(run_dir).scenario("test_head_failure").flaky
    assert "The failure came back: the\n    test failed." in html


def test_every_link_on_the_page_is_relative_and_leads_to_a_file_of_the_run(run_dir: Path):
    html = write_run_report(run_dir).read_text()
    hrefs = [v for tag, attr, v in links(html) if not v.startswith("#")]
    assert "test_head_failure/history.jsonl" in hrefs and "test_head_failure/logs/logs__head.log" in hrefs
    for href in hrefs:
        assert not re.match(r"[a-z]+:", href), href
        assert (run_dir / href).exists(), href
    assert not [v for tag, attr, v in links(html) if attr == "src"]  # nothing loaded: scripts are inline


def test_an_interrupted_run_renders_and_says_what_is_missing(tmp_path: Path):
    run_dir = tmp_path / "20261125-120000-abcd"
    write_scenario(run_dir, "replica_failure", outage=(5.0, 5.5))
    crashed = write_scenario(run_dir, "head_failure", outage=(5.0, 12.0), recovered=False, verdict=False)
    with (crashed / "history.jsonl").open("ab") as fh:
        fh.write(b'{"type":"request","t_mono":19.')
    empty = run_dir / "test_proxy_failure"
    empty.mkdir()
    (empty / "history.jsonl").write_bytes(b"")
    html = write_run_report(run_dir).read_text()
    rows = rows_by_scenario(html)
    crashed_row = rows["test_head_failure"]
    assert crashed_row.startswith("unknown") and "figures from the history alone" in crashed_row
    assert rows["test_proxy_failure"].startswith("unknown") and "—" in rows["test_proxy_failure"]
    assert "no verdict.json: the scenario stopped before its verdict" in html
    assert "cut short" in html and "history has no requests" in html
    assert "Nothing to plot" in html  # the empty history
    assert len(re.findall(r'class="plotly-graph-div"', html)) == 2
    assert BandKind.NEVER_RECOVERED.value in html  # the crashed fault is shaded to the end


def test_an_empty_run_folder_renders_a_page_that_says_so(tmp_path: Path):
    html = write_run_report(tmp_path).read_text()
    assert "no scenario folders" in html and PLOTLY_BANNER not in html


def test_a_real_run_folder_renders_with_its_failed_check_and_logs(tmp_path: Path):
    run_dir = copy_real_run(tmp_path)
    html = write_run_report(run_dir).read_text()
    row = rows_by_scenario(html)["test_worker_pod_failure"]
    assert row.startswith("fail") and "100.00 %" in row and "budget ≤ 3.000 s" in row and "budget ≤ 60.0 s" in row
    assert "replicas_running: fail: expected 6 RUNNING replicas of SleepyPid, saw 4" in html
    assert "test_worker_pod_failure/logs/events.jsonl" in html
    assert "KillWorkerPod" in html  # the fault in the plot's marks


# -- random schedules --------------------------------------------------------------------------

WORKER_REASON = "traffic_within_budget: fail: longest_outage: fail: 7.000s on a (budget <= 1s)"


def _step(index: int, *faults: tuple[str, str], status: Status, reason: str = "") -> dict:
    """A step as harness.schedules writes it into schedule.json."""
    return Step(index, tuple(FaultSpec(f, t) for f, t in faults), ("a", "b"), 2.0 * index, 20.0, status,
                reason).to_json()


def _schedule(original: list[dict] | None, minimal: list[dict] | None, *, verdict: str, reason: str,
              examples: int = 3, replays: str = "") -> dict:
    """schedule.json as ``ScheduleResult.to_json`` writes it (the keys the report reads, and others)."""
    return {
        "scenario": "random_schedule", "seed": 1234, "verdict": verdict, "reason": reason,
        "original": original, "minimal": minimal,
        "original_example": 1 if original else None, "minimal_example": 3 if minimal else None,
        "minimal_reason": f"step 1: KillWorkerPod(b): {WORKER_REASON}" if minimal else None,
        "replay": {"seed": "replay with SERVE_CHAOS_SCHEDULE_SEED=1234"},
        "replays": {"failed": 3, "of": 3, "text": replays} if replays else None,
        "profile": None, "topology": {"head": "a", "workers": ["b"], "nodes": ["a", "b"]}, "faults": [],
        "allow_all_workers_down": False, "seconds": 80.0, "bound_s": 2000.0,
        "examples": [{"example": n, "outcome": "pass", "steps": []} for n in range(1, examples + 1)],
    }


def _schedule_scenario(run_dir: Path, schedule: dict | str) -> Path:
    folder = write_scenario(run_dir, "random_schedule", outage=(5.0, 12.0), logs={"logs__head.log": "head\n"})
    (folder / "schedule.json").write_text(schedule if isinstance(schedule, str) else json.dumps(schedule))
    return folder


def _text(cell: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", cell).split())


def schedule_table(html: str) -> tuple[list[str], list[list[str]]]:
    """The fault schedule table's headers and rows (cells as text)."""
    table = re.search(r'<table class="schedule-steps">(.*?)</table>', html, re.S)
    assert table, "no fault schedule table"
    headers = [_text(h) for h in re.findall(r"<th>(.*?)</th>", table.group(1), re.S)]
    body = table.group(1).split("<tbody>", 1)[1]
    rows = [[_text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]
    return headers, rows


def test_a_failed_random_schedule_shows_its_original_and_minimal_schedules_side_by_side(tmp_path: Path):
    original = [_step(1, ("KillReplica", "a"), status=Status.PASS, reason="within budget"),
                _step(2, ("KillProxy", "a"), ("KillWorkerPod", "b"), status=Status.FAIL, reason=WORKER_REASON)]
    minimal = [_step(1, ("KillWorkerPod", "b"), status=Status.FAIL, reason=WORKER_REASON)]
    folder = _schedule_scenario(tmp_path, _schedule(original, minimal, verdict="fail", reason=WORKER_REASON,
                                                    replays="deterministic: failed 3 of 3 replays"))
    summary = load_scenario(folder)
    schedule = summary.schedule
    assert summary.problems == () and schedule is not None
    assert [(n, o.title if o else None, m.title if m else None) for n, o, m in schedule.rows] == [
        (1, "KillReplica(a)", "KillWorkerPod(b)"), (2, "KillProxy(a) + KillWorkerPod(b)", None)]
    assert "test_random_schedule/schedule.json" in {a.path for a in summary.files}

    html = write_run_report(tmp_path).read_text()
    assert "<h3>Fault schedule</h3>" in html
    assert "Seed <span class=\"mono\">1234</span> · replay with SERVE_CHAOS_SCHEDULE_SEED=1234" in html
    headers, rows = schedule_table(html)
    assert headers == ["Step", "Original (example 1)", "Minimal (example 3)"]
    assert rows == [["1", "KillReplica(a) pass", "KillWorkerPod(b) fail"],
                    ["2", "KillProxy(a) + KillWorkerPod(b) fail", "—"]]
    assert not any("KillProxy" in row[2] for row in rows)  # the minimal column holds only the minimal schedule
    # reasons are escaped, not markup
    assert "Why the minimal schedule fails: step 1: KillWorkerPod(b): traffic_within_budget: fail: " \
           "longest_outage: fail: 7.000s on a (budget &lt;= 1s)" in html
    assert "Replays of the original schedule: <strong>deterministic: failed 3 of 3 replays</strong>" in html
    assert "fault schedule (JSON)" in html and 'href="test_random_schedule/schedule.json"' in html


def test_a_passed_random_schedule_says_no_schedule_failed_and_shows_no_table(tmp_path: Path):
    reason = "3 schedule(s) of 5 step(s) stayed within budget"
    folder = _schedule_scenario(tmp_path, _schedule(None, None, verdict="pass", reason=reason))
    assert load_scenario(folder).schedule.rows == ()
    html = write_run_report(tmp_path).read_text()
    assert "<h3>Fault schedule</h3>" in html and reason in html
    assert "no schedule failed; 3 schedules ran" in html
    assert "schedule-steps" not in html and "Why the minimal" not in html and "Hypothesis's report" not in html


@pytest.mark.parametrize("text", [
    '{"seed": 1234, "verdict": "fail", "original": [{"index": 1, "fau',  # cut short mid-write
    "[1, 2]",  # not an object
    '{"seed": 1, "verdict": "fail", "original": [{"index": 1}], "minimal": null}',  # a step without faults
    '{"seed": 1, "verdict": "fail", "original": "KillHead(a)"}',  # steps that are not a list
])
def test_a_damaged_schedule_json_is_a_problem_and_the_page_still_renders(tmp_path: Path, text: str):
    summary = load_scenario(_schedule_scenario(tmp_path, text))
    assert summary.schedule is None and summary.status is Status.FAIL  # the verdict is still read
    assert [p for p in summary.problems if p.startswith("schedule.json unreadable (")], summary.problems
    html = write_run_report(tmp_path).read_text()
    assert "schedule.json unreadable" in html and "Fault schedule" not in html
    assert rows_by_scenario(html)["test_random_schedule"].startswith("fail")


def test_a_random_schedule_that_ran_no_example_is_still_listed(tmp_path: Path):
    folder = tmp_path / "test_random_schedule"
    folder.mkdir()
    (folder / "schedule.json").write_text(json.dumps(
        _schedule(None, None, verdict="unknown", reason="no schedule ran", examples=0)))
    run = load_run(tmp_path)
    assert [s.folder for s in run.scenarios] == ["test_random_schedule"]
    assert run.scenarios[0].status is Status.UNKNOWN and run.scenarios[0].schedule.verdict == "unknown"
    html = write_run_report(tmp_path).read_text()
    assert "no schedule ran" in html and "No failing schedule was recorded; 0 schedules ran" in html


# -- configuration and secrets -----------------------------------------------------------------


def test_config_keys_naming_a_secret_are_redacted_and_their_values_scrubbed_elsewhere():
    config = {"redis": {"port": 6379, "password": PASSWORD, "password_env": "SERVE_CHAOS_REDIS_PASSWORD"},
              "api_token": "tok-1234567890", "Secret": {"nested": "x"},
              "app": {"url": f"redis://:{PASSWORD}@10.0.0.1:6379", "replicas": 6, "tags": ["a", PASSWORD]}}
    redacted = redact_config(config)
    entries = {e.key: e for e in redacted.entries}
    assert entries["redis.password"].value == REDACTED and entries["redis.password"].redacted
    assert entries["api_token"].value == REDACTED and entries["Secret"].value == REDACTED
    assert entries["redis.port"].value == "6379" and not entries["redis.port"].redacted
    assert entries["app.url"].value == f"redis://:{REDACTED}@10.0.0.1:6379"
    assert PASSWORD not in json.dumps(redacted.tree) and PASSWORD not in repr(redacted.entries)
    assert redacted.scrub(f"a {PASSWORD} b") == f"a {REDACTED} b"


def _snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


def test_the_redis_password_reaches_no_file_the_report_writes_and_scrub_tree_removes_it_everywhere(run_dir: Path):
    (run_dir / "config.json").write_text(json.dumps(
        {"redis": {"port": 6379, "redis_password": PASSWORD}, "app": {"import_path": "sleepy_pid:app"},
         "versions": {"ray": "2.60.0", "harness": "0.1.0"}}))
    log = run_dir / "test_head_failure" / "logs" / "logs__redis.log"
    log.write_text(f"redis-server --requirepass {PASSWORD}\nready\n")
    os.chmod(log, 0o640)
    binary = run_dir / "test_head_failure" / "logs" / "dump.rdb"
    binary.write_bytes(b"REDIS\0" + PASSWORD.encode())
    before = _snapshot(run_dir)

    write_run_report(run_dir)
    attach_timeline(run_dir / "test_head_failure")
    after = _snapshot(run_dir)
    written = [p for p, data in after.items() if before.get(p) != data]
    assert {run_dir / "index.html", run_dir / "config.redacted.json",
            run_dir / "test_head_failure" / "timeline.html"} <= set(written)
    for path in written:
        assert PASSWORD.encode() not in after[path], path
    html = (run_dir / "index.html").read_text()
    assert "redis.redis_password" in html and "Versions recorded with the run" in html
    assert json.loads((run_dir / "config.redacted.json").read_text())["redis"]["redis_password"] == REDACTED

    result = scrub_tree(run_dir, [PASSWORD])
    assert set(result.scrubbed) == {run_dir / "config.json", log}
    assert result.binary_with_secret == (binary,)  # left as it was: rewriting would damage it
    leaks = [p for p, data in _snapshot(run_dir).items() if PASSWORD.encode() in data and p != binary]
    assert leaks == []
    assert log.read_text() == f"redis-server --requirepass {REDACTED}\nready\n"
    assert log.stat().st_mode & 0o777 == 0o640
    assert scrub_tree(run_dir, [PASSWORD]).scrubbed == ()  # nothing left to scrub


def test_scrub_tree_refuses_an_empty_secret_and_does_not_follow_symlinks(tmp_path: Path):
    outside = tmp_path / "outside.txt"
    outside.write_text(PASSWORD)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "link.txt").symlink_to(outside)
    with pytest.raises(ValueError):
        scrub_tree(run_dir, [""])
    assert scrub_tree(run_dir, [PASSWORD]).scrubbed == ()
    assert outside.read_text() == PASSWORD


# -- reports/latest ----------------------------------------------------------------------------


def test_latest_points_at_the_newest_run_whichever_run_is_reported(tmp_path: Path):
    reports = tmp_path / "reports"
    old = write_scenario(reports / "20261125-090000-aaaa", "replica_failure").parent
    new = write_scenario(reports / "20261125-100000-bbbb", "replica_failure").parent
    write_run_report(new)
    write_run_report(old)  # re-rendering an older run does not move latest back
    assert os.readlink(reports / "latest") == new.name
    assert (reports / "latest" / "index.html").read_text() == (new / "index.html").read_text()


def test_latest_is_only_made_beside_run_folders_and_never_replaces_a_real_folder(tmp_path: Path):
    assert update_latest(write_scenario(tmp_path / "some-folder", "x").parent) is None
    assert not (tmp_path / "latest").exists()
    (tmp_path / "latest").mkdir()
    assert update_latest(write_scenario(tmp_path / "20261125-090000-aaaa", "x").parent) is None
    assert (tmp_path / "latest").is_dir() and not (tmp_path / "latest").is_symlink()


# -- timeline ----------------------------------------------------------------------------------


def test_timeline_parts_come_from_the_history_events():
    history = History.of(scenario_records(outage=(5.0, 12.0)) + [note(12.0, "serve status: ok", name="harness")])
    spans = phase_spans(history)
    assert [s.name for s in spans] == ["arrange", "traffic", "inject", "confirm", "recover", "observe", "verdict"]
    assert spans[2].start == INJECT and spans[2].end == spans[3].start
    assert spans[-1].end == pytest.approx(HEALED)  # the last phase runs to the end of the history
    bands = fault_bands(history)
    assert [(b.kind, b.start, b.end) for b in bands] == [
        (BandKind.INJECTING, INJECT, TAKEN_EFFECT), (BandKind.IN_EFFECT, TAKEN_EFFECT, RECOVERED)]
    kinds = [m.kind for m in marks(history)]
    assert kinds == [EventKind.INJECT, EventKind.TAKEN_EFFECT, EventKind.RECOVERED, EventKind.NOTE, EventKind.HEALED]
    assert "serve status: ok" in marks(history)[3].label


def test_a_fault_that_never_recovered_or_never_took_effect_is_shaded_to_the_end():
    never = History.of(scenario_records(outage=None, recovered=False))
    assert [b.kind for b in fault_bands(never)] == [BandKind.INJECTING, BandKind.NEVER_RECOVERED]
    assert fault_bands(never)[-1].end == pytest.approx(HEALED)
    unconfirmed = History.of([*steady("a", 0, 10, 0.5), event(2.0, EventKind.INJECT)])
    (band,) = fault_bands(unconfirmed)
    assert band.kind is BandKind.UNCONFIRMED and band.end == pytest.approx(9.5 + 0.01)


def test_the_figure_has_a_row_per_endpoint_outage_windows_and_no_figure_for_an_empty_history():
    fig = timeline_figure(History.of(scenario_records(outage=(5.0, 12.0))))
    names = {t.name for t in fig.data}
    assert {"ok", "failed: connection refused", "outage window", "inject", "recovered"} <= names
    outage = [t for t in fig.data if t.name == "outage window"]
    assert len(outage) == 1 and outage[0].x[1] - outage[0].x[0] == pytest.approx(7.0)
    assert [a.text for a in fig.layout.annotations][1:1 + len(NODES)] == [f"requests to {n}" for n in NODES]
    assert timeline_figure(History()) is None
    assert (bin_seconds(60), bin_seconds(900), bin_seconds(3600)) == (1.0, 5.0, 30.0)


def test_attach_timeline_writes_a_standalone_page_and_attaches_it_to_allure(tmp_path: Path, monkeypatch):
    import allure

    attached = []
    monkeypatch.setattr(allure.attach, "file", lambda path, **kw: attached.append((path, kw)))
    folder = write_scenario(tmp_path, "head_failure", outage=(5.0, 12.0))
    page = attach_timeline(folder)
    assert page == folder / "timeline.html"
    html = page.read_text()
    assert html.count(PLOTLY_BANNER) == 1 and 'class="plotly-graph-div"' in html
    assert attached == [(str(page), {"name": "timeline", "attachment_type": allure.attachment_type.HTML})]
    assert "timeline (HTML)" in write_run_report(tmp_path).read_text()  # the run page links it


# -- comparing runs ----------------------------------------------------------------------------


def _two_runs(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "20261125-090000-aaaa", tmp_path / "20261125-100000-bbbb"
    write_scenario(a, "head_failure", outage=(5.0, 5.5))
    write_scenario(b, "head_failure", outage=(5.0, 12.0))  # regressed: fail, 7 s outage
    write_scenario(a, "replica_failure", outage=(5.0, 5.5))
    write_scenario(b, "replica_failure", outage=(5.0, 5.55))  # one request more: within the resolution
    write_scenario(a, "proxy_failure")  # missing in run B
    write_scenario(b, "controller_failure")  # new in run B
    return a, b


def test_comparison_flags_regressions_beyond_what_the_figures_can_tell_apart(tmp_path: Path):
    a, b = _two_runs(tmp_path)
    cmp = compare_runs(load_run(a), load_run(b))
    deltas = {d.folder: d for d in cmp.scenarios}
    assert [d.folder for d in cmp.regressed] == ["test_head_failure", "test_proxy_failure"]
    assert deltas["test_head_failure"].regressions == (
        "verdict", "availability", "availability with retries", "longest outage")
    changes = {c.metric: c for c in deltas["test_replica_failure"].changes}
    assert changes["longest outage"].movement is Movement.WORSE  # 0.05 s longer: one request interval
    assert changes["availability"].movement is Movement.WORSE  # one request more failed
    assert changes["time to recover"].movement is Movement.SAME
    assert deltas["test_proxy_failure"].regressions == ("missing in run B",)
    assert not deltas["test_controller_failure"].regressed and deltas["test_controller_failure"].before is None
    assert fmt.change_delta(changes["longest outage"]) == "+0.050 s"


def test_comparison_page_highlights_regressions_and_links_both_runs(tmp_path: Path):
    a, b = _two_runs(tmp_path)
    write_run_report(a)
    page, cmp = write_comparison(a, b)
    assert page == b / f"compare-{a.name}.html"
    html = page.read_text()
    assert html.count('<tr class="regressed">') == 2 and "2 of 4 scenarios regressed" in html
    assert f'href="../{a.name}/index.html"' in html and 'href="index.html"' in html


def test_a_control_scenario_must_fail_and_a_control_that_passes_is_the_regression(tmp_path: Path):
    a, b = tmp_path / "20261125-090000-aaaa", tmp_path / "20261125-100000-bbbb"
    write_scenario(a, "head_failure_control", outage=(5.0, 12.0), expected="fail")
    write_scenario(b, "head_failure_control", outage=(5.0, 5.5), expected="fail")  # the harness saw nothing
    write_scenario(a, "replica_failure_control", outage=(5.0, 8.0), expected="fail")
    write_scenario(b, "replica_failure_control", outage=(5.0, 12.0), expected="fail")  # worse figures: fine
    run_a = load_run(a)
    control = run_a.scenario("test_head_failure_control")
    assert control.status is Status.FAIL and control.expected is Status.FAIL and control.as_expected
    html = write_run_report(a).read_text()
    assert "control scenario: must fail on its broken stack · failed as it must" in html
    cmp = compare_runs(run_a, load_run(b))
    assert [(d.folder, d.regressions) for d in cmp.regressed] == [("test_head_failure_control", ("verdict",))]
    assert "NOT as expected" in write_run_report(b).read_text()


def test_a_known_issue_scenario_is_labelled_with_the_issue_not_as_a_control(tmp_path: Path):
    run = tmp_path / "20261125-110000-cccc"
    issue = KnownIssue("ray-project/ray#63784", "stale <proxies>", ("2.60.0",), "failures")
    write_scenario(run, "controller_failure", outage=(5.0, 6.0), known_issue=issue)  # fails on availability only
    summary = load_run(run).scenario("test_controller_failure")
    assert summary.known_issue == "ray-project/ray#63784 (stale <proxies>)" and summary.as_expected
    assert summary.outcome is Outcome.EXPECTED_FAILURE
    html = write_run_report(run).read_text()
    assert "known issue ray-project/ray#63784 (stale &lt;proxies&gt;) shown on Ray 2.60.0, as expected" in html
    assert "expected failure 1" in html and "control scenario" not in html
    other = tmp_path / "20261125-120000-dddd"
    write_scenario(other, "controller_failure", outage=(5.0, 5.2), known_issue=issue, ray_version="2.61.0")
    html = write_run_report(other).read_text()
    assert "known issue ray-project/ray#63784 (seen on Ray 2.60.0) not confirmed on Ray 2.61.0" in html
    assert load_run(other).scenario("test_controller_failure").outcome is Outcome.PASSED


# -- command line ------------------------------------------------------------------------------


def test_cli_report_writes_the_page_and_prints_its_path(run_dir: Path, capsys):
    assert main(["report", str(run_dir)]) == 0
    assert capsys.readouterr().out.strip() == str(run_dir / "index.html")
    assert (run_dir / "index.html").exists()


def test_cli_compare_prints_a_table_and_exits_1_on_a_regression(tmp_path: Path, capsys):
    a, b = _two_runs(tmp_path)
    out = tmp_path / "cmp.html"
    assert main(["report", "--compare", str(a), str(b), "--out", str(out)]) == 1
    text = capsys.readouterr().out
    assert "2 scenario(s) regressed" in text and "missing in run B" in text
    assert re.search(r"test_head_failure .*pass → fail.*98\.21 % → 75\.00 %", text)
    assert out.exists()
    assert main(["report", "--compare", str(a), str(a)]) == 0
    assert "no regression" in capsys.readouterr().out


def test_cli_refuses_missing_folders_and_ambiguous_arguments(tmp_path: Path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert main(["report"]) == 2
    assert main(["report", str(tmp_path), "--compare", str(tmp_path), str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
