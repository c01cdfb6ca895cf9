"""Random fault schedules: hypothesis's stateful testing over a Cluster, seeded, shrunk and replayable.

A schedule is a sequence of steps; a step injects a SET of the seed scenarios' faults at once (so that
combinations happen in one step window), waits until each has taken effect and the stack has recovered,
and observes traffic past the recovery. Hypothesis draws the schedules, runs them as a
``RuleBasedStateMachine`` (``schedule_machine``) and, when one breaks an invariant, shrinks it to the
smallest schedule that still breaks it.

    result = run_schedule(cluster, report_dir / "test_random_schedule", profile=selected_profile())
    assert result.verdict is Status.PASS, result.explain()

One example (one schedule) is: ``start_traffic`` (the @initialize rule: the stack is healthy, traffic runs,
one History file per example under ``examples/NNN/``), then up to ``max_steps`` ``inject_faults`` steps,
each followed by the invariants, then ``teardown`` (always: heals every fault, LIFO, and stops traffic).

Invariants, judged after every step on the example's History (pure checks, as everywhere in the harness):

- ``recovered_within_budget``: every fault of the step took effect, and recovered (its ``recovered()``
  probe, the identity evidence of faults.py) within the step's recovery budget;
- ``traffic_within_budget``: availability and the longest outage of the traffic since the previous step's
  judgement, on the endpoints that had to keep serving, within the step's budget; and traffic covered the
  step from before its injection to past its recovery.

A step's budget is composed of the seed scenarios' budgets (budgets.toml) of the faults it injects: the
lowest ``min_availability``, the largest ``max_outage_s`` and ``max_recovery_s``. Traffic settings come
from ``[defaults]`` overlaid with an optional ``[random_schedule]`` table.

Which endpoints must keep serving: from a step's injection until it converged (every fault recovered),
every proxy except those of nodes the step kills (``KillWorkerPod``, ``KillHead``) and of proxies it kills
(``KillProxy``); from then on, every proxy. A request is judged with what held when it was sent, except
that a request still in flight when a step killed its endpoint is not owed an answer.

Time is read from the traffic, not slept: after convergence a step lasts until every endpoint has had
``observe_s`` worth of requests sent (the step's "cut"), and until every request sent before the cut is
recorded (the recorded sends of each endpoint show no hole before the cut, or two client timeouts and a
margin, ``settle_s``, have passed). A step's judgement covers the requests sent since the previous cut up
to its own; what follows the last cut is judged at teardown, once traffic has finished.

What keeps a schedule meaningful (``step_problem``): at most one ``FailHealthCheck`` per step; never every
worker killed in one step unless ``allow_all_workers_down``; at least one endpoint left that must keep
serving. The rule's precondition: the previous step converged (every fault recovered), so no step targets
a node that is down. Within a step, faults are injected in a fixed order: actor faults first (they need
the head's API and the proxies), node kills last.

Replay: every run prints its seed. ``run_schedule(seed=...)`` (the ``SERVE_CHAOS_SCHEDULE_SEED`` variable,
or pytest's ``--hypothesis-seed``) draws the same schedules again; ``replay_schedule`` re-runs a recorded
schedule exactly (e.g. the ``minimal`` one of a ``schedule.json``), without hypothesis. No example database
is used, so that a seed alone decides what runs.

Files, under ``out_dir``: ``schedule.json`` (seed, verdict, the ORIGINAL failing schedule, the MINIMAL one
hypothesis shrank it to, every example run), ``examples/NNN/`` (each example's ``history.jsonl`` and
``verdict.json``) and, copied up from the decisive example (the minimal failing one, else the last one),
``history.jsonl``, ``verdict.json``, ``timeline.html`` and ``logs/``, so that the report shows it as a
scenario.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import json
import math
import os
import secrets
import shutil
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, Protocol, TypeVar

import hypothesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from hypothesis.control import current_build_context
from hypothesis.errors import Flaky, StopTest, UnsatisfiedAssumption
from hypothesis.stateful import (
    RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test,
)

from harness.checkers import (
    RETRY_3X_EXPONENTIAL, Status, Verdict, availability, combine, gap_problem, observed_resolution, outage_windows,
    served,
    time_to_recover,
)
from harness.cluster import Cluster, Endpoint, StackStatus
from harness.evidence import identities
from harness.faults import (
    FailHealthCheck, Fault, FaultError, KillController, KillHead, KillProxy, KillReplica, KillWorkerPod,
)
from harness.history import EventKind, FaultEvent, History, HistoryTail, RequestRecord
from harness.known_issues import KnownIssue
from harness.routing import DRIVER_TIMEOUT_S, routing_verdict
from harness.scenario import (
    DEFAULT_BUDGETS, Budget, ScenarioResult, ScenarioRun, explain, fault_took_effect, load_budget,
)
from harness.traffic import PidBody
from harness.waiting import WaitTimeout, wait_until

SCENARIO = "random_schedule"
PROFILE_ENV = "SERVE_CHAOS_SCHEDULE_PROFILE"
SEED_ENV = "SERVE_CHAOS_SCHEDULE_SEED"
REPLAY_ENV = "SERVE_CHAOS_SCHEDULE_REPLAY"  # a schedule.json whose minimal schedule the scenario replays
SCHEDULE_FILE = "schedule.json"
EXAMPLES_DIR = "examples"

# The seed scenarios' faults, in the order a step injects them (actor faults need the head's API and the
# proxies, so they go before node kills), each with the budget table of its seed scenario.
FAULT_BUDGET_TABLES: Mapping[str, str] = {
    "FailHealthCheck": "health_check_failure",
    "KillReplica": "replica_failure",
    "KillProxy": "proxy_failure",
    "KillController": "controller_failure",
    "KillWorkerPod": "worker_pod_failure",
    "KillHead": "head_failure",
}
FAULT_KINDS = tuple(FAULT_BUDGET_TABLES)
# The order schedules draw faults in, mildest first: what hypothesis shrinks towards, and what its first,
# simplest schedule is made of (the mildest fault, one per step).
DRAW_ORDER = ("KillReplica", "KillController", "FailHealthCheck", "KillProxy", "KillWorkerPod", "KillHead")
NODE_KILLS = frozenset({"KillWorkerPod", "KillHead"})
ENDPOINT_KILLS = NODE_KILLS | {"KillProxy"}  # the step's endpoints on these targets need not serve
ANY = "any"  # KillReplica's drawn target: resolved when injected to the node holding most replicas
CONTROLLER = "controller"
TRAFFIC_KEYS = ("rate_per_endpoint", "timeout_s", "baseline_s", "observe_s", "confirm_s")


class ScheduleViolation(AssertionError):
    """A schedule broke an invariant. Raised from one place, so that hypothesis shrinks every violation as
    one failure."""


# ---------------------------------------------------------------------------------------------
# Records: what a schedule is made of, as it ran.


@dataclass(frozen=True)
class FaultSpec:
    """One fault of a step: its kind (a class of harness.faults) and its target (a node, ``controller``, or
    ``any`` for a replica before it is resolved)."""

    fault: str
    target: str

    def __str__(self) -> str:
        return f"{self.fault}({self.target})"

    def to_json(self) -> dict:
        return {"fault": self.fault, "target": self.target}

    @classmethod
    def from_json(cls, obj: Mapping) -> FaultSpec:
        return cls(str(obj["fault"]), str(obj["target"]))


def injection_key(spec: FaultSpec) -> tuple[int, str]:
    return FAULT_KINDS.index(spec.fault), spec.target


@dataclass(frozen=True)
class Step:
    """One step as it executed: the faults injected together (targets resolved, in injection order), the
    endpoints that had to keep serving, and, once judged, its status and reason."""

    index: int
    faults: tuple[FaultSpec, ...]
    serving: tuple[str, ...]
    started_s: float  # since the example's traffic started
    seconds: float = 0.0
    status: Status = Status.UNKNOWN  # until both invariants judged it
    reason: str = "not judged"
    figures: Mapping[str, float] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return " + ".join(str(f) for f in self.faults)

    def to_json(self) -> dict:
        return {"index": self.index, "faults": [f.to_json() for f in self.faults], "serving": list(self.serving),
                "started_s": round(self.started_s, 3), "seconds": round(self.seconds, 3),
                "status": str(self.status), "reason": self.reason, "figures": dict(self.figures)}

    @classmethod
    def from_json(cls, obj: Mapping) -> Step:
        return cls(int(obj["index"]), tuple(FaultSpec.from_json(f) for f in obj["faults"]),
                   tuple(obj.get("serving", ())), float(obj.get("started_s", 0.0)), float(obj.get("seconds", 0.0)),
                   Status(obj.get("status", Status.UNKNOWN)), str(obj.get("reason", "")),
                   {str(k): float(v) for k, v in (obj.get("figures") or {}).items()})


@dataclass(frozen=True)
class ExampleRecord:
    """One schedule hypothesis ran (an "example"): its steps and how it ended."""

    number: int
    folder: str  # relative to the schedule's folder
    final: bool  # hypothesis's final replay of the failure it reports
    steps: tuple[Step, ...]
    outcome: str  # pass | fail (an invariant broke) | error (an exception) | discarded (by hypothesis)
    reason: str

    @property
    def failed(self) -> bool:
        return self.outcome in ("fail", "error")

    def schedule_text(self) -> str:
        if not self.steps:
            return "(no step)"
        return "; ".join(f"step {s.index}: {s.title}" for s in self.steps)

    def to_json(self) -> dict:
        return {"example": self.number, "folder": self.folder, "final": self.final, "outcome": self.outcome,
                "reason": self.reason, "steps": [s.to_json() for s in self.steps]}


@dataclass(frozen=True)
class ScheduleResult:
    """What a run of schedules found; ``schedule.json`` holds the same."""

    seed: int | str | None  # None for a replay of a recorded schedule
    profile: ScheduleProfile | None
    verdict: Status
    reason: str
    original: ExampleRecord | None  # the first failing schedule
    minimal: ExampleRecord | None  # the schedule hypothesis shrank it to
    examples: tuple[ExampleRecord, ...]
    path: Path  # schedule.json
    hypothesis_report: str  # hypothesis's falsifying example and reproduce_failure blob, when it failed
    seconds: float
    bound_s: float  # the longest the run could take, stated before it started (ScheduleSession.run_bound_s)

    def explain(self) -> str:
        text = [f"random schedule {self.verdict}: {self.reason}", f"seed {self.seed} ({replay_hint(self.seed)})"]
        if self.original is not None:
            text.append(f"original schedule (example {self.original.number}): {self.original.schedule_text()}")
        if self.minimal is not None:
            text.append(f"minimal schedule (example {self.minimal.number}): {self.minimal.schedule_text()}")
            text.append(f"why: {self.minimal.reason}")
        text.append(f"schedule file: {self.path}")
        return "\n".join(text)


def replay_hint(seed: int | str | None) -> str:
    if seed is None:
        return "a replay of a recorded schedule"
    return f"replay with {SEED_ENV}={seed} or pytest --hypothesis-seed={seed}"


# ---------------------------------------------------------------------------------------------
# Profiles, seeds, configuration and budgets.


@dataclass(frozen=True)
class ScheduleProfile:
    name: str
    max_examples: int  # schedules hypothesis generates (shrinking runs more, bounded by shrink_budget_s)
    max_steps: int  # steps per schedule
    max_faults_per_step: int
    shrink_budget_s: float  # hypothesis stops shrinking after this long, and reports the smallest failure so far

    def settings(self) -> hypothesis.settings:
        """Hypothesis settings: no example database (a seed alone decides), no per-example deadline (the
        harness's waits have their own), shrinking on; the generation of ``max_examples`` schedules."""
        return hypothesis.settings(
            max_examples=self.max_examples,
            stateful_step_count=self.max_steps + 1,  # + the @initialize rule
            deadline=None,
            database=None,
            derandomize=False,
            print_blob=True,
            report_multiple_bugs=False,
            phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink),
            suppress_health_check=list(HealthCheck),
        )


