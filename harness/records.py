"""Records of a run: a scenario's budget, its phases and its result (what ``verdict.json`` holds), the names of
the files in a scenario's folder, and the figure keys a verdict carries. One writer and one typed reader of a
scenario folder (``ScenarioFolder``): scenarios and random schedules write through it; the report, the
statistics and the benchmarks read through it.

    folder = ScenarioFolder(run_dir / "test_head_failure")
    folder.write_result(result)                  # verdict.json
    result = folder.read_result()                # -> ScenarioResult (VerdictFileError when damaged)
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path

from harness.history import History
from harness.identity import IdentityRow
from harness.known_issues import (
    KnownIssue,
    Outcome,
    expected_status,
    known_issue_note,
    outcome,
)
from harness.measures import RETRY_3X_EXPONENTIAL
from harness.verdict import Status, Verdict, explain

DEFAULT_BUDGETS = Path(str(resources.files("harness") / "data" / "budgets.toml"))  # shipped (scenarios/ links it)

# The files of a scenario's folder (reports/<run>/<test>/).
HISTORY = "history.jsonl"  # every request and event, as they happened
VERDICT = "verdict.json"  # the ScenarioResult
LOGS = "logs"  # node logs, Ray logs, the stack's events and status, when the verdict is not a pass
LOGS_ERROR = "logs-error.txt"  # why logs/ is missing
TIMELINE = "timeline.html"  # the scenario's timeline, standalone
TIMELINE_ERROR = "timeline-error.txt"  # why timeline.html is missing
SCHEDULE = "schedule.json"  # a random schedule's record (harness.schedules.records)
REPLAYS = "replays.json"  # beside a failed scenario's verdict: how its replays on the same stack went (Judged)
CONFIG = "config.json"  # in the run folder: the configuration the report shows (secrets redacted)
WITH_RETRIES = "with_retries."  # prefix of the availability figures a client retrying as Ray recommends sees


class Figure(StrEnum):
    """The figure keys a scenario's verdict carries and the report's summary, the statistics and the
    comparison read."""

    AVAILABILITY = "availability"
    AVAILABILITY_WITH_RETRIES = f"{WITH_RETRIES}availability_{RETRY_3X_EXPONENTIAL.name}"
    LONGEST_OUTAGE = "longest_outage_s"
    TIME_TO_RECOVER = "time_to_recover_s"
    REQUESTS = "requests"
    FAILURES = "failures"


class VerdictFileError(ValueError):
    """A verdict.json that cannot be read into a ScenarioResult."""


@dataclass(frozen=True)
class Budget:
    """What a scenario must stay within; the defaults' measurements are written next to them in budgets.toml."""

    min_availability: float  # on the endpoints that must keep serving, from injection to the end of traffic
    max_outage_s: float  # the longest outage on those endpoints
    max_recovery_s: float  # injection -> recovered
    rate_per_endpoint: float = 20.0
    timeout_s: float = 2.0
    baseline_s: float = 3.0  # traffic before the fault
    observe_s: float = 5.0  # traffic after recovery
    confirm_s: float = 30.0  # how long "taken effect" may take to show
    max_detection_s: float | None = None  # health-check scenario: toggle -> replica seen unhealthy
    hold_s: float = 10.0  # how long a fault that lasts until it is ended (a freeze, a partition) is held
    link_rate_kbit: int = 1000  # the slow link a DegradeNetwork holds: its bandwidth (tbf) ...
    link_loss: float = 0.05  # ... and the share of its packets dropped at random (iptables statistic)


class BudgetError(ValueError):
    """A budgets file without the scenario's table, or with a key a budget does not have."""


def load_budget(name: str, path: str | Path | None = None) -> Budget:
    """The budget of scenario ``name``: [defaults] overlaid with [name]."""
    path = Path(path) if path else DEFAULT_BUDGETS
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    if name not in data:
        known = ", ".join(sorted(k for k in data if k != "defaults")) or "none"
        raise BudgetError(f"no budget for scenario {name!r} in {path}: add a [{name}] table (its scenarios: {known})")
    merged = {**data.get("defaults", {}), **data[name]}
    try:
        return Budget(**merged)
    except TypeError as exc:
        raise BudgetError(f"budget [{name}] in {path}: {exc}") from None


