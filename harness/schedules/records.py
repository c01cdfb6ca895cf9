"""What a run of schedules leaves: each step and example as it ran, the result, and ``schedule.json``."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from harness.records import Replays, flaky_failure
from harness.schedules.profiles import SCENARIO, ScheduleProfile, replay_hint
from harness.schedules.spec import FaultSpec, Schedule, Topology, schedule_text
from harness.verdict import Status

EXAMPLES_DIR = "examples"


class ExampleOutcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"  # an invariant broke
    KNOWN_ISSUE = "known_issue"  # an invariant broke exactly as a known issue pinned to this Ray version says
    UNKNOWN = "unknown"  # an invariant could not be judged (a blind reading, a hole in the sends)
    ERROR = "error"  # an exception: the schedule could not run


class Role(StrEnum):
    GENERATED = "generated"  # drawn from the seed
    REPLAY = "replay"  # a failing schedule run again, to tell deterministic from flaky
    SHRINK = "shrink"  # a smaller schedule tried while shrinking
    RECORDED = "recorded"  # a recorded schedule replayed as given


@dataclass(frozen=True)
class Step:
    """One step as it executed: the faults as drawn (what a replay injects again), the faults as injected
    (targets resolved at run time, with why), the endpoints that had to keep serving, and its judgement."""

    index: int
    faults: tuple[FaultSpec, ...]  # as drawn
    serving: tuple[str, ...]
    started_s: float  # since the example's traffic started
    seconds: float = 0.0
    status: Status = Status.UNKNOWN  # until both invariants judged it
    reason: str = "not judged"
    figures: Mapping[str, float] = field(default_factory=dict)
    injected: tuple[FaultSpec, ...] = ()  # as resolved and injected
    resolutions: tuple[str, ...] = ()  # why a drawn target was resolved to another (e.g. it was gone)

    @property
    def title(self) -> str:
        return " + ".join(str(f) for f in self.faults)

    def to_json(self) -> dict:
        return {"index": self.index, "faults": [f.to_json() for f in self.faults],
                "injected": [f.to_json() for f in self.injected], "resolutions": list(self.resolutions),
                "serving": list(self.serving), "started_s": round(self.started_s, 3), "seconds": round(self.seconds, 3),
                "status": str(self.status), "reason": self.reason, "figures": dict(self.figures)}

    @classmethod
    def from_json(cls, obj: Mapping) -> Step:
        return cls(int(obj["index"]), tuple(FaultSpec.from_json(f) for f in obj["faults"]),
                   tuple(obj.get("serving", ())), float(obj.get("started_s", 0.0)), float(obj.get("seconds", 0.0)),
                   Status(obj.get("status", Status.UNKNOWN)), str(obj.get("reason", "")),
                   {str(k): float(v) for k, v in (obj.get("figures") or {}).items()},
                   tuple(FaultSpec.from_json(f) for f in obj.get("injected") or ()),
                   tuple(str(r) for r in obj.get("resolutions") or ()))


@dataclass(frozen=True)
class ExampleRecord:
    """One schedule as it ran (an "example"): why it ran, its steps and how it ended."""

    number: int
    folder: str  # relative to the schedule's folder
    role: Role
    schedule: Schedule  # as drawn or given
    steps: tuple[Step, ...]  # the steps that ran
    outcome: ExampleOutcome
    reason: str
    of: int | None = None  # the example a replay or a shrink candidate derives from

    @property
    def failed(self) -> bool:
        return self.outcome is ExampleOutcome.FAIL

    def schedule_text(self) -> str:
        return schedule_text(self.schedule)

    def to_json(self) -> dict:
        return {"example": self.number, "folder": self.folder, "role": str(self.role), "of": self.of,
                "outcome": str(self.outcome), "reason": self.reason,
                "schedule": [[f.to_json() for f in step] for step in self.schedule],
                "steps": [s.to_json() for s in self.steps]}


@dataclass(frozen=True)
class ScheduleResult:
    """What a run of schedules found; ``schedule.json`` holds the same."""

    seed: int | None  # None for a replay of a recorded schedule
    profile: ScheduleProfile | None
    verdict: Status
    reason: str
    original: ExampleRecord | None  # the first failing schedule
    minimal: ExampleRecord | None  # the smallest schedule shrinking found that still fails
    replays: Replays | None  # how the original did when run again
    known_issue_hits: tuple[ExampleRecord, ...]  # schedules that failed exactly as a pinned known issue says
    examples: tuple[ExampleRecord, ...]
    path: Path  # schedule.json
    seconds: float
    topology: Topology

    @property
    def flaky(self) -> bool:
        """A schedule failed and every replay of it passed: reported as found (it is not shrunk), never a pass."""
        return flaky_failure(self.original is not None, self.replays)

    def explain(self) -> str:
        text = [f"random schedule {self.verdict}: {self.reason}", f"seed {self.seed} ({replay_hint(self.seed)})"]
        if self.original is not None:
            text.append(f"original schedule (example {self.original.number}): {self.original.schedule_text()}")
            if self.replays is not None:
                text.append(f"replays: {self.replays.text()}")
        if self.minimal is not None:
            text.append(f"minimal schedule (example {self.minimal.number}): {self.minimal.schedule_text()}")
            text.append(f"why: {self.minimal.reason}")
        for hit in self.known_issue_hits:
            text.append(f"known issue (example {hit.number}): {hit.schedule_text()}: {hit.reason}")
        text.append(f"schedule file: {self.path}")
        return "\n".join(text)

    def to_json(self) -> dict:
        def steps(example: ExampleRecord | None) -> list | None:
            return None if example is None else [s.to_json() for s in example.steps]

        return {
            "scenario": SCENARIO, "seed": self.seed, "verdict": str(self.verdict), "reason": self.reason,
            "original": steps(self.original), "minimal": steps(self.minimal),
            "original_example": self.original.number if self.original else None,
            "minimal_example": self.minimal.number if self.minimal else None,
            "minimal_reason": self.minimal.reason if self.minimal else None,
            "replays": dataclasses.asdict(self.replays) | {"text": self.replays.text()} if self.replays else None,
            "known_issue_examples": [e.number for e in self.known_issue_hits],
            "replay": {"seed": replay_hint(self.seed)},
            "profile": dataclasses.asdict(self.profile) if self.profile else None,
            "topology": {"head": self.topology.head, "workers": list(self.topology.workers)},
            "seconds": round(self.seconds, 3),
            "examples": [e.to_json() for e in self.examples],
        }

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.to_json(), indent=2, default=str))


def load_schedule(path: str | Path, which: str = "minimal") -> Schedule:
    """The steps (as drawn) of the ``minimal`` (or ``original``) schedule of a schedule.json, for a replay."""
    data = json.loads(Path(path).read_text())
    steps = data.get(which)
    if steps is None:
        raise ValueError(f"{path} has no {which} schedule (verdict {data.get('verdict')})")
    return tuple(Step.from_json(s).faults for s in steps)