PROFILES: Mapping[str, ScheduleProfile] = {
    # make test: two schedules of at most two steps of at most two faults (hypothesis's first schedule is always
    # its simplest: the mildest fault in each step; the second is random); a failure is shrunk for 4 minutes
    "short": ScheduleProfile("short", max_examples=2, max_steps=2, max_faults_per_step=2, shrink_budget_s=240.0),
    # nightly: ten schedules of up to six steps of up to three faults; a failure is shrunk for an hour
    "nightly": ScheduleProfile("nightly", max_examples=10, max_steps=6, max_faults_per_step=3, shrink_budget_s=3600.0),
}


def selected_profile(name: str | None = None) -> ScheduleProfile:
    """``name``, else ``$SERVE_CHAOS_SCHEDULE_PROFILE``, else ``short``."""
    name = name or os.environ.get(PROFILE_ENV) or "short"
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"no schedule profile {name!r} ({PROFILE_ENV}); profiles: {', '.join(PROFILES)}") from None


def selected_seed(value: int | str | None = None) -> int | str:
    """``value``, else ``$SERVE_CHAOS_SCHEDULE_SEED``, else a fresh random seed. Digits give an int."""
    if value is None or value == "":
        value = os.environ.get(SEED_ENV) or None
    if value is None:
        return secrets.randbits(32)
    if isinstance(value, int):
        return value
    return int(value) if value.strip().lstrip("-").isdigit() else value