@dataclass(frozen=True)
class Replays:
    """How often a failure happened again when its scenario or schedule was run again: ``deterministic`` (every
    replay failed), ``reproduced`` (at least one did), or not reproduced (every replay passed: a flaky failure,
    reported as found, never as a pass)."""

    failed: int
    of: int

    @property
    def deterministic(self) -> bool:
        return self.failed == self.of

    @property
    def reproduced(self) -> bool:
        return self.failed > 0

    def text(self) -> str:
        kind = "deterministic" if self.deterministic else "flaky"
        return f"{kind}: failed {self.failed} of {self.of} replays"


def flaky_failure(failed: bool, replays: Replays | None) -> bool:
    """The one rule for scenarios, schedules and the report: a failure that was replayed and that no replay
    repeated is flaky (reported as found, never a pass); one that came back, or was never replayed, is not."""
    return failed and replays is not None and not replays.reproduced


@dataclass(frozen=True)
class PhaseTiming:
    name: str
    start_mono: float
    seconds: float
    outcome: str  # ok | failed


@dataclass(frozen=True)
class ScenarioResult:
    """What verdict.json holds."""

    scenario: str
    stack_run_id: str
    verdict: Verdict
    budget: Budget
    serving: tuple[str, ...]
    identities: tuple[IdentityRow, ...]
    findings: tuple[str, ...]
    phases: tuple[PhaseTiming, ...]
    expected: Status = Status.PASS  # a control must fail (a known issue's expectation is derived: known_issues.py)
    known_issue: KnownIssue | None = None  # a known defect of Ray Serve this scenario shows, pinned to versions
    ray_version: str = ""  # the Ray version the stack ran

    @property
    def expected_status(self) -> Status:
        return expected_status(self.expected, self.known_issue, self.ray_version)

    @property
    def outcome(self) -> Outcome:
        return outcome(self.verdict, expected=self.expected, known_issue=self.known_issue,
                       ray_version=self.ray_version)

    @property
    def is_control(self) -> bool:
        """A control: expected to fail on a stack broken on purpose (its figures are not the scenario's)."""
        return self.expected is Status.FAIL and self.known_issue is None

    @property
    def known_issue_note(self) -> str:
        return known_issue_note(self.known_issue, self.ray_version, self.outcome)

    def to_json(self) -> dict:
        return {
            "scenario": self.scenario, "stack_run_id": self.stack_run_id, "status": str(self.verdict.status),
            "outcome": str(self.outcome), "expected_status": str(self.expected_status),
            "control": self.is_control, "ray_version": self.ray_version,
            "known_issue": self.known_issue.to_json() if self.known_issue else None,
            "known_issue_note": self.known_issue_note,
            "reason": self.verdict.reason, "verdict": self.verdict.to_json(), "budget": asdict(self.budget),
            "serving_endpoints": list(self.serving), "identities": [asdict(r) for r in self.identities],
            "findings": list(self.findings), "phases": [asdict(p) for p in self.phases],
        }


@dataclass(frozen=True)
class Judged:
    """A scenario's run and, when it did not go as expected, its replays on the same stack (the pytest plugin's
    ``serve_chaos_replay``). It passed (the run went as expected), failed (a replay failed again, or there was no
    replay), or is flaky: the run failed and every replay passed. A flaky failure is reported as found, with its
    figures and its replays' count; it is never counted as a pass, and an UNKNOWN is never replayed."""

    first: ScenarioResult
    replayed: tuple[ScenarioResult, ...] = ()
    folders: tuple[str, ...] = ()  # the replays' folders, beside the first run's

    @property
    def passed(self) -> bool:
        return self.first.outcome.as_expected

    @property
    def replays(self) -> Replays | None:
        if not self.replayed:
            return None
        return Replays(sum(not r.outcome.as_expected for r in self.replayed), len(self.replayed))

    @property
    def flaky(self) -> bool:
        return flaky_failure(self.first.outcome is Outcome.FAILED, self.replays)

    def explain(self) -> str:
        text = f"{self.first.scenario}: {explain(self.first.verdict)}"
        if self.replays is not None:
            how = "every replay passed" if self.flaky else "the failure came back"
            text += f" (replays: {self.replays.text()}; {how}: {', '.join(self.folders)})"
        return text

    def to_json(self) -> dict:
        replays = self.replays
        return {"scenario": self.first.scenario, "status": str(self.first.verdict.status), "flaky": self.flaky,
                "replays": {"failed": replays.failed, "of": replays.of, "text": replays.text()} if replays else None,
                "folders": list(self.folders),
                "outcomes": [str(r.outcome) for r in self.replayed]}


