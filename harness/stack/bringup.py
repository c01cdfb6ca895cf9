"""Bringing a stack up, the same for every backend: run ids, a report of the bring-up's phases, and the
cleaning of log tails shown in errors."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Progress = Callable[[str], None]
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")  # colour codes in Ray's logs, removed from the tails errors show


def new_run_id() -> str:
    """``sc`` and 6 hex digits: what everything a run creates is labelled with."""
    return "sc" + secrets.token_hex(3)


def quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float


@dataclass
class UpReport:
    run_id: str
    phases: list[Phase] = field(default_factory=list)

    def run(self, progress: Progress, name: str, fn: Callable[[], object]) -> None:
        """Run one bring-up phase; one line once it is done, with how long it took (a phase that fails raises,
        and its error names the phase)."""
        start = time.monotonic()
        fn()
        self.phases.append(Phase(name, time.monotonic() - start))
        progress(f"{name} done in {self.phases[-1].seconds:.1f}s ({len(self.phases)} phases, {self.total_s:.1f}s so far)")

    @property
    def total_s(self) -> float:
        return sum(p.seconds for p in self.phases)
