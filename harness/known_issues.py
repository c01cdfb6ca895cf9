"""Known issues of Ray Serve, pinned to the Ray versions they were seen on, and the outcome of a scenario.

A known issue is a precise expectation, like pytest's strict xfail: on a Ray version it was seen on, the
scenario that shows it is expected to fail, and only the failure that shows the defect meets that expectation
(every check that did not pass is a FAIL carrying the issue's figure, e.g. ``stale_routes >= 1``). Any other
outcome is news: another failure or an UNKNOWN stays a failure or an unknown; a pass is an "unexpected pass"
(the issue no longer shows: drop the expectation). On a Ray version it was not seen on, the scenario runs as
a plain one, and the report says the known issue was not confirmed there.

    outcome(verdict, expected=Status.PASS, known_issue=STALE_PROXIES, ray_version="2.60.0")
    # Outcome.EXPECTED_FAILURE when only stale routes failed

Controls (a scenario on a stack broken on purpose, ``expected`` FAIL) use the same outcomes: a control that
fails is an expected failure, one that passes an unexpected pass.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum

from harness.verdict import Status, Verdict


class Outcome(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    UNKNOWN = "unknown"
    EXPECTED_FAILURE = "expected failure"  # a known issue shown by its own failure, or a control that failed
    UNEXPECTED_PASS = "unexpected pass"  # a known issue that did not show, or a control that passed

    @property
    def as_expected(self) -> bool:
        return self in (Outcome.PASSED, Outcome.EXPECTED_FAILURE)


@dataclass(frozen=True)
class KnownIssue:
    """A defect of Ray Serve a scenario shows, the Ray versions it was seen on, and the figure that shows it."""

    id: str  # e.g. "ray-project/ray#63784"
    title: str
    seen_on: tuple[str, ...]  # Ray versions (exact, as ray.__version__ prints them)
    figure: str  # a figure >= 1 on each failing check that shows the defect (e.g. "stale_routes")

    @property
    def label(self) -> str:
        return f"{self.id} ({self.title})"

    def __str__(self) -> str:
        return self.label

    def applies_to(self, ray_version: str) -> bool:
        return ray_version in self.seen_on

    def shown_by(self, verdict: Verdict) -> bool:
        """Every check that did not pass is a FAIL that carries this issue's figure: the defect, and only it."""
        bad = [v for v in leaves(verdict) if v.status is not Status.PASS]
        return bool(bad) and all(v.status is Status.FAIL and v.figures.get(self.figure, 0.0) >= 1 for v in bad)

    def to_json(self) -> dict:
        return {"id": self.id, "title": self.title, "seen_on": list(self.seen_on), "figure": self.figure}

    @classmethod
    def from_json(cls, obj: Mapping | str | None) -> KnownIssue | None:
        """From verdict.json; an older file stated the issue as one string (versions unknown)."""
        if not obj:
            return None
        if isinstance(obj, str):
            issue_id, _, title = obj.partition(" (")
            return cls(issue_id, title.rstrip(")"), (), "")
        return cls(str(obj["id"]), str(obj.get("title", "")), tuple(obj.get("seen_on") or ()), str(obj.get("figure", "")))


# ray-project/ray#63784 (open upstream): LongPoll consumers keep a dead controller handle after the controller is
# replaced by a new actor; this harness reproduced the default proxy's variant on Ray 2.60.0 (docs/findings.md),
# and the matrix of 2026-12-02 showed it on 2.59.0 too (controller_failure's routing_after_recovery failed in both
# 2.59.0 cells with the default proxy, Redis and RocksDB) and on 2.60.0 with HAProxy.
STALE_PROXIES = KnownIssue(
    id="ray-project/ray#63784",
    title="proxies that outlive a replaced controller never hear of new replicas",
    seen_on=("2.60.0", "2.59.0"),
    figure="stale_routes",
)


# Found by this harness (docs/findings.md, "A partition kills a node only after it heals"), no upstream report yet:
# the GCS's health check of a raylet cut off from the head fails 5 times (10 s timeouts, 3 s apart) and declares it
# dead 10-11 s after the cut healed, when the node answers again; the raylet then exits and its pod restarts.
DEATH_AFTER_HEAL = KnownIssue(
    id="serve-chaos findings: partition-death-after-heal",
    title="a worker cut off from the head for 45 s is declared dead 10-11 s after the cut heals",
    seen_on=("2.60.0",),
    figure="node_declared_dead",
)


def leaves(verdict: Verdict) -> Iterator[Verdict]:
    """The individual checks of a combined verdict."""
    if not verdict.parts:
        yield verdict
        return
    for part in verdict.parts:
        yield from leaves(part)


def ray_version() -> str:
    """The Ray version this harness runs (the local backend's nodes run the same)."""
    try:
        return importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def expected_status(expected: Status, known_issue: KnownIssue | None, version: str) -> Status:
    """What a scenario is expected to end in: FAIL for a control, or for a known issue on a version it was seen on."""
    if known_issue is not None:
        return Status.FAIL if known_issue.applies_to(version) else Status.PASS
    return expected


def outcome(verdict: Verdict, *, expected: Status, known_issue: KnownIssue | None, ray_version: str) -> Outcome:
    """One rule for every count (the report's header, ``harness nightly``, the tests)."""
    if verdict.status is Status.UNKNOWN:
        return Outcome.UNKNOWN
    if known_issue is not None and known_issue.applies_to(ray_version):
        if verdict.status is Status.PASS:
            return Outcome.UNEXPECTED_PASS
        return Outcome.EXPECTED_FAILURE if known_issue.shown_by(verdict) else Outcome.FAILED
    if expected is Status.FAIL:  # a control
        return Outcome.EXPECTED_FAILURE if verdict.status is Status.FAIL else Outcome.UNEXPECTED_PASS
    return Outcome.PASSED if verdict.status is Status.PASS else Outcome.FAILED


def known_issue_note(known_issue: KnownIssue | None, version: str, result: Outcome) -> str:
    """What a reader needs to know about the known issue of this run, or ''."""
    if known_issue is None:
        return ""
    if not known_issue.applies_to(version):
        seen = ", ".join(known_issue.seen_on) or "an unrecorded version"
        return (f"known issue {known_issue.id} (seen on Ray {seen}) not confirmed on Ray {version}: "
                "ran as a plain scenario")
    match result:
        case Outcome.EXPECTED_FAILURE:
            return f"known issue {known_issue.label} shown on Ray {version}, as expected"
        case Outcome.UNEXPECTED_PASS:
            return (f"known issue {known_issue.id} did not show on Ray {version} (unexpected pass): "
                    "it may be fixed; drop the expectation")
        case _:
            return (f"known issue {known_issue.id} expected on Ray {version}, but the scenario "
                    f"{'failed otherwise' if result is Outcome.FAILED else 'could not tell'}")
