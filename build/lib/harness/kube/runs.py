"""Is a run still somebody's? The owner (host and PID) and state of a run, read from its records.

A run is live while its owner process runs (on this host), or once its ``up`` finished (state ``up``: a
stack kept on purpose, removed by its own ``down``). Anything else carrying the label is left over from
a crashed run, and a later run's sweep removes it. A run owned by another host is never judged here.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    owner: str  # "<host>/<pid>", "" when unknown
    state: str  # "starting" | "up" | "" when unknown

    @property
    def owner_host(self) -> str:
        return self.owner.rpartition("/")[0]

    @property
    def owner_pid(self) -> int | None:
        pid = self.owner.rpartition("/")[2]
        return int(pid) if pid.isdigit() else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_leftover(record: RunRecord, host: str | None = None) -> bool:
    """True when the run is nobody's any more: not up, and its owner on this host is gone (or never wrote)."""
    if record.state == "up":
        return False
    if not record.owner:
        return True
    if record.owner_host != (host or socket.gethostname()):
        return False  # another machine's run: not ours to judge
    pid = record.owner_pid
    return pid is None or not pid_alive(pid)