@dataclass(frozen=True)
class ScheduleConfig:
    faults: tuple[str, ...] = FAULT_KINDS  # the kinds schedules draw from
    allow_all_workers_down: bool = False  # may a step kill every worker (explores outages)
    deployment: str = "SleepyPid"  # KillReplica's deployment
    health_route: str = "/health"  # FailHealthCheck's app (traffic goes there too when it is drawn from)
    health_deployment: str = "HealthToggle"
    poll_interval_s: float = 0.25  # how often the probes are asked
    recovery_grace_s: float = 5.0  # the recovery wait: 1.25 x the step's recovery budget + this
    settle_margin_s: float = 0.25  # settle_s = 2 client timeouts (connect + read) + this
    healthy_timeout_s: float = 120.0  # arrange: how long the stack may take to be healthy before a schedule
    check_routing: bool = True  # after a step converged, every proxy must route to the controller's replicas
    routing_timeout_s: float = 15.0  # ... within this long (harness/routing.py)
    known_issue: KnownIssue | None = None  # a known Serve defect the schedule shows (pinned to Ray versions)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.faults) - set(FAULT_KINDS))
        if unknown or not self.faults:
            raise ValueError(f"unknown or no fault kinds {unknown or list(self.faults)}; kinds: {', '.join(FAULT_KINDS)}")


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


# ---------------------------------------------------------------------------------------------
# What a step may be.


@dataclass(frozen=True)
class Topology:
    head: str
    workers: tuple[str, ...]
    nodes: tuple[str, ...]  # every node with a proxy endpoint

    @classmethod
    def of(cls, cluster: Cluster) -> Topology:
        nodes = tuple(e.node for e in cluster.endpoints())
        workers = tuple(w for w in cluster.worker_names() if w in nodes)
        head = next((n for n in nodes if n not in workers), "head")
        return cls(head, workers, nodes)


def fault_specs(topology: Topology, config: ScheduleConfig) -> tuple[FaultSpec, ...]:
    """Every fault a step may draw, mildest first (``DRAW_ORDER``: what hypothesis shrinks towards)."""
    targets = {
        "FailHealthCheck": topology.nodes, "KillReplica": (ANY,), "KillProxy": topology.nodes,
        "KillController": (CONTROLLER,), "KillWorkerPod": topology.workers, "KillHead": (topology.head,),
    }
    return tuple(FaultSpec(kind, target) for kind in DRAW_ORDER if kind in config.faults for target in targets[kind])


def serving_nodes(specs: Iterable[FaultSpec], topology: Topology) -> tuple[str, ...]:
    down = {s.target for s in specs if s.fault in ENDPOINT_KILLS}
    return tuple(n for n in topology.nodes if n not in down)


def step_problem(specs: Iterable[FaultSpec], topology: Topology, config: ScheduleConfig) -> str | None:
    """Why a set of faults is not a meaningful step, or None."""
    specs = list(specs)
    if not specs:
        return "a step injects at least one fault"
    if sum(s.fault == "FailHealthCheck" for s in specs) > 1:
        return "at most one FailHealthCheck per step"
    killed = {s.target for s in specs if s.fault == "KillWorkerPod"}
    if topology.workers and killed >= set(topology.workers) and not config.allow_all_workers_down:
        return f"it kills every worker ({', '.join(sorted(killed))}); allow_all_workers_down is off"
    if not serving_nodes(specs, topology):
        return "no endpoint would be left that must keep serving"
    return None


# ---------------------------------------------------------------------------------------------
# The session: one run of hypothesis over a cluster, and every example it ran.


class ScheduleSession:
    """Shared by every example of one run: the cluster, settings, and the record of what ran."""

    def __init__(self, cluster: Cluster, out_dir: str | Path, *, config: ScheduleConfig,
                 profile: ScheduleProfile | None, budgets: ScheduleBudgets,
                 prepare: Callable[[Cluster], object] | None = None,
                 progress: Callable[[str], None] | None = None) -> None:
        self.cluster = cluster
        self.out_dir = Path(out_dir)
        self.config = config
        self.profile = profile
        self.budgets = budgets
        self.prepare = prepare or (lambda cluster: None)
        self.progress = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.topology = Topology.of(cluster)
        self.examples: list[ExampleRecord] = []
        self.started = time.monotonic()
        self._numbers = 0

    @property
    def settle_s(self) -> float:
        """How long after a request's send it is surely recorded: connect and read timeouts, and a margin."""
        return 2 * self.budgets.traffic.timeout_s + self.config.settle_margin_s

    def observe_timeout_s(self, budget: Budget) -> float:
        """How long a step may wait for its traffic past convergence (a stalled traffic child fails it)."""
        return budget.observe_s + self.settle_s + 10.0

    def step_bound_s(self) -> float:
        worst = self.budgets.for_step(self.config.faults)
        # the routing wait may overrun by the reading under way at its deadline, and one more after it
        routing = self.config.routing_timeout_s + 2 * DRIVER_TIMEOUT_S if self.config.check_routing else 0.0
        return worst.confirm_s + 1.25 * worst.max_recovery_s + self.config.recovery_grace_s + routing + \
            self.observe_timeout_s(worst)

    def example_bound_s(self) -> float:
        """The longest one schedule can take: the stack healthy, traffic start (60 s at most) and baseline,
        every step at its waits' deadlines, the traffic's end and the heals (30 s). (``prepare`` is not counted.)"""
        steps = self.profile.max_steps if self.profile else 1
        traffic = self.budgets.traffic
        return self.config.healthy_timeout_s + 60.0 + traffic.baseline_s + self.observe_timeout_s(traffic) + \
            steps * self.step_bound_s() + 2 * traffic.timeout_s + 30.0

    def run_bound_s(self) -> float:
        """The longest a whole run can take: the generated schedules, then shrinking for the profile's shrink
        budget (the schedule running when it ends finishes), then hypothesis's final replay."""
        if self.profile is None:
            return self.example_bound_s()
        return (self.profile.max_examples + 2) * self.example_bound_s() + self.profile.shrink_budget_s

    def next_number(self) -> int:
        self._numbers += 1
        return self._numbers

    def record(self, example: ExampleRecord) -> None:
        self.examples.append(example)


def _is_final() -> bool:
    try:
        return bool(current_build_context().is_final)
    except Exception:  # noqa: BLE001 - outside hypothesis (a replay): not a final replay
        return False