def _record(cls: type, obj: Mapping):
    """A dataclass from a JSON object, ignoring fields it does not know (files of newer harnesses)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in obj.items() if k in names})


def result_from_json(obj: Mapping) -> ScenarioResult:
    """The inverse of ``ScenarioResult.to_json`` (what a scenario writes as verdict.json)."""
    verdict = obj["verdict"]
    if "name" not in verdict or "status" not in verdict:
        raise KeyError("a verdict needs a name and a status")
    return ScenarioResult(
        scenario=str(obj["scenario"]),
        stack_run_id=str(obj.get("stack_run_id", "")),
        verdict=Verdict.from_json({**verdict, "figures": {k: v for k, v in (verdict.get("figures") or {}).items()
                                                          if v is not None}}),
        budget=_record(Budget, obj["budget"]),
        serving=tuple(obj.get("serving_endpoints") or ()),
        identities=tuple(_record(IdentityRow, r) for r in obj.get("identities") or ()),
        findings=tuple(obj.get("findings") or ()),
        phases=tuple(_record(PhaseTiming, p) for p in obj.get("phases") or ()),
        expected=_expected(obj),
        known_issue=KnownIssue.from_json(obj.get("known_issue")),
        ray_version=str(obj.get("ray_version") or ""),
    )


def _expected(obj: Mapping) -> Status:
    """A control's expectation (a known issue's is derived from its versions, not stored)."""
    if "control" in obj:
        return Status.FAIL if obj["control"] else Status.PASS
    return Status(obj.get("expected_status", Status.PASS)) if not obj.get("known_issue") else Status.PASS


@dataclass(frozen=True)
class ScenarioFolder:
    """A scenario's folder in a run folder: the one writer and reader of its files."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def history_path(self) -> Path:
        return self.path / HISTORY

    @property
    def verdict_path(self) -> Path:
        return self.path / VERDICT

    @property
    def logs_dir(self) -> Path:
        return self.path / LOGS

    def file(self, name: str) -> Path:
        return self.path / name

    def write_result(self, result: ScenarioResult) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        self.verdict_path.write_text(json.dumps(result.to_json(), indent=2, default=str))
        return self.verdict_path

    def read_result(self) -> ScenarioResult:
        try:
            return result_from_json(json.loads(self.verdict_path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise VerdictFileError(f"{type(exc).__name__}: {exc}") from None

    def read_history(self) -> History:
        return History.load(self.history_path)

    def write_replays(self, judged: Judged) -> Path:
        path = self.path / REPLAYS
        self.path.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(judged.to_json(), indent=2))
        return path

    def read_replays(self) -> Replays | None:
        """How the replays of this folder's scenario went, or None when it was not replayed (or the file is
        damaged: the report then shows the run as it is)."""
        try:
            obj = json.loads((self.path / REPLAYS).read_text())["replays"]
            return Replays(int(obj["failed"]), int(obj["of"])) if obj else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def note_missing(self, name: str, why: str) -> None:
        """Write why an artefact is missing (e.g. logs-error.txt)."""
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / name).write_text(why.rstrip() + "\n")


def scenario_folders(run_dir: str | Path) -> list[ScenarioFolder]:
    """The folders of a run that hold a verdict, in name order."""
    return [ScenarioFolder(p.parent) for p in sorted(Path(run_dir).glob(f"*/{VERDICT}"))]
