"""What a schedule is made of: fault specs on a topology taken from the stack's configuration, and what a step
may be. Pure: nothing here reads a live stack, so that a seed and the configuration alone decide what is drawn.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

# The seed scenarios' faults, in the order a step injects them (actor faults need the head's API and the
# proxies, so they go before node kills), each with the budget table of its seed scenario.
FAULT_BUDGET_TABLES: Mapping[str, str] = {
    "FailHealthCheck": "health_check_failure",
    "KillReplica": "replica_failure",
    "KillProxy": "proxy_failure",
    "KillController": "controller_failure",
    "KillWorkerPod": "worker_pod_failure",
    "KillHead": "head_failure",
    # beyond the guide: held faults (a step holds them for their hold_s, then ends them, then awaits recovery)
    "DegradeNetwork": "slow_network",
    "FreezeProxy": "proxy_freeze",
    "PartitionNode": "node_partition",
    "FreezeNode": "node_freeze",
}
FAULT_KINDS = tuple(FAULT_BUDGET_TABLES)
SEED_FAULT_KINDS = FAULT_KINDS[:6]  # the guide's: what the short and nightly profiles draw from
HELD_FAULT_KINDS = FAULT_KINDS[6:]
# The order schedules draw faults in, mildest first: what shrinking moves towards, and what the first, simplest
# schedule is made of (the mildest fault, one step). The held faults come after the guide's, so that a profile
# of the guide's faults draws what it drew before they existed.
DRAW_ORDER = ("KillReplica", "KillController", "FailHealthCheck", "KillProxy", "KillWorkerPod", "KillHead",
              "DegradeNetwork", "FreezeProxy", "PartitionNode", "FreezeNode")
NODE_KILLS = frozenset({"KillWorkerPod", "KillHead"})
# the step's endpoints on these targets need not serve (a frozen, cut-off or throttled node's own included)
ENDPOINT_KILLS = NODE_KILLS | {"KillProxy"} | frozenset(HELD_FAULT_KINDS)
CONTROLLER = "controller"


@dataclass(frozen=True)
class FaultSpec:
    """One fault of a step: its kind (a fault of the catalogue) and its target (a node of the topology, or
    ``controller``). A drawn target is resolved when it is injected (``Resolution``)."""

    fault: str
    target: str

    def __str__(self) -> str:
        return f"{self.fault}({self.target})"

    def to_json(self) -> dict:
        return {"fault": self.fault, "target": self.target}

    @classmethod
    def from_json(cls, obj: Mapping) -> FaultSpec:
        return cls(str(obj["fault"]), str(obj["target"]))

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """``KillReplica(head)`` -> FaultSpec("KillReplica", "head")."""
        fault, _, target = text.strip().rstrip(")").partition("(")
        if fault not in FAULT_KINDS or not target:
            raise ValueError(f"not a fault spec: {text!r} (e.g. KillReplica(head); kinds: {', '.join(FAULT_KINDS)})")
        return cls(fault, target)


Schedule = tuple[tuple[FaultSpec, ...], ...]  # steps, each a set of faults in injection order


def injection_key(spec: FaultSpec) -> tuple[int, str]:
    return FAULT_KINDS.index(spec.fault), spec.target


def as_step(specs: Iterable[FaultSpec]) -> tuple[FaultSpec, ...]:
    """A step: each fault once, in injection order."""
    return tuple(sorted(set(specs), key=injection_key))


@dataclass(frozen=True)
class Topology:
    """The stack's nodes as its CONFIGURATION names them (not as they run now): a head and its workers, each with
    a proxy endpoint (``proxy_location: EveryNode``)."""

    head: str
    workers: tuple[str, ...]

    @property
    def nodes(self) -> tuple[str, ...]:
        return (self.head, *self.workers)

    @classmethod
    def planned(cls, workers: int, head: str = "head") -> Topology:
        """The local backend's naming: ``head``, ``worker1`` .. ``workerN``."""
        return cls(head, tuple(f"worker{i}" for i in range(1, workers + 1)))


@dataclass(frozen=True)
class ScheduleConfig:
    topology: Topology  # from the stack's configuration: what targets are drawn from
    faults: tuple[str, ...] = SEED_FAULT_KINDS  # the kinds schedules draw from
    allow_all_workers_down: bool = False  # may a step kill every worker (explores outages)
    poll_interval_s: float = 0.25  # how often the recorded traffic is read (a file: cheap)
    probe_interval_s: float = 1.0  # how often the faults' probes are asked (they read the head's API: see
    # harness/scenario.py RECOVER_INTERVAL_S)
    recovery_grace_s: float = 5.0  # the recovery wait: 1.25 x the step's recovery budget + this
    settle_margin_s: float = 0.25  # settle_s = 2 client timeouts (connect + read) + this
    healthy_timeout_s: float = 120.0  # arrange: how long the stack may take to be healthy before a schedule
    check_routing: bool = True  # after a step converged, every proxy must route to the controller's replicas
    routing_timeout_s: float = 15.0  # ... within this long (harness/routing.py)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.faults) - set(FAULT_KINDS))
        if unknown or not self.faults:
            raise ValueError(f"unknown or no fault kinds {unknown or list(self.faults)}; kinds: {', '.join(FAULT_KINDS)}")


def fault_specs(topology: Topology, config: ScheduleConfig) -> tuple[FaultSpec, ...]:
    """Every fault a step may draw, mildest first (``DRAW_ORDER``)."""
    targets = {
        "FailHealthCheck": topology.nodes, "KillReplica": topology.nodes, "KillProxy": topology.nodes,
        "KillController": (CONTROLLER,), "KillWorkerPod": topology.workers, "KillHead": (topology.head,),
        "DegradeNetwork": topology.workers, "FreezeProxy": topology.nodes, "PartitionNode": topology.workers,
        "FreezeNode": topology.workers,
    }
    return tuple(FaultSpec(kind, target) for kind in DRAW_ORDER if kind in config.faults for target in targets[kind])


def serving_nodes(specs: Iterable[FaultSpec], nodes: Sequence[str]) -> tuple[str, ...]:
    """The nodes whose endpoints must keep serving while a step's faults are in effect."""
    down = {s.target for s in specs if s.fault in ENDPOINT_KILLS}
    return tuple(n for n in nodes if n not in down)


def step_problem(specs: Iterable[FaultSpec], topology: Topology, allow_all_workers_down: bool = False) -> str | None:
    """Why a set of faults is not a meaningful step, or None."""
    specs = list(specs)
    if not specs:
        return "a step injects at least one fault"
    if sum(s.fault == "FailHealthCheck" for s in specs) > 1:
        return "at most one FailHealthCheck per step"
    killed = {s.target for s in specs if s.fault in ("KillWorkerPod", "FreezeNode", "PartitionNode")}
    if topology.workers and killed >= set(topology.workers) and not allow_all_workers_down:
        return f"it kills every worker ({', '.join(sorted(killed))}); allow_all_workers_down is off"
    if not serving_nodes(specs, topology.nodes):
        return "no endpoint would be left that must keep serving"
    return None


def schedule_text(schedule: Schedule) -> str:
    return "; ".join(f"step {i}: {' + '.join(map(str, step))}" for i, step in enumerate(schedule, 1)) or "(no step)"
