"""Stable node names over pods that come and go.

Faults and scenarios name nodes as the local backend does (``head``, ``worker1``, ...) and expect a killed
``worker2`` to come back as ``worker2``. On Kubernetes a deleted pod is replaced by a pod with a new name,
so each name is a *slot* bound to the pod that currently plays it: a slot keeps its pod while that pod
lives, and a slot whose pod is gone takes the oldest unbound pod of its role. A stopped slot (a worker
scaled away) takes no pod; pods nobody expected (KubeRay adding one) get new worker slots.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

HEAD = "head"


@dataclass(frozen=True)
class PodView:
    """What the harness reads of one Ray pod."""

    name: str
    uid: str
    role: str  # "head" | "worker"
    ip: str | None
    node: str | None  # the Kubernetes node it runs on
    phase: str  # Pending | Running | Succeeded | Failed | Unknown
    running: bool  # its Ray container is running
    terminating: bool  # it has a deletion timestamp
    created: str  # creationTimestamp (RFC 3339, sorts in time order)
    restarts: int


@dataclass(frozen=True)
class Slot:
    name: str  # "head", "worker1", ...
    role: str  # "head" | "worker"
    desired: str  # "running" | "stopped"
    pod: str | None  # the pod that plays it now


def initial_slots(workers: int) -> tuple[Slot, ...]:
    return (Slot(HEAD, "head", "running", None),
            *(Slot(f"worker{i}", "worker", "running", None) for i in range(1, workers + 1)))


def next_worker_name(slots: tuple[Slot, ...]) -> str:
    numbers = [int(m.group(1)) for s in slots if (m := re.fullmatch(r"worker(\d+)", s.name))]
    return f"worker{max(numbers, default=0) + 1}"


def bind_slots(slots: tuple[Slot, ...], pods: tuple[PodView, ...]) -> tuple[Slot, ...]:
    """The slots with each bound to its pod now (a pure function of the last binding and the pods)."""
    exists = {p.name for p in pods}
    live = {p.name: p for p in pods if not p.terminating}
    kept: list[Slot] = []
    for slot in slots:
        if slot.desired == "running":
            keep = slot.pod in live and live[slot.pod].role == slot.role
        else:  # a stopped slot holds its pod until it is gone, so nobody adopts a pod on its way out
            keep = slot.pod in exists
        kept.append(slot if keep else replace(slot, pod=None))
    used = {s.pod for s in kept if s.pod}
    free = sorted((p for p in live.values() if p.name not in used), key=lambda p: (p.created, p.name))
    out: list[Slot] = []
    for slot in kept:
        if slot.desired == "running" and slot.pod is None:
            pod = next((p for p in free if p.role == slot.role), None)
            if pod is not None:
                free.remove(pod)
                slot = replace(slot, pod=pod.name)
        out.append(slot)
    for pod in free:
        if pod.role == "worker":
            out.append(Slot(next_worker_name(tuple(out)), "worker", "running", pod.name))
    return tuple(out)
