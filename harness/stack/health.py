"""When a stack counts as healthy: one rule for every backend."""

from __future__ import annotations

import requests

from harness.stack.cluster import StackStatus
from harness.stack.config import StackConfig


def unhealthy_reason(status: StackStatus, cfg: StackConfig) -> str | None:
    """Why the stack is not healthy yet, or None when it is: the Serve API answers, the application runs with
    all its replicas RUNNING, every other application is RUNNING, the controller lives and every proxy is
    HEALTHY."""
    if not status.serve_api_reachable:
        return "the Serve REST API on the head does not answer"
    app = next((a for a in status.apps if a.name == cfg.app.application), None)
    if app is None:
        return f"no application {cfg.app.application!r}"
    running = [r for r in status.running(cfg.app.deployment) if r.pid]
    if len(running) != cfg.app.num_replicas or app.status != "RUNNING":
        return (f"application {app.name!r} is {app.status} with {len(running)}/{cfg.app.num_replicas} "
                f"replicas of {cfg.app.deployment} RUNNING")
    others = [(a.name, a.status) for a in status.apps if a.status != "RUNNING"]
    if others:
        return f"applications not RUNNING: {others}"
    return status.serve_problem()


def answer_once(url: str, timeout_s: float) -> str:
    """The body of a 200 from ``url``; raises otherwise (a proxy that does not answer is not healthy)."""
    resp = requests.get(url, timeout=timeout_s)
    if resp.status_code != 200:
        raise RuntimeError(f"{url} answered HTTP {resp.status_code}")
    return resp.text


def answers(url: str, timeout_s: float) -> bool:
    """Whether ``url`` answers 200 within the timeout (the one "does it answer" of the harness)."""
    try:
        answer_once(url, timeout_s)
    except (requests.RequestException, RuntimeError):
        return False
    return True