@dataclass
class _StepState:
    """A step while it runs and is judged (the machine's model; ``Step`` is its frozen record)."""

    index: int
    specs: tuple[FaultSpec, ...]
    faults: tuple[Fault, ...]
    serving: tuple[str, ...]  # endpoint labels
    budget: Budget
    start: float  # monotonic: first injection
    converged: float = math.nan  # monotonic: every fault recovered (or the recovery wait gave up)
    cut: float = math.nan  # monotonic: requests sent before this are judged with this step
    end: float = math.nan  # monotonic: the step's end
    recovery: Verdict | None = None
    traffic: Verdict | None = None
    routing: Verdict | None = None  # every proxy routes to the controller's replicas, once converged

    def verdict(self) -> Verdict:
        parts = [v for v in (self.recovery, self.traffic) if v is not None]
        combined = combine(f"step {self.index}: {' + '.join(map(str, self.specs))}", parts)
        if combined.status is Status.PASS:
            reason = "; ".join(p.reason for p in parts)
        elif parts:
            reason = explain(combined)
        else:
            reason = "not judged: the schedule stopped before this step's invariants"
        return dataclasses.replace(combined, reason=reason)


class StepWindow(Protocol):
    """When a step began (its first injection), when it converged, and the endpoints it spared."""

    @property
    def start(self) -> float: ...
    @property
    def converged(self) -> float: ...
    @property
    def serving(self) -> tuple[str, ...]: ...


W = TypeVar("W", bound=StepWindow)


def step_at(states: Sequence[W], t: float) -> W | None:
    """The step under way at ``t``: the last one injected by then (None before the first)."""
    current = None
    for state in states:
        if state.start <= t:
            current = state
    return current


def serving_at(states: Sequence[StepWindow], labels: tuple[str, ...], t: float) -> tuple[str, ...]:
    """The endpoints that had to serve a request sent at ``t``: those the step it was sent in spared, until
    that step converged; every endpoint (``labels``) before the first step and after a step converged."""
    current = step_at(states, t)
    if current is None or not current.converged > t:
        return labels
    return current.serving


def owed_answer(states: Sequence[StepWindow], labels: tuple[str, ...], request: RequestRecord) -> bool:
    """Whether the request's endpoint had to answer it: it had to serve when the request was sent, and no step
    injected while the request was in flight killed it (a proxy killed mid-request owes no answer)."""
    sent, node = request.t_mono, request.node
    if node not in serving_at(states, labels, sent):
        return False
    return not any(sent < s.start <= sent + request.latency_s and node not in s.serving for s in states)


