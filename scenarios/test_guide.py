"""The seed scenarios: each failure of the Ray Serve fault-tolerance guide, on the shared local stack.

Run one with ``pytest scenarios/ -k head_failure``. Each reads as the guide's procedure (see
``harness/guide.py``) and passes only on figures: availability and longest outage on the endpoints that
must keep serving, time to recover, and identity evidence (PIDs before and after). A scenario that fails is run
again on the same stack (``--serve-chaos-replays``, default 2): a failure that comes back fails the test; one
that every replay passes is flaky, and warns with its figures (the report shows the failed run and its replays).
"""

from __future__ import annotations

import pytest

from harness import guide
from harness.known_issues import STALE_PROXIES
from harness.pytest_plugin import assert_known_issue, assert_passed
from harness.records import Judged

pytestmark = pytest.mark.stack


def test_worker_pod_failure(stack, serve_chaos_replay):
    target = stack.worker_names()[-1]
    assert_passed(serve_chaos_replay(stack, "worker_pod_failure",
                                     lambda run: guide.worker_pod_failure(run, stack, target)))


def test_replica_failure(stack, serve_chaos_replay):
    target = stack.worker_names()[0]
    assert_passed(serve_chaos_replay(stack, "replica_failure", lambda run: guide.replica_failure(run, stack, target)))


def test_proxy_failure(stack, serve_chaos_replay):
    target = stack.worker_names()[0]
    assert_passed(serve_chaos_replay(stack, "proxy_failure", lambda run: guide.proxy_failure(run, stack, target)))


def test_controller_failure(stack, serve_chaos_replay):
    # the guide's claim holds (no failed request, a new controller, a killed replica replaced), but the
    # surviving proxies never route to the replacement: routing_after_recovery fails, as the known issue says
    judged = serve_chaos_replay(stack, "controller_failure", lambda run: guide.controller_failure(run, stack),
                                known_issue=STALE_PROXIES)
    assert_known_issue(judged, "routing_after_recovery")


def test_health_check_failure(stack, serve_chaos_replay):
    target = stack.worker_names()[0]
    assert_passed(serve_chaos_replay(stack, "health_check_failure",
                                     lambda run: guide.health_check_failure(run, stack, target)))


def test_replica_spread(stack, serve_chaos_replay):
    # the limit is the app's deployment's max_replicas_per_node (the stack config's, else its Serve config's)
    target = stack.worker_names()[-1]
    assert_passed(serve_chaos_replay(stack, "replica_spread", lambda run: guide.replica_spread(run, stack, target)))


def test_head_failure(stack, serve_chaos_replay):
    assert_passed(serve_chaos_replay(stack, "head_failure", lambda run: guide.head_failure(run, stack)))


def test_worker_node_failure(stack, scenario):
    # last: the lost node stays lost, and its replacement serves from then on (so it is not replayed: a replay
    # would take a second node for good)
    target = stack.worker_names()[-1]
    assert_passed(Judged(guide.worker_node_failure(scenario(stack, "worker_node_failure"), stack, target)))
