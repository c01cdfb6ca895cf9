"""What a run folder holds, read into typed records: one ScenarioSummary per scenario folder, one RunSummary.

A run folder is ``reports/<run-id>/``; each scenario folder below it holds ``history.jsonl``, ``verdict.json``
(a ``ScenarioResult``) and, when the verdict was not a pass, ``logs/``; a random schedule's folder also holds
``schedule.json`` (its original and minimal failing schedules, read into a ``ScheduleView``). A crashed or
interrupted run leaves some of these missing or cut short: reading never fails on that, it records what is
missing in ``problems`` and the scenario's status is ``unknown``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

from harness.history import History, HistoryError
from harness.identity import IdentityRow
from harness.known_issues import Outcome, outcome
from harness.measures import (
    RETRY_3X_EXPONENTIAL,
    fault_windows,
    observed_resolution,
    outage_windows,
    served,
)
from harness.records import (
    HISTORY,
    LOGS,
    LOGS_ERROR,
    SCHEDULE,
    TIMELINE,
    VERDICT,
    Budget,
    Figure,
    PhaseTiming,
    Replays,
    ScenarioFolder,
    ScenarioResult,
    VerdictFileError,
    flaky_failure,
)
from harness.verdict import Resolution, Status, Verdict, explain


@dataclass(frozen=True)
class Figures:
    """The figures a reviewer reads first; None when the run did not produce them."""

    availability: float | None
    availability_with_retries: float | None
    longest_outage_s: float | None
    time_to_recover_s: float | None
    requests: int | None
    failures: int | None
    resolution: Resolution | None  # planned interval and what was observed (largest gap, largest lag)
    source: str  # where they come from: the verdict, or the history alone (provisional)

    @property
    def provisional(self) -> bool:
        return self.source != VERDICT

    @property
    def resolution_s(self) -> float | None:
        """The planned request interval: no figure is finer than this."""
        return self.resolution.planned_interval_s if self.resolution else None


@dataclass(frozen=True)
class Artifact:
    label: str
    path: str  # relative to the run folder, "/"-separated


@dataclass(frozen=True)
class ScheduleStepView:
    """One step of a recorded schedule as the page shows it: its faults (``KillReplica(head)``), its status and
    why."""

    index: int
    faults: tuple[str, ...]
    status: str
    reason: str

    @property
    def title(self) -> str:
        return " + ".join(self.faults)


@dataclass(frozen=True)
class ScheduleView:
    """What a random schedule's ``schedule.json`` says: the seed, the verdict, the ORIGINAL failing schedule and
    the MINIMAL one it was shrunk to (None when no schedule failed), how its replays did, and how to replay them."""

    seed: str  # "" for a replay of a recorded schedule
    verdict: str
    reason: str
    original: tuple[ScheduleStepView, ...] | None
    minimal: tuple[ScheduleStepView, ...] | None
    original_example: int | None
    minimal_example: int | None
    minimal_reason: str | None
    replay_hint: str
    replays: str  # how the original failing schedule did when run again ("deterministic: failed 3 of 3 replays")
    examples_run: int
    known_issue_examples: tuple[int, ...] = ()  # schedules that failed exactly as a pinned known issue says

    @property
    def failed(self) -> bool:
        """A failing schedule was recorded."""
        return self.original is not None or self.minimal is not None

    @property
    def rows(self) -> tuple[tuple[int, ScheduleStepView | None, ScheduleStepView | None], ...]:
        """(step number, original step, minimal step), side by side; the shorter schedule is padded with None."""
        pairs = zip_longest(self.original or (), self.minimal or ())
        return tuple((n, original, minimal) for n, (original, minimal) in enumerate(pairs, 1))


@dataclass(frozen=True)
class ScenarioSummary:
    folder: str  # the scenario folder's name (the test's name); scenarios of two runs match by it
    scenario: str  # the scenario's own name (from verdict.json, else the folder's)
    status: Status
    reason: str
    result: ScenarioResult | None  # verdict.json, when it was written and readable
    history: History | None  # history.jsonl, when it was readable
    figures: Figures
    files: tuple[Artifact, ...]  # history, verdict, timeline, the logs folder
    logs: tuple[Artifact, ...]  # every file collected under logs/
    problems: tuple[str, ...]  # what is missing or damaged, in words
    expected: Status = Status.PASS  # a control scenario (a broken stack) is expected to fail
    schedule: ScheduleView | None = None  # schedule.json, for a random schedule
    replays: Replays | None = None  # replays.json: how this failed scenario did when run again on the same stack

    @property
    def flaky(self) -> bool:
        """It failed, and every replay passed: a flaky failure (the test warned instead of failing)."""
        return flaky_failure(self.status is Status.FAIL, self.replays)

    @property
    def outcome(self) -> Outcome:
        """passed / failed / unknown / expected failure / unexpected pass (harness.known_issues.outcome)."""
        if self.result is not None and self.status is self.result.verdict.status:
            return self.result.outcome
        return outcome(Verdict("", self.status, ""), expected=self.expected, known_issue=None, ray_version="")

    @property
    def as_expected(self) -> bool:
        return self.outcome.as_expected

    @property
    def known_issue(self) -> str:
        """The known Ray Serve defect this scenario shows (it is expected to fail until fixed), or ''."""
        return self.result.known_issue.label if self.result and self.result.known_issue else ""

    @property
    def known_issue_note(self) -> str:
        return self.result.known_issue_note if self.result else ""

    @property
    def checks(self) -> tuple[Verdict, ...]:
        return self.result.verdict.parts if self.result else ()

    @property
    def budget(self) -> Budget | None:
        return self.result.budget if self.result else None

    @property
    def identities(self) -> tuple[IdentityRow, ...]:
        return self.result.identities if self.result else ()

    @property
    def phases(self) -> tuple[PhaseTiming, ...]:
        return self.result.phases if self.result else ()


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    path: Path
    scenarios: tuple[ScenarioSummary, ...]
    problems: tuple[str, ...]

    def scenario(self, folder: str) -> ScenarioSummary | None:
        return next((s for s in self.scenarios if s.folder == folder), None)

    def count(self, status: Status) -> int:
        return sum(s.status is status for s in self.scenarios)

    def outcomes(self) -> dict[Outcome, int]:
        """How many scenarios ended in each outcome (expected failures apart from failures, like pytest's xfail)."""
        return {o: sum(s.outcome is o for s in self.scenarios) for o in Outcome}


# ---------------------------------------------------------------------------------------------
# verdict.json -> ScenarioResult


# ---------------------------------------------------------------------------------------------
# schedule.json -> ScheduleView (read here, not through harness.schedule, which needs hypothesis and a Cluster)


def _optional_int(value: object) -> int | None:
    return None if value is None else int(value)


def _schedule_steps(steps: object) -> tuple[ScheduleStepView, ...] | None:
    if steps is None:
        return None
    if not isinstance(steps, Sequence) or isinstance(steps, str):
        raise TypeError(f"a schedule is a list of steps, not {type(steps).__name__}")
    return tuple(
        ScheduleStepView(index=int(s["index"]), faults=tuple(f"{f['fault']}({f['target']})" for f in s["faults"]),
                         status=str(s.get("status", Status.UNKNOWN)), reason=str(s.get("reason", "")))
        for s in steps)


def schedule_from_json(obj: Mapping) -> ScheduleView:
    """The report's view of what ``harness.schedule`` writes as schedule.json."""
    if not isinstance(obj, Mapping):
        raise TypeError(f"not a JSON object but {type(obj).__name__}")
    replay = obj.get("replay") or {}
    examples = obj.get("examples") or ()
    seed = obj.get("seed")
    minimal_reason = obj.get("minimal_reason")
    return ScheduleView(
        seed="" if seed is None else str(seed), verdict=str(obj["verdict"]), reason=str(obj.get("reason", "")),
        original=_schedule_steps(obj.get("original")), minimal=_schedule_steps(obj.get("minimal")),
        original_example=_optional_int(obj.get("original_example")),
        minimal_example=_optional_int(obj.get("minimal_example")),
        minimal_reason=None if minimal_reason is None else str(minimal_reason),
        replay_hint=str(replay.get("seed") or ""), replays=str((obj.get("replays") or {}).get("text") or ""),
        examples_run=len(examples),
        known_issue_examples=tuple(int(n) for n in obj.get("known_issue_examples") or ()),
    )


# ---------------------------------------------------------------------------------------------
# Figures: from the verdict, else provisional ones from the history by the same checkers.


def _count(value: float | None) -> int | None:
    return None if value is None else int(value)


def figures_of_verdict(verdict: Verdict, history: History | None) -> Figures:
    f = verdict.figures
    resolution = verdict.resolution if verdict.resolution is not None else (
        observed_resolution(history) if history else None)
    return Figures(
        availability=f.get(Figure.AVAILABILITY), availability_with_retries=f.get(Figure.AVAILABILITY_WITH_RETRIES),
        longest_outage_s=f.get(Figure.LONGEST_OUTAGE), time_to_recover_s=f.get(Figure.TIME_TO_RECOVER),
        requests=_count(f.get(Figure.REQUESTS)), failures=_count(f.get(Figure.FAILURES)),
        resolution=resolution, source=VERDICT,
    )


def provisional_figures(history: History) -> Figures:
    """Figures over every endpoint and the whole history, by the measurements a verdict's checkers use (no
    budgets). For a scenario that stopped before its verdict."""
    seen = [r for r in history.requests if r.observed]
    recoveries = [w.recovered - w.injected for w in fault_windows(history) if w.recovered is not None]
    return Figures(
        availability=sum(r.ok for r in seen) / len(seen) if seen else None,
        availability_with_retries=sum(served(seen, RETRY_3X_EXPONENTIAL)) / len(seen) if seen else None,
        longest_outage_s=max((w.duration_s for w in outage_windows(history)), default=0.0) if seen else None,
        time_to_recover_s=max(recoveries, default=None),
        requests=len(history.requests), failures=sum(r.observed and not r.ok for r in history.requests),
        resolution=observed_resolution(history),
        source=f"{HISTORY} alone (provisional: no verdict; all endpoints, whole history)",
    )


NO_FIGURES = Figures(None, None, None, None, None, None, None, "nothing readable")


# ---------------------------------------------------------------------------------------------
# Reading folders.


def is_scenario_folder(path: Path) -> bool:
    """A folder a scenario wrote into: a random schedule that ran no example leaves only schedule.json."""
    return path.is_dir() and not path.is_symlink() and any((path / n).exists() for n in (HISTORY, VERDICT, SCHEDULE))


def _artifacts(folder: Path, run_dir: Path) -> tuple[tuple[Artifact, ...], tuple[Artifact, ...]]:
    """The scenario's files, and the log files collected under logs/ (paths relative to the run folder)."""
    def rel(p: Path) -> str:
        return p.relative_to(run_dir).as_posix()

    named = (("history (JSON Lines)", HISTORY), ("verdict (JSON)", VERDICT), ("fault schedule (JSON)", SCHEDULE),
             ("timeline (HTML)", TIMELINE), ("why logs are missing", LOGS_ERROR))
    files = [Artifact(label, rel(folder / name)) for label, name in named if (folder / name).is_file()]
    logs_dir = folder / LOGS
    logs = []
    if logs_dir.is_dir():
        files.append(Artifact("logs folder", rel(logs_dir) + "/"))
        logs = [Artifact(p.relative_to(logs_dir).as_posix(), rel(p))
                for p in sorted(logs_dir.rglob("*")) if p.is_file()]
    return tuple(files), tuple(logs)


def load_scenario(folder: Path, run_dir: Path | None = None) -> ScenarioSummary:
    """Read one scenario folder; never raises for missing or damaged files."""
    run_dir = run_dir or folder.parent
    problems: list[str] = []
    history: History | None = None
    result: ScenarioResult | None = None
    if (folder / HISTORY).exists():
        try:
            history = History.load(folder / HISTORY)
        except HistoryError as exc:
            problems.append(f"history unreadable: {exc}")
        else:
            if history.truncated:
                problems.append("history's last line was cut short (the run stopped mid-write); it is left out")
            if not history.requests:
                problems.append("history has no requests: no traffic was recorded")
    else:
        problems.append(f"no {HISTORY}: nothing was recorded")
    if (folder / VERDICT).exists():
        try:
            result = ScenarioFolder(folder).read_result()
        except VerdictFileError as exc:
            problems.append(f"{VERDICT} unreadable ({exc})")
    else:
        problems.append(f"no {VERDICT}: the scenario stopped before its verdict (interrupted or crashed)")
    if result is not None and result.verdict.status is not Status.PASS and not (folder / LOGS).is_dir():
        why = f"see {LOGS_ERROR}" if (folder / LOGS_ERROR).exists() else "the run stopped before collecting them"
        problems.append(f"no logs/ collected for this non-passing verdict ({why})")
    schedule: ScheduleView | None = None
    if (folder / SCHEDULE).exists():
        try:
            schedule = schedule_from_json(json.loads((folder / SCHEDULE).read_text()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            problems.append(f"{SCHEDULE} unreadable ({type(exc).__name__}: {exc})")

    if result is not None:
        status, reason = result.verdict.status, explain(result.verdict)
        figures = figures_of_verdict(result.verdict, history)
    else:
        status = Status.UNKNOWN
        if history is not None and history.requests:
            reason = "no verdict was written; the figures are provisional, from the history alone"
            figures = provisional_figures(history)
        else:
            reason, figures = "no verdict was written, and the history gives no figures", NO_FIGURES
    files, logs = _artifacts(folder, run_dir)
    return ScenarioSummary(
        folder=folder.name, scenario=result.scenario if result else folder.name.removeprefix("test_"),
        status=status, reason=reason, result=result, history=history, figures=figures,
        files=files, logs=logs, problems=tuple(problems),
        expected=result.expected_status if result else Status.PASS, schedule=schedule,
        replays=ScenarioFolder(folder).read_replays(),
    )


def load_run(run_dir: Path) -> RunSummary:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run folder {run_dir}")
    folders = sorted(p for p in run_dir.iterdir() if is_scenario_folder(p))
    problems = [] if folders else ["no scenario folders (none has history.jsonl, verdict.json or schedule.json)"]
    return RunSummary(run_dir.resolve().name, run_dir, tuple(load_scenario(f, run_dir) for f in folders),
                      tuple(problems))