class _ScheduleMachine(RuleBasedStateMachine):
    """The logic of a fault schedule; ``schedule_machine`` makes a concrete machine of it for a session."""

    session: ScheduleSession

    def __init__(self) -> None:
        super().__init__()
        self.number = self.session.next_number()
        self.final = _is_final()
        self.folder = Path(EXAMPLES_DIR) / f"{self.number:03d}"
        self.run: ScenarioRun | None = None
        self.before: StackStatus | None = None
        self.labels: tuple[str, ...] = ()  # endpoint labels traffic goes to
        self.node_of: dict[str, str] = {}  # label -> node
        self.states: list[_StepState] = []
        self.converged = True
        self.judged_until = -math.inf  # requests sent before this are judged
        self.tail: Verdict | None = None
        self.traffic_t0 = time.monotonic()
        self._reader: HistoryTail | None = None
        self._sends: dict[str, list[float]] = {}  # label -> recorded send times, sorted

    # --- the rules' bodies ------------------------------------------------------------------------
    def _start(self) -> None:
        session = self.session
        cluster = session.cluster
        run = ScenarioRun(f"{SCENARIO} #{self.number}", cluster, session.out_dir / self.folder,
                          session.budgets.traffic, allowed_networks=cluster.allowed_networks(), check=PidBody(),
                          progress=session.progress, max_traffic_s=session.example_bound_s() + 60.0,
                          known_issue=session.config.known_issue)
        self.run = run
        with run.phase("arrange"):
            session.prepare(cluster)
            self.before = run.arrange(session.config.healthy_timeout_s)
        with run.phase("traffic"):
            self._reader = HistoryTail(run.history_path)
            run.start_traffic(self._endpoints())
            assert run.traffic is not None
            self.traffic_t0 = run.traffic.started_mono or time.monotonic()
            wait_until("baseline traffic recorded on every endpoint", lambda: self._sent_since(-math.inf, 1),
                       timeout_s=self.session.observe_timeout_s(session.budgets.traffic),
                       interval_s=session.config.poll_interval_s)

    def _endpoints(self) -> list[Endpoint]:
        cluster, config = self.session.cluster, self.session.config
        endpoints = list(cluster.endpoints())
        if "FailHealthCheck" in config.faults:  # its app is measured too
            endpoints += [Endpoint(f"{e.node}{config.health_route}", e.url)
                          for e in cluster.endpoints(route=config.health_route)]
        nodes = {e.node for e in cluster.endpoints()}
        self.labels = tuple(e.node for e in endpoints)
        self.node_of = {label: next((n for n in nodes if label == n or label.startswith(n + "/")), label)
                        for label in self.labels}
        return endpoints

    def _step(self, drawn: Iterable[FaultSpec]) -> None:
        session, run = self.session, self.run
        assert run is not None, "the schedule's traffic was not started"
        specs = sorted(drawn, key=injection_key)
        if problem := step_problem(specs, session.topology, session.config):
            raise ValueError(f"not a meaningful step {[str(s) for s in specs]}: {problem}")
        resolved = [self._fault(spec, specs) for spec in specs]
        specs = [spec for spec, _ in resolved]
        nodes = set(serving_nodes(specs, session.topology))
        state = _StepState(len(self.states) + 1, tuple(specs), tuple(f for _, f in resolved),
                           tuple(label for label in self.labels if self.node_of[label] in nodes),
                           session.budgets.for_step(s.fault for s in specs), start=time.monotonic())
        self.states.append(state)
        self.converged = False
        with run.phase(f"step {state.index}: {' + '.join(map(str, specs))}"):
            state.start = time.monotonic()
            for fault in state.faults:
                run.inject(fault)
            self._await(state, "taken_effect", state.budget.confirm_s)
            limit = 1.25 * state.budget.max_recovery_s + session.config.recovery_grace_s
            self.converged = self._await(state, "recovered", limit - (time.monotonic() - state.start))
            state.converged = time.monotonic()
            if self.converged and session.config.check_routing:
                state.routing = routing_verdict(session.cluster, "routing_converged", session.config.routing_timeout_s)
                run.writer.note(f"{state.routing.status}: {state.routing.reason}", name="routing",
                                target=f"step {state.index}")
            state.cut = self._observe(state)
            state.end = time.monotonic()

    def _read_traffic(self) -> None:
        assert self._reader is not None
        for record in self._reader.read_new():
            if isinstance(record, RequestRecord):
                bisect.insort(self._sends.setdefault(record.node, []), record.t_mono)

    def _sent_since(self, since: float, count: int) -> float | None:
        """The time by which every endpoint had ``count`` recorded sends at or after ``since``, or None yet."""
        self._read_traffic()
        reached = []
        for label in self.labels:
            sends = self._sends.get(label, [])
            first = bisect.bisect_left(sends, since)
            if len(sends) - first < count:
                return None
            reached.append(sends[first + count - 1])
        return max(reached)

    def _recorded_before(self, cut: float) -> bool:
        """Every request sent before ``cut`` is recorded: each endpoint has a recorded send after the cut, and
        either its recorded sends show no hole (the traffic is open-loop: a request still in flight leaves
        one) in the last ``settle_s`` before the cut, or ``settle_s`` has passed since the cut."""
        self._read_traffic()
        settle = self.session.settle_s
        late = time.monotonic() >= cut + settle
        hole = 1.5 / self.session.budgets.traffic.rate_per_endpoint
        for label in self.labels:
            sends = self._sends.get(label, [])
            after = bisect.bisect_left(sends, cut)
            if after == len(sends):
                return False
            recent = sends[bisect.bisect_left(sends, cut - settle):after + 1]
            if not late and any(b - a > hole for a, b in zip(recent, recent[1:])):
                return False
        return True

    def _observe(self, state: _StepState) -> float:
        """Traffic past convergence: until every endpoint had ``observe_s`` worth of sends (the cut) and every
        request sent before the cut is recorded. Returns the cut (on a timeout: as far as traffic got)."""
        budget, run = state.budget, self.run
        assert run is not None
        count = max(1, math.ceil(budget.observe_s * budget.rate_per_endpoint))

        def observed() -> float | None:
            cut = self._sent_since(state.converged, count)
            return cut + 1e-6 if cut is not None and self._recorded_before(cut + 1e-6) else None

        try:
            return wait_until(f"{count} requests on every endpoint past step {state.index}'s convergence, recorded",
                              observed, timeout_s=self.session.observe_timeout_s(budget),
                              interval_s=self.session.config.poll_interval_s)
        except WaitTimeout as exc:
            run.writer.note(str(exc), name=SCENARIO, target=f"step {state.index}")
            run.progress(f"[{run.name}] {exc}")
            return max(state.converged, time.monotonic() - self.session.settle_s)

    def _fault(self, spec: FaultSpec, step: Sequence[FaultSpec]) -> tuple[FaultSpec, Fault]:
        """The Fault object of a spec; a replica's ``any`` target resolved now."""
        cluster, config = self.session.cluster, self.session.config
        match spec.fault:
            case "KillWorkerPod":
                return spec, KillWorkerPod(cluster, spec.target)
            case "KillHead":
                return spec, KillHead(cluster, spec.target)
            case "KillController":
                return spec, KillController(cluster)
            case "KillProxy":
                return spec, KillProxy(cluster, spec.target)
            case "KillReplica":
                node = self._replica_node(step) if spec.target == ANY else spec.target
                return FaultSpec(spec.fault, node), KillReplica(cluster, node, config.deployment)
            case "FailHealthCheck":
                url = next((e.url for e in cluster.endpoints(route=config.health_route) if e.node == spec.target), None)
                if url is None:
                    raise FaultError(f"no endpoint of {config.health_route} on {spec.target}")
                replicas = sum(1 for r in cluster.status().replicas
                               if r.deployment == config.health_deployment and r.state == "RUNNING")
                return spec, FailHealthCheck(cluster, url, config.health_deployment, replicas)
        raise ValueError(f"unknown fault {spec.fault!r}")

    def _replica_node(self, step: Sequence[FaultSpec]) -> str:
        """The node holding most RUNNING replicas of the deployment, preferring nodes this step does not
        kill; ties go to the topology's order."""
        deployment = self.session.config.deployment
        order = self.session.topology.nodes
        counts: dict[str, int] = {}
        for r in self.session.cluster.status().replicas:
            if r.deployment == deployment and r.state == "RUNNING" and r.node:
                counts[r.node] = counts.get(r.node, 0) + 1
        if not counts:
            raise FaultError(f"no RUNNING replica of {deployment} to kill")
        killed = {s.target for s in step if s.fault in NODE_KILLS}
        spared = {n: c for n, c in counts.items() if n not in killed} or counts
        return min(spared, key=lambda n: (-spared[n], order.index(n) if n in order else len(order), n))

    def _await(self, state: _StepState, probe: str, timeout_s: float) -> bool:
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
            wait_until(what, every_fault, timeout_s=max(timeout_s, self.session.config.poll_interval_s),
                       interval_s=self.session.config.poll_interval_s,
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

    # --- the invariants' bodies ---------------------------------------------------------------------
    def _unjudged(self, attribute: str) -> _StepState | None:
        state = self.states[-1] if self.states else None
        if state is None or math.isnan(state.end) or getattr(state, attribute) is not None:
            return None
        return state

    def _judge_recovery(self) -> None:
        state = self._unjudged("recovery")
        if state is None:
            return
        assert self.run is not None
        window = self.run.history().between(state.start, state.end + 1e-6)
        routing = [state.routing] if state.routing is not None and state.routing.status is not Status.UNKNOWN else []
        verdict = combine("recovered_within_budget", [
            fault_took_effect(window),
            time_to_recover(window, max_s=state.budget.max_recovery_s),
            *routing,
        ])
        reason = explain(verdict) if verdict.status is not Status.PASS else \
            f"every fault took effect and recovered; {verdict.parts[1].reason}"
        state.recovery = dataclasses.replace(verdict, reason=reason)
        if verdict.status is not Status.PASS:
            self._violate(state.verdict())

    def _judge_traffic(self) -> None:
        state = self._unjudged("traffic")
        if state is None:
            return
        assert self.run is not None
        until = max(self.judged_until, state.cut)
        state.traffic = self._traffic_verdict(self.run.history(), self.judged_until, until, state)
        self.judged_until = until
        if state.traffic.status is not Status.PASS:
            self._violate(state.verdict())

    def _judge_tail(self, history: History) -> Verdict | None:
        """After traffic finished: the requests no step judged yet (the last step's rest)."""
        if not self.states or not history.requests:
            return None
        state = self.states[-1]
        verdict = self._traffic_verdict(history, self.judged_until, math.inf, state, name="traffic_after_the_last_step")
        self.judged_until = math.inf
        return verdict

    def _budget_at(self, t: float) -> Budget:
        return (step_at(self.states, t) or self.states[0]).budget

    def _kept(self, history: History, start: float, end: float) -> History:
        """The requests sent in [start, end) to endpoints that had to serve them: from when they were sent until
        they were answered. A request still in flight when a step killed its endpoint was not owed an answer."""
        return dataclasses.replace(history, requests=tuple(
            r for r in history.requests if start <= r.t_mono < end and owed_answer(self.states, self.labels, r)))

    def _traffic_verdict(self, history: History, start: float, end: float, state: _StepState,
                         name: str = "traffic_within_budget") -> Verdict:
        window = self._kept(history, start, end)
        sends = history.between(start, end)  # every send, owed an answer or not: what the traffic observed
        checks = [availability(window, min_availability=state.budget.min_availability,
                               outage_budget_s=state.budget.max_outage_s, sends=sends),
                  self._outages(history, start, end),
                  self._coverage(history, state, start, end)]
        verdict = combine(name, checks)
        reason = explain(verdict) if verdict.status is not Status.PASS else "; ".join(c.reason for c in checks)
        return dataclasses.replace(verdict, reason=reason)

    def _outages(self, history: History, start: float, end: float) -> Verdict:
        """Outage windows (on endpoints that had to serve) still open at or after ``start``, each against the
        largest outage budget of the steps it spans; an outage still open at ``end`` counts as long as it is."""
        name = "longest_outage"
        kept = self._kept(history, -math.inf, end)
        windows = [w for w in outage_windows(kept) if w.end >= start]
        figures = {"longest_outage_s": max((w.duration_s for w in windows), default=0.0),
                   "outage_windows": float(len(windows))}
        over = []
        for w in windows:
            budget = max(self._budget_at(w.start).max_outage_s, self._budget_at(w.end).max_outage_s)
            if w.duration_s > budget:
                over.append(f"{w.duration_s:.3f}s on {w.scope} ({w.failures} failed requests, budget <= {budget:g}s)")
        resolution = observed_resolution(history.between(start, end))
        if over:
            return Verdict(name, Status.FAIL, "outage over budget: " + "; ".join(over), figures, resolution)
        longest = max(windows, key=lambda w: w.duration_s, default=None)
        text = f"longest outage {longest.duration_s:.3f}s on {longest.scope}" if longest else "no outage"
        budget = self._budget_at(end if end < math.inf else time.monotonic()).max_outage_s
        stated = f"budget <= {budget:g}s (the largest of the steps an outage spans); {resolution.text()}"
        if unseen := gap_problem(resolution, resolution.tolerance_s(budget)):
            return Verdict(name, Status.UNKNOWN, f"{text} seen on the endpoints that had to serve, but {unseen}; "
                           f"{stated}", figures, resolution)
        return Verdict(name, Status.PASS, f"{text} on the endpoints that had to serve; {stated}", figures, resolution)

    def _coverage(self, history: History, state: _StepState, start: float, end: float) -> Verdict:
        """Traffic overlapped the step: in this judgement's window, every endpoint has requests sent before
        the step's first injection (unless the window starts after it) and after the step converged."""
        name = "traffic_coverage"
        after = state.converged if not math.isnan(state.converged) else state.start
        gaps = []
        for label in self.labels:
            sends = [r.t_mono for r in history.requests if r.node == label and start <= r.t_mono < end]
            if start < state.start and not any(t < state.start for t in sends):
                gaps.append(f"{label}: no request before the injection")
            if not any(t >= after for t in sends):
                gaps.append(f"{label}: no request after the step converged")
        if gaps:
            return Verdict(name, Status.FAIL, "traffic did not cover the step: " + "; ".join(gaps))
        return Verdict(name, Status.PASS, f"traffic on every endpoint from before the injection to past convergence")

    def _violate(self, verdict: Verdict) -> NoReturn:
        raise ScheduleViolation(f"{verdict.name}: {verdict.reason}")

    # --- teardown -----------------------------------------------------------------------------------
    def _teardown(self) -> None:
        in_flight = sys.exc_info()[1]
        run = self.run
        tail: Verdict | None = None
        cleanup_error: Exception | None = None
        try:
            if run is not None and in_flight is None:
                run.stop_traffic()  # requests in flight finish: the history is complete
                tail = self._judge_tail(run.history())
        finally:
            if run is not None:
                try:
                    run.close()  # heals every fault (LIFO) and stops traffic, even after a failure
                except Exception as exc:  # noqa: BLE001 - reported below without hiding a failure in flight
                    cleanup_error = exc
            self.tail = tail
            outcome, reason = self._outcome(in_flight, tail, cleanup_error)
            self._finish(outcome, reason)
        if tail is not None and tail.status is not Status.PASS:
            self._violate(dataclasses.replace(tail, reason=explain(tail)))
        if cleanup_error is not None and in_flight is None:
            raise cleanup_error

    def _outcome(self, in_flight: BaseException | None, tail: Verdict | None,
                 cleanup_error: Exception | None) -> tuple[str, str]:
        if self.run is None:
            return "discarded", "hypothesis stopped it before its traffic started"
        if isinstance(in_flight, ScheduleViolation):
            return "fail", str(in_flight)
        if isinstance(in_flight, (UnsatisfiedAssumption, StopTest)):
            return "discarded", "discarded by hypothesis (an invalid draw); it proves nothing"
        if in_flight is not None:
            return "error", f"{type(in_flight).__name__}: {in_flight}"
        if tail is not None and tail.status is not Status.PASS:
            return "fail", f"{tail.name}: {explain(tail)}"
        if cleanup_error is not None:
            return "error", f"cleanup failed: {cleanup_error}"
        return "pass", f"{len(self.states)} step(s) within budget"

    def _finish(self, outcome: str, reason: str) -> None:
        session = self.session
        steps = tuple(self._record(state) for state in self.states)
        example = ExampleRecord(self.number, self.folder.as_posix(), self.final, steps, outcome, reason)
        if outcome != "discarded" or self.run is not None:
            session.record(example)
        if self.run is None:
            return
        self._write_verdict(outcome, reason)
        if self.final and example.failed:
            self.run.collect_diagnostics()
        session.progress(f"[{SCENARIO} #{self.number}] {outcome}: {example.schedule_text()}"
                         + ("" if outcome == "pass" else f" -- {reason}"))

    def _record(self, state: _StepState) -> Step:
        verdict = state.verdict()
        figures = {k: v for k, v in verdict.figures.items()
                   if k in ("availability", "longest_outage_s", "time_to_recover_s", "requests", "failures")}
        return Step(state.index, state.specs, state.serving, state.start - self.traffic_t0,
                    (state.end if not math.isnan(state.end) else time.monotonic()) - state.start,
                    verdict.status if state.recovery and state.traffic else
                    (Status.FAIL if verdict.status is Status.FAIL else Status.UNKNOWN), verdict.reason, figures)

    def _example_verdict(self, outcome: str, reason: str) -> Verdict:
        assert self.run is not None
        parts = [state.verdict() for state in self.states]
        if self.tail is not None:
            parts.append(self.tail)
        figures: dict[str, float] = {}
        try:
            history = self.run.history()
            kept = self._kept(history, -math.inf, math.inf) if self.states else history
            ok = sum(r.ok for r in kept.requests)
            figures = {"requests": len(kept.requests), "failures": len(kept.requests) - ok}
            if kept.requests:
                figures["availability"] = ok / len(kept.requests)
                # as a client retrying like Ray recommends would have seen it: reported, not budgeted
                figures[f"with_retries.availability_{RETRY_3X_EXPONENTIAL.name}"] = \
                    sum(served(kept.requests, RETRY_3X_EXPONENTIAL)) / len(kept.requests)
            figures["longest_outage_s"] = max((w.duration_s for w in outage_windows(kept)), default=0.0)
            recoveries = time_to_recover(history, max_s=math.inf).figures
            if "time_to_recover_s" in recoveries:
                figures["time_to_recover_s"] = recoveries["time_to_recover_s"]
            resolution = observed_resolution(history.between(self.states[0].start, math.inf)) if self.states \
                else observed_resolution(history)
        except Exception as exc:  # noqa: BLE001 - the verdict is written even from a damaged history
            reason += f" (figures unavailable: {exc})"
            resolution = None
        status = {"pass": Status.PASS, "fail": Status.FAIL}.get(outcome, Status.UNKNOWN)
        if status is Status.PASS and not parts:
            reason = "no step ran: traffic only"
        return Verdict(SCENARIO, status, reason, figures, resolution, tuple(parts))

    def _write_verdict(self, outcome: str, reason: str) -> None:
        run = self.run
        assert run is not None
        verdict = self._example_verdict(outcome, reason)
        try:
            after = self.session.cluster.status()
            rows = identities(self.before, after) if self.before is not None else ()
        except Exception:  # noqa: BLE001 - no identities rather than no verdict
            rows = ()
        budget = self.session.budgets.for_step(s.fault for state in self.states for s in state.specs)
        result = ScenarioResult(SCENARIO, self.session.cluster.run_id, verdict, budget, self.labels, rows,
                                tuple(f for state in self.states for fault in state.faults for f in fault.findings),
                                tuple(run.phases), run.expected, run.known_issue, run.ray_version)
        (run.out_dir / "verdict.json").write_text(json.dumps(result.to_json(), indent=2, default=str))


def schedule_machine(session: ScheduleSession) -> type[RuleBasedStateMachine]:
    """A RuleBasedStateMachine over the session's cluster: @initialize starts traffic; the one rule injects
    a set of faults (drawn from ``fault_specs``, kept meaningful by ``step_problem``); the invariants judge
    each step; teardown heals and stops traffic, always."""
    topology, config = session.topology, session.config
    specs = fault_specs(topology, config)
    if not specs:
        raise ValueError(f"no fault to draw from kinds {config.faults} on nodes {topology.nodes}")
    max_faults = session.profile.max_faults_per_step if session.profile else len(specs)
    # A list, not a set, of specs: each element is drawn on its own (a duplicate is dropped), so that
    # shrinking deletes any one fault of a step without changing what the others are.
    steps = st.lists(st.sampled_from(specs), min_size=1, max_size=max_faults).map(frozenset).filter(
        lambda drawn: step_problem(drawn, topology, config) is None)

    class FaultSchedule(_ScheduleMachine):
        @initialize()
        def start_traffic(self) -> None:
            self._start()

        @precondition(lambda self: self.converged)  # the previous step recovered: no target is down
        @rule(faults=steps)
        def inject_faults(self, faults: frozenset[FaultSpec]) -> None:
            self._step(faults)

        # invariants run in name order: recovery first, then the traffic of the step
        @invariant()
        def recovered_within_budget(self) -> None:
            self._judge_recovery()

        @invariant()
        def traffic_within_budget(self) -> None:
            self._judge_traffic()

        def teardown(self) -> None:
            self._teardown()

    FaultSchedule.session = session
    return FaultSchedule


# ---------------------------------------------------------------------------------------------
# Running schedules, and replaying one.


def run_schedule(cluster: Cluster, out_dir: str | Path, *, profile: ScheduleProfile | None = None,
                 config: ScheduleConfig = ScheduleConfig(), seed: int | str | None = None,
                 budgets: ScheduleBudgets | str | Path | None = None,
                 prepare: Callable[[Cluster], object] | None = None,
                 progress: Callable[[str], None] | None = None,
                 settings: hypothesis.settings | None = None) -> ScheduleResult:
    """Let hypothesis draw, run and shrink fault schedules on ``cluster``; write ``schedule.json`` and the
    decisive example's files to ``out_dir``. Never raises for a failing schedule: the result says."""
    profile = profile or selected_profile()
    seed = selected_seed(seed)
    if not isinstance(budgets, ScheduleBudgets):
        budgets = load_schedule_budgets(config.faults, budgets)
    session = ScheduleSession(cluster, out_dir, config=config, profile=profile, budgets=budgets,
                              prepare=prepare, progress=progress)
    session.progress(f"[{SCENARIO}] seed {seed} ({replay_hint(seed)}); profile {profile.name}: "
                     f"{profile.max_examples} schedule(s) of up to {profile.max_steps} step(s) of up to "
                     f"{profile.max_faults_per_step} fault(s); faults {', '.join(config.faults)} on "
                     f"{', '.join(session.topology.nodes)}; bound {session.run_bound_s():.0f}s")
    machine = hypothesis.seed(seed)(schedule_machine(session))
    failure: BaseException | None = None
    try:
        with _shrinking_for(profile.shrink_budget_s):
            # _min_steps=1: every schedule has a step (hypothesis's second schedule would otherwise be empty)
            run_state_machine_as_test(machine, settings=settings or profile.settings(), _min_steps=1)
    except Exception as exc:  # noqa: BLE001 - the failure is the result
        failure = exc
    finally:
        result = _conclude(session, seed, failure)
    session.progress(result.explain())
    return result


@contextlib.contextmanager
def _shrinking_for(seconds: float) -> Iterator[None]:
    """Hypothesis stops shrinking after MAX_SHRINKING_SECONDS (5 minutes), a module constant read when
    shrinking starts; a schedule's examples take seconds to minutes each, so the profile sets it."""
    from hypothesis.internal.conjecture import engine

    if not hasattr(engine, "MAX_SHRINKING_SECONDS"):  # a hypothesis without it: its own limits apply
        yield
        return
    before = engine.MAX_SHRINKING_SECONDS
    engine.MAX_SHRINKING_SECONDS = seconds
    try:
        yield
    finally:
        engine.MAX_SHRINKING_SECONDS = before


def replay_schedule(cluster: Cluster, out_dir: str | Path, steps: Sequence[Iterable[FaultSpec]], *,
                    config: ScheduleConfig = ScheduleConfig(), budgets: ScheduleBudgets | str | Path | None = None,
                    prepare: Callable[[Cluster], object] | None = None,
                    progress: Callable[[str], None] | None = None) -> ScheduleResult:
    """Run one recorded schedule exactly as given (e.g. ``load_schedule(path).minimal``), without hypothesis:
    the same machine, rules, invariants and teardown."""
    steps = [tuple(faults) for faults in steps]
    if not isinstance(budgets, ScheduleBudgets):
        budgets = load_schedule_budgets(config.faults, budgets)
    session = ScheduleSession(cluster, out_dir, config=config, profile=None, budgets=budgets,
                              prepare=prepare, progress=progress)
    session.progress(f"[{SCENARIO}] replaying {len(steps)} recorded step(s): "
                     + "; ".join(f"step {i}: {' + '.join(map(str, faults))}" for i, faults in enumerate(steps, 1)))
    machine = schedule_machine(session)()
    failure: BaseException | None = None
    try:
        try:
            machine.start_traffic()
            for faults in steps:
                machine.inject_faults(frozenset(faults))
                machine.recovered_within_budget()
                machine.traffic_within_budget()
        finally:
            machine.teardown()
    except Exception as exc:  # noqa: BLE001 - the failure is the result
        failure = exc
    result = _conclude(session, None, failure)
    session.progress(result.explain())
    return result


def load_schedule(path: str | Path, which: str = "minimal") -> list[tuple[FaultSpec, ...]]:
    """The steps of the ``minimal`` (or ``original``) schedule of a schedule.json, for ``replay_schedule``."""
    data = json.loads(Path(path).read_text())
    steps = data.get(which)
    if steps is None:
        raise ValueError(f"{path} has no {which} schedule (verdict {data.get('verdict')})")
    return [tuple(Step.from_json(s).faults) for s in steps]


def _failure_status(failure: BaseException | None) -> tuple[Status, str]:
    if failure is None:
        return Status.PASS, ""
    leaves = list(failure.exceptions) if isinstance(failure, BaseExceptionGroup) else [failure]
    flaky = " (flaky: hypothesis's replay of the minimal schedule did not fail again)" \
        if isinstance(failure, Flaky) else ""
    violation = next((e for e in leaves if isinstance(e, ScheduleViolation)), None)
    if violation is not None:
        return Status.FAIL, f"{violation}{flaky}"
    return Status.UNKNOWN, f"the schedule could not run: {type(failure).__name__}: {failure}{flaky}"


def _conclude(session: ScheduleSession, seed: int | str | None, failure: BaseException | None) -> ScheduleResult:
    examples = tuple(e for e in session.examples if e.outcome != "discarded")
    failing = [e for e in examples if e.failed]
    original = failing[0] if failing else None
    finals = [e for e in failing if e.final]
    minimal = (finals or failing or [None])[-1]
    status, reason = _failure_status(failure)
    if status is Status.PASS:
        if failing:  # a failure hypothesis did not report (it should not happen): never a pass
            status, reason = Status.FAIL, f"example {failing[0].number} failed: {failing[0].reason}"
        elif not examples:
            status, reason = Status.UNKNOWN, "no schedule ran"
        else:
            reason = f"{len(examples)} schedule(s) of {sum(len(e.steps) for e in examples)} step(s) stayed within budget"
    notes = "\n".join(getattr(failure, "__notes__", ()) or ()) if failure is not None else ""
    out_dir = session.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / SCHEDULE_FILE
    result = ScheduleResult(seed, session.profile, status, reason, original, minimal, examples, path, notes,
                            time.monotonic() - session.started, session.run_bound_s())
    path.write_text(json.dumps(_schedule_json(result, session), indent=2, default=str))
    decisive = minimal or (examples[-1] if examples else None)
    if decisive is not None:
        _publish(session, decisive, collect_logs=status is not Status.PASS)
    return result


def _schedule_json(result: ScheduleResult, session: ScheduleSession) -> dict:
    def steps(example: ExampleRecord | None) -> list | None:
        return None if example is None else [s.to_json() for s in example.steps]

    return {
        "scenario": SCENARIO,
        "seed": result.seed,
        "verdict": str(result.verdict),
        "reason": result.reason,
        "original": steps(result.original),
        "minimal": steps(result.minimal),
        "original_example": result.original.number if result.original else None,
        "minimal_example": result.minimal.number if result.minimal else None,
        "minimal_reason": result.minimal.reason if result.minimal else None,
        "replay": {"seed": replay_hint(result.seed), "hypothesis": result.hypothesis_report},
        "profile": dataclasses.asdict(result.profile) if result.profile else None,
        "topology": dataclasses.asdict(session.topology),
        "faults": list(session.config.faults),
        "allow_all_workers_down": session.config.allow_all_workers_down,
        "seconds": round(result.seconds, 3),
        "bound_s": round(result.bound_s, 3),
        "examples": [e.to_json() for e in result.examples],
    }


def _publish(session: ScheduleSession, example: ExampleRecord, *, collect_logs: bool) -> None:
    """Copy the decisive example's files up to the schedule's folder (where the report looks) and draw its
    timeline."""
    source = session.out_dir / example.folder
    target = session.out_dir
    for name in ("history.jsonl", "verdict.json", "logs-error.txt"):
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
    if (source / "logs").is_dir():
        shutil.copytree(source / "logs", target / "logs", dirs_exist_ok=True)
    elif collect_logs and not (target / "logs").exists():
        try:
            session.cluster.collect_logs(target / "logs")
        except Exception as exc:  # noqa: BLE001 - diagnostics must not hide the verdict
            (target / "logs-error.txt").write_text(f"could not collect logs: {exc}\n")
    try:
        from harness.report import attach_timeline

        attach_timeline(target)
    except Exception as exc:  # noqa: BLE001 - a report problem must not hide the verdict
        (target / "timeline-error.txt").write_text(f"could not render the timeline: {exc}\n")
    try:
        import allure

        allure.attach.file(str(target / SCHEDULE_FILE), name=SCHEDULE_FILE, attachment_type=allure.attachment_type.JSON)
    except Exception:  # noqa: BLE001 - allure is optional here
        pass


__all__ = [
    "ExampleRecord", "FaultSpec", "PROFILES", "REPLAY_ENV", "ScheduleBudgets", "ScheduleConfig", "ScheduleProfile",
    "ScheduleResult", "ScheduleSession", "ScheduleViolation", "Step", "StepWindow", "Topology", "fault_specs",
    "load_schedule", "load_schedule_budgets", "owed_answer", "replay_schedule", "run_schedule", "schedule_machine",
    "selected_profile", "selected_seed", "serving_at", "serving_nodes", "step_at", "step_problem",
]
