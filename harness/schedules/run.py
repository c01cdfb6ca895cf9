"""Running one schedule on a cluster: traffic throughout, each step's faults injected together, the invariants
judged after every step, teardown (heal every fault, LIFO, stop traffic) always.

A step: resolve each drawn target against what runs now (``resolve``, recorded), inject the faults in a fixed
order (actor faults first: they need the head's API and the proxies), wait until each has taken effect and
recovered (its probes), check the proxies' routing, then observe: time is read from the traffic, not slept.
After convergence a step lasts until every endpoint has had ``observe_s`` worth of requests sent (the step's
"cut"), and until every request sent before the cut is recorded. A step's judgement covers the requests sent
since the previous cut up to its own; what follows the last cut is judged at teardown, once traffic finished.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from harness.checkers import schedule as judge
from harness.checkers.traffic import time_to_recover
from harness.faults import HeldFault
from harness.history import EventKind, FaultEvent
from harness.identity import identities
from harness.measures import (
    RETRY_3X_EXPONENTIAL,
    observed_resolution,
    outage_windows,
    served,
)
from harness.records import Figure, ScenarioResult
from harness.routing import routing_verdict
from harness.scenario import ScenarioRun
from harness.schedules.context import (
    KnownIssueShown,
    NotJudged,
    ScheduleContext,
    ScheduleViolation,
    StepState,
)
from harness.schedules.observe import TrafficWatch
from harness.schedules.profiles import SCENARIO
from harness.schedules.records import (
    EXAMPLES_DIR,
    ExampleOutcome,
    ExampleRecord,
    Role,
    Step,
)
from harness.schedules.spec import (
    FaultSpec,
    Schedule,
    as_step,
    serving_nodes,
    step_problem,
)
from harness.schedules.targets import fault_of, resolve
from harness.stack.cluster import Endpoint, StackStatus
from harness.traffic import PidBody
from harness.verdict import Status, Verdict, explain
from harness.waiting import WaitTimeout, observation_window, wait_until


class ScheduleRun:
    """One schedule on the cluster, start to teardown; ``run`` gives its ExampleRecord and never raises for a
    failing schedule."""

    def __init__(self, context: ScheduleContext, schedule: Schedule, role: Role, of: int | None = None) -> None:
        self.context = context
        self.schedule = schedule
        self.role = role
        self.of = of
        self.number = context.next_number()
        self.folder = Path(EXAMPLES_DIR) / f"{self.number:03d}"
        self.run: ScenarioRun | None = None
        self.before: StackStatus | None = None
        self.labels: tuple[str, ...] = ()  # endpoint labels traffic goes to
        self.node_of: dict[str, str] = {}  # label -> node
        self.states: list[StepState] = []
        self.judged_until = -math.inf  # requests sent before this are judged
        self.tail: Verdict | None = None
        self.traffic_t0 = time.monotonic()
        self._watch: TrafficWatch | None = None

    @property
    def watch(self) -> TrafficWatch:
        assert self._watch is not None, "the schedule's traffic was not started"
        return self._watch

    # --- the whole schedule ---------------------------------------------------------------------------
    def execute(self) -> ExampleRecord:
        context = self.context
        context.progress(f"[{SCENARIO} #{self.number}] {self.role}"
                         f"{f' of #{self.of}' if self.of else ''}: " + "; ".join(
                             f"step {i}: {' + '.join(map(str, s))}" for i, s in enumerate(self.schedule, 1)))
        failure: BaseException | None = None
        try:
            try:
                self.start()
                for drawn in self.schedule:
                    self.step(drawn)
                    self.judge_recovery()
                    self.judge_traffic()
            finally:
                self.teardown(sys.exc_info()[1])
        except Exception as exc:  # noqa: BLE001 - how a schedule ended is its record
            failure = exc
        outcome, reason = self.outcome(failure)
        return self.finish(outcome, reason)

    # --- steps ------------------------------------------------------------------------------------------
    def start(self) -> None:
        context = self.context
        cluster = context.cluster
        run = ScenarioRun(f"{SCENARIO} #{self.number}", cluster, context.out_dir / self.folder,
                          context.budgets.traffic, allowed_networks=cluster.allowed_networks(), check=PidBody(),
                          progress=context.progress, max_traffic_s=context.traffic_cap_s(len(self.schedule)))
        self.run = run
        with run.phase("arrange"):
            context.prepare(cluster)
            self.before = run.arrange(context.config.healthy_timeout_s)
        with run.phase("traffic"):
            endpoints = self._endpoints()
            self._watch = TrafficWatch(run.history_path, self.labels, context.settle_s,
                                       context.budgets.traffic.rate_per_endpoint)
            run.start_traffic(endpoints)
            assert run.traffic is not None
            self.traffic_t0 = run.traffic.started_mono or time.monotonic()
            wait_until("baseline traffic recorded on every endpoint", lambda: self.watch.sent_since(-math.inf, 1),
                       timeout_s=context.observe_timeout_s(context.budgets.traffic),
                       interval_s=context.config.poll_interval_s)

    def _endpoints(self) -> list[Endpoint]:
        cluster, config = self.context.cluster, self.context.config
        endpoints = list(cluster.endpoints())
        health = cluster.app().health
        if "FailHealthCheck" in config.faults and health is not None and not health.beside:
            # its app is measured too (the harness's own toggle app beside a user's answers another body)
            endpoints += [Endpoint(f"{e.node}{health.route}", e.url) for e in cluster.endpoints(route=health.route)]
        nodes = {e.node for e in cluster.endpoints()}
        self.labels = tuple(e.node for e in endpoints)
        self.node_of = {label: next((n for n in nodes if label == n or label.startswith(n + "/")), label)
                        for label in self.labels}
        return endpoints

    def step(self, drawn: Sequence[FaultSpec]) -> None:
        context, run = self.context, self.run
        assert run is not None, "the schedule's traffic was not started"
        drawn = as_step(drawn)
        if problem := step_problem(drawn, context.config.topology, context.config.allow_all_workers_down):
            raise ValueError(f"not a meaningful step {[str(s) for s in drawn]}: {problem}")
        resolved = resolve(drawn, context.cluster, context.config)
        specs = tuple(spec for spec, _ in resolved)
        notes = tuple(note for _, note in resolved if note)
        nodes = set(serving_nodes(specs, tuple(dict.fromkeys(self.node_of.values()))))
        faults = tuple(fault_of(spec, context.cluster, context.config) for spec in specs)
        for spec, fault in zip(specs, faults):
            if isinstance(fault, HeldFault):
                fault.hold_s = context.budgets.faults[spec.fault].hold_s  # its scenario's budget says how long
        state = StepState(len(self.states) + 1, drawn, specs, notes, faults,
                          tuple(label for label in self.labels if self.node_of[label] in nodes),
                          context.budgets.for_step(s.fault for s in specs), start=time.monotonic())
        self.states.append(state)
        for note in notes:
            run.writer.note(note, name=SCENARIO, target=f"step {state.index}")
        with run.phase(f"step {state.index}: {' + '.join(map(str, specs))}"):
            state.start = time.monotonic()
            for fault in state.faults:
                run.inject(fault)
            self._await(state, "taken_effect", state.budget.confirm_s)
            held = [f for f in state.faults if isinstance(f, HeldFault)]
            if held:  # held as long as the longest of them, then ended together
                observation_window(f"step {state.index}'s held faults", max(f.hold_s for f in held))
                for fault in held:
                    run.heal(fault)
            limit = 1.25 * state.budget.max_recovery_s + context.config.recovery_grace_s
            converged = self._await(state, "recovered", limit - (time.monotonic() - state.start))
            state.converged = time.monotonic()
            if converged and context.config.check_routing:
                state.routing = routing_verdict(context.cluster, "routing_converged", context.config.routing_timeout_s)
                run.writer.note(f"{state.routing.status}: {state.routing.reason}", name="routing",
                                target=f"step {state.index}")
            state.cut = self._observe(state)
            state.end = time.monotonic()

    def _observe(self, state: StepState) -> float:
        """Traffic past convergence: until every endpoint had ``observe_s`` worth of sends (the cut) and every
        request sent before the cut is recorded. Returns the cut (on a timeout: as far as traffic got)."""
        budget, run = state.budget, self.run
        assert run is not None
        count = max(1, math.ceil(budget.observe_s * budget.rate_per_endpoint))

        def observed() -> float | None:
            cut = self.watch.sent_since(state.converged, count)
            return cut + 1e-6 if cut is not None and self.watch.recorded_before(cut + 1e-6) else None

        try:
            return wait_until(f"{count} requests on every endpoint past step {state.index}'s convergence, recorded",
                              observed, timeout_s=self.context.observe_timeout_s(budget),
                              interval_s=self.context.config.poll_interval_s)
        except WaitTimeout as exc:
            run.writer.note(str(exc), name=SCENARIO, target=f"step {state.index}")
            run.progress(f"[{run.name}] {exc}")
            return max(state.converged, time.monotonic() - self.context.settle_s)

    def _await(self, state: StepState, probe: str, timeout_s: float) -> bool:
        """Ask every fault's ``probe`` until all say yes at once, or ``timeout_s``. A fault's TAKEN_EFFECT event
        is written when it first says yes; its RECOVERED event carries the time since when it has said yes
        (its last turn from no to yes). A miss is noted in the history and judged by the invariants."""
        run = self.run
        assert run is not None
        faults = state.faults
        kind = EventKind.TAKEN_EFFECT if probe == "taken_effect" else EventKind.RECOVERED
        seen: set[int] = set()
        since: dict[int, tuple[float, float]] = {}
        last: dict[int, str] = {}

        def every_fault() -> bool:
            done = True
            for i, fault in enumerate(faults):
                if kind is EventKind.TAKEN_EFFECT and i in seen:
                    continue
                try:
                    ok = bool(getattr(fault, probe)())
                    last[i] = "yes" if ok else "not yet"
                except Exception as exc:  # noqa: BLE001 - a failing probe is "not yet", and is reported
                    ok, last[i] = False, f"{type(exc).__name__}: {exc}"
                if not ok:
                    since.pop(i, None)
                    done = False
                elif kind is EventKind.TAKEN_EFFECT:
                    seen.add(i)
                    run.writer.event(kind, fault.name, fault.target)
                else:
                    since.setdefault(i, (time.monotonic(), time.time()))
            return done

        what = f"step {state.index}'s faults to {'take effect' if probe == 'taken_effect' else 'recover'}"
        try:
            wait_until(what, every_fault, timeout_s=max(timeout_s, self.context.config.probe_interval_s),
                       interval_s=self.context.config.probe_interval_s,
                       describe=lambda: "; ".join(f"{faults[i].name}@{faults[i].target}: {m}" for i, m in last.items()))
            ok = True
        except WaitTimeout as exc:
            run.writer.note(str(exc), name=SCENARIO, target=f"step {state.index}")
            run.progress(f"[{run.name}] {exc}")
            ok = False
        if kind is EventKind.RECOVERED:
            for i, (mono, wall) in sorted(since.items()):
                fault = faults[i]
                run.writer.append(FaultEvent(mono, wall, kind, fault.name, fault.target, "; ".join(fault.findings)))
        return ok

    # --- the invariants -------------------------------------------------------------------------------
    def _judgeable(self, attribute: str) -> StepState | None:
        state = self.states[-1] if self.states else None
        if state is None or math.isnan(state.end) or getattr(state, attribute) is not None:
            return None
        return state

    def judge_recovery(self) -> None:
        state = self._judgeable("recovery")
        if state is None:
            return
        assert self.run is not None
        window = self.run.history().between(state.start, state.end + 1e-6)
        state.recovery = judge.recovery_verdict(window, state.budget, state.routing)
        self._raise_unless_passed(state, state.recovery)

    def judge_traffic(self) -> None:
        state = self._judgeable("traffic")
        if state is None:
            return
        assert self.run is not None
        until = max(self.judged_until, state.cut)
        state.traffic = judge.traffic_verdict(self.run.history(), self.states, self.labels, state,
                                              self.judged_until, until)
        self.judged_until = until
        self._raise_unless_passed(state, state.traffic)

    def _raise_unless_passed(self, state: StepState, verdict: Verdict) -> None:
        if verdict.status is Status.PASS:
            return
        issue = self.context.known_issue
        step = state.verdict()
        if verdict.status is Status.UNKNOWN:
            raise NotJudged(f"{step.name}: {step.reason}")
        if issue is not None and self.run is not None and issue.applies_to(self.run.ray_version) \
                and issue.shown_by(verdict):
            raise KnownIssueShown(f"{step.name}: {step.reason}")
        raise ScheduleViolation(f"{step.name}: {step.reason}")

    # --- teardown and the record ------------------------------------------------------------------------
    def teardown(self, in_flight: BaseException | None) -> None:
        run = self.run
        cleanup_error: Exception | None = None
        try:
            if run is not None and in_flight is None:
                run.stop_traffic()  # requests in flight finish: the history is complete
                if self.states and (history := run.history()).requests:
                    self.tail = judge.traffic_verdict(history, self.states, self.labels, self.states[-1],
                                                      self.judged_until, math.inf, name="traffic_after_the_last_step")
                    self.judged_until = math.inf
        finally:
            if run is not None:
                try:
                    run.close()  # heals every fault (LIFO) and stops traffic, even after a failure
                except Exception as exc:  # noqa: BLE001 - reported without hiding a failure in flight
                    cleanup_error = exc
        if self.tail is not None and self.tail.status is Status.UNKNOWN:
            raise NotJudged(f"{self.tail.name}: {explain(self.tail)}")
        if self.tail is not None and self.tail.status is not Status.PASS:
            raise ScheduleViolation(f"{self.tail.name}: {explain(self.tail)}")
        if cleanup_error is not None and in_flight is None:
            raise cleanup_error

    def outcome(self, failure: BaseException | None) -> tuple[ExampleOutcome, str]:
        if isinstance(failure, KnownIssueShown):
            return ExampleOutcome.KNOWN_ISSUE, str(failure)
        if isinstance(failure, ScheduleViolation):
            return ExampleOutcome.FAIL, str(failure)
        if isinstance(failure, NotJudged):
            return ExampleOutcome.UNKNOWN, str(failure)
        if failure is not None:
            return ExampleOutcome.ERROR, f"{type(failure).__name__}: {failure}"
        return ExampleOutcome.PASS, f"{len(self.states)} step(s) within budget"

    def finish(self, outcome: ExampleOutcome, reason: str) -> ExampleRecord:
        steps = tuple(self._record(state) for state in self.states)
        example = ExampleRecord(self.number, self.folder.as_posix(), self.role, self.schedule, steps, outcome, reason,
                                self.of)
        if self.run is not None:
            self._write_verdict(outcome, reason)
            if outcome is not ExampleOutcome.PASS:
                self.run.collect_diagnostics()
        self.context.progress(f"[{SCENARIO} #{self.number}] {outcome}: {example.schedule_text()}"
                              + ("" if outcome is ExampleOutcome.PASS else f" -- {reason}"))
        return example

    def _record(self, state: StepState) -> Step:
        verdict = state.verdict()
        figures = {k: v for k, v in verdict.figures.items()
                   if k in (Figure.AVAILABILITY, Figure.LONGEST_OUTAGE, Figure.TIME_TO_RECOVER, Figure.REQUESTS,
                            Figure.FAILURES)}
        return Step(state.index, state.drawn, state.serving, state.start - self.traffic_t0,
                    (state.end if not math.isnan(state.end) else time.monotonic()) - state.start,
                    verdict.status if state.recovery and state.traffic else
                    (Status.FAIL if verdict.status is Status.FAIL else Status.UNKNOWN), verdict.reason, figures,
                    state.specs, state.resolutions)

    def example_verdict(self, outcome: ExampleOutcome, reason: str) -> Verdict:
        assert self.run is not None
        parts = [state.verdict() for state in self.states]
        if self.tail is not None:
            parts.append(self.tail)
        figures: dict[str, float] = {}
        resolution = None
        try:
            history = self.run.history()
            judged = judge.kept(history, self.states, self.labels, -math.inf, math.inf) if self.states else history
            seen = [r for r in judged.requests if r.observed]
            ok = sum(r.ok for r in seen)
            figures = {Figure.REQUESTS.value: len(judged.requests), Figure.FAILURES.value: len(seen) - ok}
            if seen:
                figures[Figure.AVAILABILITY] = ok / len(seen)
                # as a client retrying like Ray recommends would have seen it: reported, not budgeted
                figures[Figure.AVAILABILITY_WITH_RETRIES] = \
                    sum(served(seen, RETRY_3X_EXPONENTIAL)) / len(seen)
            figures[Figure.LONGEST_OUTAGE] = max((w.duration_s for w in outage_windows(judged)), default=0.0)
            recoveries = time_to_recover(history, max_s=math.inf).figures
            if Figure.TIME_TO_RECOVER in recoveries:
                figures[Figure.TIME_TO_RECOVER] = recoveries[Figure.TIME_TO_RECOVER]
            resolution = observed_resolution(history.between(self.states[0].start, math.inf)) if self.states \
                else observed_resolution(history)
        except Exception as exc:  # noqa: BLE001 - the verdict is written even from a damaged history
            reason += f" (figures unavailable: {exc})"
        status = {ExampleOutcome.PASS: Status.PASS, ExampleOutcome.FAIL: Status.FAIL,
                  ExampleOutcome.KNOWN_ISSUE: Status.FAIL}.get(outcome, Status.UNKNOWN)
        if status is Status.PASS and not parts:
            reason = "no step ran: traffic only"
        return Verdict(SCENARIO, status, reason, figures, resolution, tuple(parts))

    def _write_verdict(self, outcome: ExampleOutcome, reason: str) -> None:
        run = self.run
        assert run is not None
        verdict = self.example_verdict(outcome, reason)
        try:
            after = self.context.cluster.status()
            rows = identities(self.before, after) if self.before is not None else ()
        except Exception:  # noqa: BLE001 - no identities rather than no verdict
            rows = ()
        budget = self.context.budgets.for_step(s.fault for state in self.states for s in state.specs)
        # a schedule may hit a known issue, not expect it: its verdict carries the issue only when it showed
        issue = self.context.known_issue if outcome is ExampleOutcome.KNOWN_ISSUE else None
        result = ScenarioResult(SCENARIO, self.context.cluster.run_id, verdict, budget, self.labels, rows,
                                tuple(f for state in self.states for fault in state.faults for f in fault.findings),
                                tuple(run.phases), run.expected, issue, run.ray_version)
        run.folder.write_result(result)


__all__ = ["KnownIssueShown", "NotJudged", "ScheduleContext", "ScheduleRun", "ScheduleViolation"]
