"""A scenario run: the guide's procedure as named phases, with one History and one verdict file.

    run = ScenarioRun("head_failure", cluster, out_dir, budget)
    with run.phase("arrange"): before = run.arrange()
    with run.phase("traffic"): run.start_traffic(endpoints)
    with run.phase("inject"): run.inject(fault)          # its heal() is registered first
    with run.phase("confirm"): run.confirm(fault)        # the fault really took effect
    with run.phase("recover"): run.recover(fault)        # identity evidence says it is back
    with run.phase("observe"): run.observe()             # traffic past recovery
    with run.phase("verdict"): verdict = run.finish([...checks...], before, after)
    run.close()                                           # heals and stops everything, LIFO

Everything a reviewer needs lands in ``out_dir``: ``history.jsonl``, ``verdict.json`` and, when the
verdict is not a pass, ``logs/`` (node logs, Ray logs, the stack's status and events).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.checkers.faults import fault_took_effect, traffic_coverage
from harness.checkers.traffic import availability, longest_outage, time_to_recover
from harness.faults import Fault, HeldFault
from harness.history import EventKind, History, HistoryWriter
from harness.identity import identities
from harness.known_issues import KnownIssue
from harness.known_issues import ray_version as current_ray_version
from harness.measures import RETRY_3X_EXPONENTIAL
from harness.records import (
    LOGS_ERROR,
    WITH_RETRIES,
    Budget,
    PhaseTiming,
    ScenarioFolder,
    ScenarioResult,
)
from harness.stack.app import AppUnderTest
from harness.stack.cluster import Cluster, Endpoint, StackStatus
from harness.stack.config import RequestConfig
from harness.stack.health import answers
from harness.traffic import ResponseCheck, Traffic, response_check
from harness.verdict import Status, Verdict, combine, explain
from harness.waiting import WaitTimeout, observation_window, wait_until

# How often the fault's probes are asked. Each probe reads the head's API (a status is three requests to the
# dashboard, which shares the head node's CPU with its proxy and replicas, the latter at Ray's worker niceness
# 15): polling it four times a second starved the head's proxy into timeouts on this 2-core machine. The
# detection and recovery times are stated at these resolutions.
CONFIRM_INTERVAL_S = 0.25
RECOVER_INTERVAL_S = 1.0
BEFORE, AFTER = "before", "after"  # the snapshots' labels in the history
FOLLOW_UP = "follow-up"  # the detail of a follow-up fault's INJECT event
# the stack's events that say how an injection reached the cluster (the fault agent, or a one-shot driver where
# it was down): each one the injection caused is noted in the scenario's history, with its delay
DRIVER_EVENTS = ("agent_fallback", "actor_killed", "actor_kill_failed")


def split_endpoints(labels: Iterable[str], targets: set[str]) -> tuple[list[str], list[str]]:
    """Endpoint labels split into serving and faulted: an endpoint is faulted when its node is a fault's target
    (a label is a node, or ``<node><route>`` for a second route, e.g. ``worker3/health``)."""
    labels = sorted(set(labels))
    faulted = [label for label in labels if label.split("/", 1)[0] in targets]
    return [label for label in labels if label not in faulted], faulted


class ScenarioRun:
    def __init__(self, name: str, cluster: Cluster, out_dir: str | Path, budget: Budget, *,
                 allowed_networks: Sequence[str] = (), check: ResponseCheck | None = None,
                 expected: Status = Status.PASS,
                 progress: Callable[[str], None] | None = None, max_traffic_s: float = 900.0,
                 known_issue: KnownIssue | None = None, ray_version: str | None = None):
        self.name = name
        self.cluster = cluster
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.folder = ScenarioFolder(self.out_dir)
        self.budget = budget
        self.allowed_networks = tuple(allowed_networks)
        self.app = cluster.app()
        self.check = check if check is not None else response_check(self.app.check)
        self.request = self.app.request
        self.max_traffic_s = max_traffic_s
        self.known_issue = known_issue
        self.ray_version = ray_version or current_ray_version()
        self.expected = expected  # a control's; a known issue's expectation follows from its versions
        self.history_path = self.folder.history_path
        self.history_path.unlink(missing_ok=True)
        self.writer = HistoryWriter(self.history_path)
        self.progress = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.traffic: Traffic | None = None
        self.faults: list[Fault] = []
        self.follow_up_at: float | None = None  # monotonic: the first follow-up fault's injection
        self.phases: list[PhaseTiming] = []
        self._cleanups: list[tuple[str, Callable[[], object]]] = []
        self._t0 = time.monotonic()

    # --- phases ---------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        self.writer.event(EventKind.PHASE, name, self.name)
        step = _allure_step(f"{name}")
        outcome = "failed"
        try:
            with step:
                yield
            outcome = "ok"
        finally:
            seconds = time.monotonic() - start
            self.phases.append(PhaseTiming(name, start, seconds, outcome))
            self.progress(f"[{self.name}] {time.monotonic() - self._t0:6.1f}s {name} {outcome} in {seconds:.1f}s"
                          f"{self._counts()}")  # one line per phase, when it ends

    def _counts(self) -> str:
        if self.traffic is None:
            return ""
        serving, faulted = split_endpoints([e.node for e in self.traffic.plan.endpoints], {f.target for f in self.faults})
        c = self.traffic.counts(serving)
        parts = [f"serving ok {c.ok} fail {c.failed}"]
        for node in faulted:
            f = self.traffic.counts([node])
            parts.append(f"{node} (faulted) ok {f.ok} fail {f.failed}")
        return " · " + " · ".join(parts)

    def add_cleanup(self, what: str, fn: Callable[[], object]) -> None:
        self._cleanups.append((what, fn))

    def arrange(self, timeout_s: float | None = None) -> StackStatus:
        """The stack is healthy before anything is counted; the 'before' snapshot goes into the history."""
        before = self.cluster.wait_healthy(timeout_s)
        self.writer.snapshot(BEFORE, before)
        return before

    def snapshot_after(self, timeout_s: float = 30.0) -> StackStatus:
        """The 'after' snapshot, taken when the Serve API answers (a blind one would judge nothing), into the
        history."""
        last: list[StackStatus] = []

        def probe() -> StackStatus | None:
            last[:] = [self.cluster.status()]
            return last[0] if last[0].serve_api_reachable else None

        try:
            after = wait_until("a snapshot with the Serve API answering", probe, timeout_s=timeout_s)
        except WaitTimeout:
            after = last[0] if last else self.cluster.status()
        self.writer.snapshot(AFTER, after)
        return after

    def start_traffic(self, endpoints: Sequence[Endpoint], *, check: ResponseCheck | None = None,
                      request: RequestConfig | None = None) -> Traffic:
        """Traffic to ``endpoints`` with the app's request and body check (or the ones given: the harness's own
        health-toggle app answers a plain GET with a PID)."""
        self.traffic = Traffic(list(endpoints), rate_per_endpoint=self.budget.rate_per_endpoint,
                               timeout_s=self.budget.timeout_s, duration_s=self.max_traffic_s,
                               history_path=self.history_path, check=check or self.check,
                               request=request or self.request, allowed_networks=self.allowed_networks)
        self.add_cleanup("stop traffic", self.traffic.stop)
        self.traffic.start()
        observation_window("baseline traffic before the fault", self.budget.baseline_s)
        return self.traffic

    def inject(self, fault: Fault, *, follow_up: bool = False) -> None:
        """Inject a fault, its heal registered first. A follow-up (a fault injected after the scenario's own
        fault recovered, to check what came back) ends the window its availability is judged in."""
        self.faults.append(fault)
        self.add_cleanup(f"heal {fault.name}@{fault.target}", lambda: self.heal(fault))
        event = self.writer.event(EventKind.INJECT, fault.name, fault.target, FOLLOW_UP if follow_up else "")
        if follow_up and self.follow_up_at is None:
            self.follow_up_at = event.t_mono
        asked = time.time()
        fault.inject()
        self._note_how_sent(fault, asked)

    def _note_how_sent(self, fault: Fault, asked_wall: float) -> None:
        """The history says how the injection went out: sent by the fault agent (and when, by its clock), or by a
        one-shot driver because the agent was down (the stack's events, written as the backend chose)."""
        for e in self.cluster.events():
            if e.kind in DRIVER_EVENTS and e.t_wall >= asked_wall - 0.001:
                self.writer.note(f"{e.kind} {e.target}: {e.detail[:240]} (+{e.t_wall - asked_wall:.3f}s after the "
                                 f"harness asked)", name=fault.name, target=fault.target)

    def confirm(self, fault: Fault, timeout_s: float | None = None) -> bool:
        """Wait until the fault has really taken effect; nothing counts before that. A fault that never
        takes effect is recorded (and fails the verdict through ``fault_took_effect``), not raised."""
        try:
            wait_until(f"{fault.name} on {fault.target} to take effect", fault.taken_effect,
                       timeout_s=timeout_s or self.budget.confirm_s, interval_s=CONFIRM_INTERVAL_S)
        except WaitTimeout as exc:
            self.writer.note(f"did not take effect: {exc}", name=fault.name, target=fault.target)
            self.progress(f"[{self.name}] {exc}")
            return False
        self.writer.event(EventKind.TAKEN_EFFECT, fault.name, fault.target)
        return True

    def recover(self, fault: Fault, serving: Sequence[str] = (), timeout_s: float | None = None) -> bool:
        """Wait until the fault's 'recovered' probe (identity evidence) holds and the endpoints of the
        ``serving`` nodes answer, up to a while past the recovery budget; a miss is recorded, not raised, so
        that the verdict states the figures."""
        limit = timeout_s or 1.25 * self.budget.max_recovery_s + 5
        planned = self.traffic.plan.endpoints if self.traffic is not None else ()
        endpoints = [e for e in planned if e.node in set(serving)]

        def recovered() -> bool:
            return fault.recovered() and all(answers(e.url, self.budget.timeout_s) for e in endpoints)

        try:
            wait_until(f"{fault.name} on {fault.target} to recover and the serving endpoints to answer", recovered,
                       timeout_s=limit, interval_s=RECOVER_INTERVAL_S)
        except WaitTimeout as exc:
            self.writer.note(f"did not recover: {exc}", name=fault.name, target=fault.target)
            self.progress(f"[{self.name}] {exc}")
            return False
        self.writer.event(EventKind.RECOVERED, fault.name, fault.target, "; ".join(fault.findings))
        return True

    def hold(self, fault: HeldFault) -> None:
        """Keep a held fault (a freeze, a partition) in effect for its ``hold_s``, then end it (heal)."""
        observation_window(f"{fault.name} on {fault.target} held", fault.hold_s)
        self.heal(fault)

    def observe(self, seconds: float | None = None) -> None:
        observation_window("traffic past recovery", self.budget.observe_s if seconds is None else seconds)

    def heal(self, fault: Fault) -> None:
        fault.heal()
        self.writer.event(EventKind.HEALED, fault.name, fault.target)

    def stop_traffic(self) -> None:
        """End the traffic, letting requests in flight finish so the history holds every request sent."""
        if self.traffic is not None and self.traffic.running:
            self.traffic.finish()

    def history(self) -> History:
        return History.load(self.history_path)

    # --- verdict --------------------------------------------------------------------------------------
    def standard_checks(self, history: History, serving: Sequence[str], fault: str | None = None) -> list[Verdict]:
        """Availability (raw, budgeted; with Ray's recommended retries, reported) and longest outage on the
        serving endpoints from the first injection until a follow-up fault (if any: its own checks judge what
        follows), time to recover and traffic coverage of the scenario's fault (``fault``: its name)."""
        budget = self.budget
        main = [e for e in history.events if e.kind is EventKind.INJECT and e.detail != FOLLOW_UP]
        injected = min((e.t_mono for e in main), default=None)
        follow_ups = [e.t_mono for e in history.events if e.kind is EventKind.INJECT and e.detail == FOLLOW_UP]
        window = history.select(serving)
        if injected is not None:
            window = window.between(injected, min(follow_ups, default=float("inf")))
        raw = availability(window, min_availability=budget.min_availability, outage_budget_s=budget.max_outage_s)
        # the same figures as a client retrying like Ray recommends would see them: reported, not budgeted
        retried = availability(window, min_availability=budget.min_availability, retry=RETRY_3X_EXPONENTIAL,
                               outage_budget_s=budget.max_outage_s)
        raw = dataclasses.replace(raw, figures={**raw.figures, **{f"{WITH_RETRIES}{k}": v
                                                                    for k, v in retried.figures.items()}})
        return [
            raw,
            longest_outage(window, max_outage_s=budget.max_outage_s),
            time_to_recover(history, max_s=budget.max_recovery_s, fault=fault),
            traffic_coverage(history, serving, budget.observe_s, fault=fault),
        ]

    def finish(self, checks: Sequence[Verdict], before: StackStatus, after: StackStatus,
               serving: Sequence[str]) -> ScenarioResult:
        """Combine the checks into the scenario's verdict and write verdict.json (and logs unless it passed)."""
        self.stop_traffic()
        verdict = combine(self.name, list(checks))
        result = ScenarioResult(self.name, self.cluster.run_id, verdict, self.budget, tuple(serving),
                                identities(before, after), tuple(f for fault in self.faults for f in fault.findings),
                                tuple(self.phases), self.expected, self.known_issue, self.ray_version)
        self.folder.write_result(result)
        if verdict.status is not Status.PASS:
            self.collect_diagnostics()
        note = f" ({result.known_issue_note})" if result.known_issue_note else ""
        self.progress(f"[{self.name}] verdict {verdict.status}, {result.outcome}{note}: {explain(verdict)}")
        return result

    def collect_diagnostics(self) -> None:
        try:
            self.cluster.collect_logs(self.folder.logs_dir)
        except Exception as exc:  # noqa: BLE001 - diagnostics must not hide the verdict
            self.folder.note_missing(LOGS_ERROR, f"could not collect logs: {exc}")

    def close(self) -> None:
        """Run every registered cleanup, last first; one failing does not stop the others."""
        errors = []
        while self._cleanups:
            what, fn = self._cleanups.pop()
            try:
                fn()
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{what}: {type(exc).__name__}: {exc}")
        self.writer.close()
        if errors:
            raise RuntimeError(f"scenario {self.name} cleanup failed: " + "; ".join(errors))


def _guarded(name: str, fn: Callable[..., Sequence[Verdict]], *args: object) -> Sequence[Verdict]:
    """A scenario's own checks, made safe: one that raises gives UNKNOWN, never a pass or a lost verdict."""
    try:
        return list(fn(*args))
    except Exception as exc:  # noqa: BLE001
        return [Verdict(name, Status.UNKNOWN, f"check raised {type(exc).__name__}: {exc}")]


@dataclass(frozen=True)
class Evidence:
    """What a scenario's identity checks read: the fault (and its target), the history, and the history's
    before/after snapshots."""

    fault: Fault
    history: History
    before: StackStatus
    after: StackStatus
    app: AppUnderTest

    @property
    def watched(self) -> tuple[str, ...]:
        """The deployments the identity checks look at (the app's, as the snapshot before the fault lists them)."""
        return self.before.watched(self.app)


EvidenceCheck = Callable[[Evidence], Verdict]
FollowUp = Callable[[ScenarioRun], Sequence[Verdict]]


@dataclass(frozen=True)
class Procedure:
    """One run of the guide's procedure: the fault, where traffic goes, which nodes' endpoints must keep
    serving, what must (not) have changed (identity checks on the before/after snapshots), and the follow-up
    checks once it recovered (they may inject further faults through the run)."""

    fault: Fault
    endpoints: tuple[Endpoint, ...]
    serving: tuple[str, ...]
    evidence: tuple[EvidenceCheck, ...] = ()
    follow_ups: tuple[FollowUp, ...] = ()
    max_detection_s: float | None = None
    check: ResponseCheck | None = None  # the body check of this traffic (default: the app's)
    request: RequestConfig | None = None  # the request (default: the app's)


def run_procedure(run: ScenarioRun, procedure: Procedure) -> ScenarioResult:
    """The fault-tolerance guide's procedure, phase by phase: arrange, traffic, inject, confirm, recover,
    observe, after recovery (the follow-ups), verdict."""
    fault = procedure.fault
    with run.phase("arrange"):
        run.arrange()
    with run.phase("traffic"):
        run.start_traffic(procedure.endpoints, check=procedure.check, request=procedure.request)
    with run.phase("inject"):
        run.inject(fault)
    with run.phase("confirm"):
        took_effect = run.confirm(fault)
    if isinstance(fault, HeldFault):
        with run.phase("hold"):
            run.hold(fault)  # held even when it did not show: the heal ends whatever part of it happened
    recovered = False
    if took_effect:
        with run.phase("recover"):
            recovered = run.recover(fault, procedure.serving)
    with run.phase("observe"):
        run.observe()
        # what the fault changed, before the follow-ups change things on purpose (a scale up and down, a replica
        # killed to see it replaced): the identity checks judge the fault, not the follow-ups
        run.snapshot_after()
    later: list[Verdict] = []
    if recovered:
        with run.phase("after recovery"):
            for follow_up in procedure.follow_ups:
                later += _guarded(getattr(follow_up, "__name__", "follow_up"), follow_up, run)
    with run.phase("verdict"):
        run.stop_traffic()
        history = run.history()
        before, after = history.snapshot(BEFORE), history.snapshot(AFTER)
        assert before is not None and after is not None, "the snapshots are written by arrange and observe"
        evidence = Evidence(fault, history, before, after, run.app)
        checks = [fault_took_effect(history, procedure.max_detection_s),
                  *run.standard_checks(history, procedure.serving, fault.name),
                  *(v for check in procedure.evidence for v in _guarded(getattr(check, "__name__", "evidence"),
                                                                          lambda e, c=check: [c(e)], evidence)),
                  *later]
        return run.finish(checks, before, after, procedure.serving)


def _allure_step(title: str):
    try:
        import allure
    except ImportError:  # allure-pytest is a dependency, but the harness runs without it
        return contextlib.nullcontext()
    return allure.step(title)
