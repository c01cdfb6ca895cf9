"""Drawing schedules: hypothesis generates them from a seed and the configuration's topology alone.

Hypothesis only DRAWS here (its generate phase, on a test body that never fails): the draws cannot depend on the
live stack, so a seed always gives the same schedules (for the same hypothesis version and configuration). The
schedules are then run, replayed and shrunk by ``harness.schedules.search``: a real stack is not deterministic,
and hypothesis's own shrinker, which replays a failure expecting it to fail the same way, turns a flaky failure
into ``Flaky``/``FlakyStrategyDefinition`` instead of a verdict.
"""

from __future__ import annotations

import hypothesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st

from harness.schedules.profiles import ScheduleProfile
from harness.schedules.spec import (
    Schedule,
    ScheduleConfig,
    as_step,
    fault_specs,
    step_problem,
)


def schedule_strategy(config: ScheduleConfig, profile: ScheduleProfile) -> st.SearchStrategy[Schedule]:
    """Schedules of 1..max_steps steps, each a meaningful set (``step_problem``) of 1..max_faults faults drawn
    mildest first. A list, not a set, of specs per step: each element is drawn on its own (a duplicate is
    dropped), so the simplest draw is one step with the mildest fault."""
    topology = config.topology
    specs = fault_specs(topology, config)
    if not specs:
        raise ValueError(f"no fault to draw from kinds {config.faults} on nodes {topology.nodes}")
    step = st.lists(st.sampled_from(specs), min_size=1, max_size=profile.max_faults_per_step).map(as_step).filter(
        lambda drawn: step_problem(drawn, topology, config.allow_all_workers_down) is None)
    return st.lists(step, min_size=1, max_size=profile.max_steps).map(tuple)


def draw_schedules(seed: int, config: ScheduleConfig, profile: ScheduleProfile) -> tuple[Schedule, ...]:
    """``profile.max_examples`` distinct schedules for ``seed`` (fewer if hypothesis finds no more); the first
    is hypothesis's simplest (the mildest fault alone)."""
    drawn: list[Schedule] = []

    @hypothesis.seed(seed)
    @hypothesis.settings(max_examples=profile.max_examples, database=None, deadline=None, derandomize=False,
                         phases=(Phase.generate,), suppress_health_check=list(HealthCheck))
    @hypothesis.given(schedule_strategy(config, profile))
    def collect(schedule: Schedule) -> None:
        drawn.append(schedule)

    collect()
    return tuple(dict.fromkeys(drawn))[: profile.max_examples]
