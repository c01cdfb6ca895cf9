"""Finding a failing schedule and its smallest form: draw from the seed, run, replay a failure, shrink it.

    result = run_schedule(cluster, report_dir / "test_random_schedule", config=config, profile=selected_profile())
    assert result.verdict is Status.PASS, result.explain()

- The profile's schedules are drawn from the seed (``draw.draw_schedules``) and run one by one, each on a
  healthy stack (``prepare`` first), until one fails.
- A failing schedule is run ``profile.replays`` more times: the result says "deterministic: failed 3 of 3
  replays" or "flaky: failed 1 of 3 replays". Only a deterministic failure is shrunk (a flaky one cannot be:
  whether a smaller schedule "still fails" would be a coin toss); the flaky one is reported as found.
- Shrinking is greedy, over the schedule's own structure, smallest candidates first: one step alone, a step
  left out, a fault left out of a step. A candidate that fails an invariant replaces the current schedule; it
  stops when no candidate fails, or after ``profile.shrink_budget_s`` (the smallest failure so far is kept).
- A schedule that fails exactly as a known issue pinned to this Ray version says is recorded as that known
  issue (not a failure) and the next schedule runs; the verdict is then a FAIL whose outcome is an expected
  failure.
- An invariant that could not be judged (a blind reading, a hole in the sends) makes its schedule UNKNOWN.

Files, under ``out_dir``: ``schedule.json`` (seed, verdict, the ORIGINAL failing schedule, its replays, the
MINIMAL one, every example run), ``examples/NNN/`` (each example's ``history.jsonl`` and ``verdict.json``)
and, copied up from the decisive example (the minimal failing one, else a known-issue one, else the last),
``history.jsonl``, ``verdict.json``, ``timeline.html`` and ``logs/``, so that the report shows it as a scenario.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from harness.known_issues import KnownIssue
from harness.records import (
    HISTORY,
    LOGS_ERROR,
    SCHEDULE,
    VERDICT,
    Replays,
    ScenarioFolder,
)
from harness.schedules.draw import draw_schedules
from harness.schedules.profiles import (
    SCENARIO,
    ScheduleBudgets,
    ScheduleProfile,
    load_schedule_budgets,
    replay_hint,
    selected_profile,
    selected_seed,
)
from harness.schedules.records import (
    ExampleOutcome,
    ExampleRecord,
    Role,
    ScheduleResult,
)
from harness.schedules.run import ScheduleContext, ScheduleRun
from harness.schedules.spec import (
    FaultSpec,
    Schedule,
    ScheduleConfig,
    as_step,
    schedule_text,
    step_problem,
)
from harness.stack.cluster import Cluster
from harness.verdict import Status


def run_schedule(cluster: Cluster, out_dir: str | Path, *, config: ScheduleConfig,
                 profile: ScheduleProfile | None = None, seed: int | str | None = None,
                 budgets: ScheduleBudgets | str | Path | None = None, known_issue: KnownIssue | None = None,
                 prepare: Callable[[Cluster], object] | None = None,
                 progress: Callable[[str], None] | None = None) -> ScheduleResult:
    """Draw the profile's schedules from the seed, run them, replay and shrink a failure; write schedule.json and
    the decisive example's files to ``out_dir``. Never raises for a failing schedule: the result says."""
    profile = profile or selected_profile()
    seed = selected_seed(seed)
    context = _context(cluster, out_dir, config, budgets, known_issue, prepare, progress)
    schedules = draw_schedules(seed, config, profile)
    context.progress(f"[{SCENARIO}] seed {seed} ({replay_hint(seed)}); profile {profile.name}: {len(schedules)} "
                     f"schedule(s) of up to {profile.max_steps} step(s) of up to {profile.max_faults_per_step} "
                     f"fault(s); a failure is replayed {profile.replays} time(s), then shrunk for at most "
                     f"{profile.shrink_budget_s:g}s; faults {', '.join(config.faults)} on "
                     f"{', '.join(config.topology.nodes)}")
    started = time.monotonic()
    examples: list[ExampleRecord] = []
    original = minimal = None
    replays: Replays | None = None
    for schedule in schedules:
        example = ScheduleRun(context, schedule, Role.GENERATED).execute()
        examples.append(example)
        if example.failed:
            original = example
            break
    if original is not None:
        again = [ScheduleRun(context, original.schedule, Role.REPLAY, original.number).execute()
                 for _ in range(profile.replays)]
        examples += again
        replays = Replays(sum(e.failed for e in again), len(again))
        context.progress(f"[{SCENARIO}] example {original.number} replayed: {replays.text()}")
        minimal = original
        if replays.deterministic:
            minimal = _shrink(context, original, profile.shrink_budget_s, examples)
    return _conclude(context, seed, profile, examples, original, minimal, replays, started)


def replay_schedule(cluster: Cluster, out_dir: str | Path, steps: Sequence[Iterable[FaultSpec]], *,
                    config: ScheduleConfig, budgets: ScheduleBudgets | str | Path | None = None,
                    known_issue: KnownIssue | None = None, prepare: Callable[[Cluster], object] | None = None,
                    progress: Callable[[str], None] | None = None) -> ScheduleResult:
    """Run one recorded schedule exactly as given (e.g. ``load_schedule(path)``): the same runner and invariants."""
    schedule: Schedule = tuple(as_step(step) for step in steps)
    context = _context(cluster, out_dir, config, budgets, known_issue, prepare, progress)
    context.progress(f"[{SCENARIO}] replaying {len(schedule)} recorded step(s): {schedule_text(schedule)}")
    started = time.monotonic()
    example = ScheduleRun(context, schedule, Role.RECORDED).execute()
    failed = example if example.failed else None
    return _conclude(context, None, None, [example], failed, failed, None, started)


