"""Profiles (how many schedules, how long, how many replays of a failure, how long to shrink), seeds, and each
step's budget composed of its faults' seed-scenario budgets."""

from __future__ import annotations

import dataclasses
import os
import secrets
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.records import DEFAULT_BUDGETS, Budget, load_budget
from harness.schedules.spec import FAULT_BUDGET_TABLES

SCENARIO = "random_schedule"
PROFILE_ENV = "SERVE_CHAOS_SCHEDULE_PROFILE"
SEED_ENV = "SERVE_CHAOS_SCHEDULE_SEED"
REPLAY_ENV = "SERVE_CHAOS_SCHEDULE_REPLAY"  # a schedule.json whose minimal schedule the scenario replays
TRAFFIC_KEYS = ("rate_per_endpoint", "timeout_s", "baseline_s", "observe_s", "confirm_s")


@dataclass(frozen=True)
class ScheduleProfile:
    name: str
    max_examples: int  # schedules drawn and run
    max_steps: int  # steps per schedule
    max_faults_per_step: int
    replays: int  # a failing schedule is run this many more times before shrinking: deterministic or flaky
    shrink_budget_s: float  # shrinking stops after this long and reports the smallest failure so far
    held_faults: bool = False  # draw from the faults beyond the guide (a freeze, a partition, a slow link) too


PROFILES: Mapping[str, ScheduleProfile] = {
    # make test: two schedules of at most two steps of at most two faults (the first is the simplest: the mildest
    # fault alone); a failure is replayed twice, then shrunk for at most 4 minutes
    "short": ScheduleProfile("short", max_examples=2, max_steps=2, max_faults_per_step=2, replays=2,
                             shrink_budget_s=240.0),
    # nightly: ten schedules of up to six steps of up to three faults; a failure is replayed three times, then
    # shrunk for at most an hour
    "nightly": ScheduleProfile("nightly", max_examples=10, max_steps=6, max_faults_per_step=3, replays=3,
                               shrink_budget_s=3600.0),
    # make nightly-beyond: the guide's faults and those beyond it (held faults: a freeze, a partition, a slow link)
    "beyond": ScheduleProfile("beyond", max_examples=6, max_steps=4, max_faults_per_step=2, replays=2,
                              shrink_budget_s=1800.0, held_faults=True),
}


def selected_profile(name: str | None = None) -> ScheduleProfile:
    """``name``, else ``$SERVE_CHAOS_SCHEDULE_PROFILE``, else ``short``."""
    name = name or os.environ.get(PROFILE_ENV) or "short"
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"no schedule profile {name!r} ({PROFILE_ENV}); profiles: {', '.join(PROFILES)}") from None


def selected_seed(value: int | str | None = None) -> int:
    """``value``, else ``$SERVE_CHAOS_SCHEDULE_SEED``, else a fresh random seed."""
    if value is None or value == "":
        value = os.environ.get(SEED_ENV) or None
    if value is None:
        return secrets.randbits(32)
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"a schedule seed is an integer, not {value!r} ({SEED_ENV})") from None


def replay_hint(seed: int | None) -> str:
    if seed is None:
        return "a replay of a recorded schedule"
    return f"replay with {SEED_ENV}={seed} (the same stack configuration draws the same schedules)"


@dataclass(frozen=True)
class ScheduleBudgets:
    traffic: Budget  # traffic settings; its other fields are the composition over every kind
    faults: Mapping[str, Budget]  # each kind's seed-scenario budget

    def for_step(self, kinds: Iterable[str]) -> Budget:
        """The budget of a step injecting these kinds together: the least availability, the longest outage and
        recovery, the longest confirmation any of them allows."""
        chosen = [self.faults[k] for k in dict.fromkeys(kinds)]
        if not chosen:
            return self.traffic
        return dataclasses.replace(
            self.traffic,
            min_availability=min(b.min_availability for b in chosen),
            max_outage_s=max(b.max_outage_s for b in chosen),
            max_recovery_s=max(b.max_recovery_s for b in chosen),
            confirm_s=max(b.confirm_s for b in chosen),
        )


def load_schedule_budgets(kinds: Iterable[str], path: str | Path | None = None) -> ScheduleBudgets:
    """Each kind's budget from its seed scenario's table; traffic settings from [defaults] and [random_schedule]."""
    path = Path(path) if path else DEFAULT_BUDGETS
    kinds = tuple(dict.fromkeys(kinds))
    faults = {k: load_budget(FAULT_BUDGET_TABLES[k], path) for k in kinds}
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    own = data.get(SCENARIO, {})
    if extra := sorted(set(own) - set(TRAFFIC_KEYS)):
        raise ValueError(f"[{SCENARIO}] in {path}: only traffic settings ({', '.join(TRAFFIC_KEYS)}) belong there, "
                         f"not {extra}: a step's budget comes from its faults' own tables")
    merged = {**data.get("defaults", {}), **own}
    base = Budget(min_availability=1.0, max_outage_s=0.0, max_recovery_s=0.0,
                  **{k: merged[k] for k in TRAFFIC_KEYS if k in merged})
    return ScheduleBudgets(ScheduleBudgets(base, faults).for_step(kinds), faults)
