"""Random fault schedules: drawn by hypothesis from a seed and the stack's configuration, run on a Cluster with
traffic throughout, judged after every step, replayed when they fail (deterministic or flaky) and shrunk to the
smallest schedule that still fails. See docs/random-schedules.md.

- ``spec``: fault specs, the topology (from the configuration), what a step may be;
- ``profiles``: profiles, seeds, each step's budget;
- ``draw``: hypothesis draws the schedules (and only draws);
- ``judge``: the invariants as pure checks of a History and the steps' windows;
- ``run``: one schedule on a cluster (resolution of drawn targets, injection, waits, teardown);
- ``search``: run, replay, shrink; ``records``: what it leaves, ``schedule.json``.
"""

from harness.records import Replays
from harness.schedules.profiles import (
    PROFILE_ENV,
    PROFILES,
    REPLAY_ENV,
    SCENARIO,
    SEED_ENV,
    ScheduleBudgets,
    ScheduleProfile,
    load_schedule_budgets,
    selected_profile,
    selected_seed,
)
from harness.schedules.records import (
    ExampleOutcome,
    ExampleRecord,
    Role,
    ScheduleResult,
    Step,
    load_schedule,
)
from harness.schedules.run import ScheduleViolation
from harness.schedules.search import candidates, replay_schedule, run_schedule
from harness.schedules.spec import (
    FAULT_KINDS,
    HELD_FAULT_KINDS,
    SEED_FAULT_KINDS,
    FaultSpec,
    ScheduleConfig,
    Topology,
    fault_specs,
    step_problem,
)

__all__ = [
    "FAULT_KINDS",
    "HELD_FAULT_KINDS",
    "PROFILES",
    "PROFILE_ENV",
    "REPLAY_ENV",
    "SCENARIO",
    "SEED_ENV",
    "SEED_FAULT_KINDS",
    "ExampleOutcome",
    "ExampleRecord",
    "FaultSpec",
    "Replays",
    "Role",
    "ScheduleBudgets",
    "ScheduleConfig",
    "ScheduleProfile",
    "ScheduleResult",
    "ScheduleViolation",
    "Step",
    "Topology",
    "candidates",
    "fault_specs",
    "load_schedule",
    "load_schedule_budgets",
    "replay_schedule",
    "run_schedule",
    "selected_profile",
    "selected_seed",
    "step_problem",
]