def _context(cluster: Cluster, out_dir: str | Path, config: ScheduleConfig,
             budgets: ScheduleBudgets | str | Path | None, known_issue: KnownIssue | None,
             prepare: Callable[[Cluster], object] | None,
             progress: Callable[[str], None] | None) -> ScheduleContext:
    if not isinstance(budgets, ScheduleBudgets):
        budgets = load_schedule_budgets(config.faults, budgets)
    return ScheduleContext(cluster, out_dir, config=config, budgets=budgets, known_issue=known_issue,
                           prepare=prepare, progress=progress)


# --- shrinking ------------------------------------------------------------------------------------------------

def candidates(schedule: Schedule) -> Iterator[Schedule]:
    """Smaller schedules, smallest first: each step alone, each step left out, each fault left out of a step."""
    steps = list(schedule)
    found: list[Schedule] = []
    if len(steps) > 1:
        found += [(step,) for step in steps]
        found += [tuple(steps[:i] + steps[i + 1:]) for i in range(len(steps))]
    for i, step in enumerate(steps):
        if len(step) > 1:
            found += [tuple(steps[:i] + [step[:j] + step[j + 1:]] + steps[i + 1:]) for j in range(len(step))]
    yield from sorted(dict.fromkeys(found), key=lambda s: (sum(len(step) for step in s), len(s)))


def _shrink(context: ScheduleContext, original: ExampleRecord, budget_s: float,
            examples: list[ExampleRecord]) -> ExampleRecord:
    """Greedy: the first smaller candidate that fails becomes the schedule, until none does or time is up."""
    deadline = time.monotonic() + budget_s
    current = original
    tried: set[Schedule] = {original.schedule}
    topology = context.config.topology
    improved = True
    while improved:
        improved = False
        for candidate in candidates(current.schedule):
            if candidate in tried or any(step_problem(step, topology, context.config.allow_all_workers_down)
                                         for step in candidate):
                continue
            if time.monotonic() >= deadline:
                context.progress(f"[{SCENARIO}] shrinking stopped after {budget_s:g}s; smallest so far: "
                                 f"{current.schedule_text()}")
                return current
            tried.add(candidate)
            example = ScheduleRun(context, candidate, Role.SHRINK, current.number).execute()
            examples.append(example)
            if example.failed:
                current, improved = example, True
                break
    context.progress(f"[{SCENARIO}] minimal schedule: {current.schedule_text()}")
    return current


# --- the result -------------------------------------------------------------------------------------------------

def _conclude(context: ScheduleContext, seed: int | None, profile: ScheduleProfile | None,
              examples: list[ExampleRecord], original: ExampleRecord | None, minimal: ExampleRecord | None,
              replays: Replays | None, started: float) -> ScheduleResult:
    hits = tuple(e for e in examples if e.outcome is ExampleOutcome.KNOWN_ISSUE)
    unknown = [e for e in examples if e.outcome in (ExampleOutcome.UNKNOWN, ExampleOutcome.ERROR)]
    if original is not None:
        status = Status.FAIL
        reason = f"example {original.number} failed ({replays.text() if replays else 'not replayed'})"
        if minimal is not None and minimal is not original:
            reason += f"; shrunk to example {minimal.number}"
        reason += f": {(minimal or original).reason}"
    elif unknown:
        status, reason = Status.UNKNOWN, f"example {unknown[0].number} could not be judged: {unknown[0].reason}"
    elif hits:
        status = Status.FAIL
        reason = (f"{len(hits)} schedule(s) failed exactly as known issue "
                  f"{context.known_issue.id if context.known_issue else ''} says: {hits[0].reason}")
    elif not examples:
        status, reason = Status.UNKNOWN, "no schedule ran"
    else:
        status = Status.PASS
        reason = f"{len(examples)} schedule(s) of {sum(len(e.steps) for e in examples)} step(s) stayed within budget"
    result = ScheduleResult(seed, profile, status, reason, original, minimal, replays, hits, tuple(examples),
                            context.out_dir / SCHEDULE, time.monotonic() - started, context.config.topology)
    result.write()
    decisive = minimal or (hits[0] if hits else None) or (unknown[0] if unknown else None) or \
        (examples[-1] if examples else None)
    if decisive is not None:
        _publish(context, decisive)
    context.progress(result.explain())
    return result


def _publish(context: ScheduleContext, example: ExampleRecord) -> None:
    """Copy the decisive example's files up to the schedule's folder, where the report looks (the pytest plugin
    draws its timeline)."""
    source = ScenarioFolder(context.out_dir / example.folder)
    target = ScenarioFolder(context.out_dir)
    for name in (HISTORY, VERDICT, LOGS_ERROR):
        if source.file(name).is_file():
            shutil.copy2(source.file(name), target.file(name))
    if source.logs_dir.is_dir():
        shutil.copytree(source.logs_dir, target.logs_dir, dirs_exist_ok=True)
