"""When a stack counts as healthy: one rule for every backend."""

from __future__ import annotations

from urllib.parse import urlsplit

import requests

from harness.stack.app import AppUnderTest, app_under_test
from harness.stack.cluster import StackStatus
from harness.stack.config import StackConfig
from harness.stack.serve_config import build_serve_config


def unhealthy_reason(status: StackStatus, cfg: StackConfig) -> str | None:
    """Why the stack is not healthy yet, or None when it is: the Serve API answers, every application of the
    Serve config is RUNNING, the deployment the stack config sizes has that many replicas RUNNING (every
    replica RUNNING when it sizes none), the controller lives and every proxy is HEALTHY."""
    if not status.serve_api_reachable:
        return "the Serve REST API on the head does not answer"
    serve = build_serve_config(cfg)
    target = app_under_test(cfg)
    for wanted in serve.applications:
        app = next((a for a in status.apps if a.name == wanted.name), None)
        if app is None:
            return f"no application {wanted.name!r}"
    app = next(a for a in status.apps if a.name == target.application)
    if target.num_replicas is not None:
        running = [r for r in status.running(target.deployment) if r.pid]
        if len(running) != target.num_replicas or app.status != "RUNNING":
            return (f"application {app.name!r} is {app.status} with {len(running)}/{target.num_replicas} "
                    f"replicas of {target.deployment} RUNNING")
    else:
        waiting = sorted(f"{r.deployment}:{r.replica_id} {r.state}" for r in status.replicas
                         if r.state != "RUNNING" or not r.pid)
        if waiting or app.status != "RUNNING":
            return f"application {app.name!r} is {app.status}; replicas not RUNNING: {waiting or 'none'}"
    others = [(a.name, a.status) for a in status.apps if a.status != "RUNNING"]
    if others:
        return f"applications not RUNNING: {others}"
    return status.serve_problem()


def probe_url(proxy_url: str, app: AppUnderTest) -> str:
    """Where to ask whether a proxy serves the app: its route with the app's request path when that request is
    a plain GET, else the proxy's own ``/-/healthz`` (a POST-only endpoint answers a GET with 405)."""
    if app.request.method == "GET" and app.request.body is None:
        return join_path(proxy_url, app.request.path)
    parts = urlsplit(proxy_url)
    return f"{parts.scheme}://{parts.netloc}/-/healthz"


def join_path(url: str, path: str) -> str:
    """``url`` with ``path`` appended (one slash between them; the url unchanged for an empty path)."""
    return url if not path else url.rstrip("/") + "/" + path.lstrip("/")


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
