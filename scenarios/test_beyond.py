"""Failures beyond the guide, on the shared local stack: a hung node, a hung proxy, a worker cut off from the
head, the head cut off from Redis (``harness/beyond.py``). Each fault is held for its budget's ``hold_s``, then
ended; the scenario passes only on figures, like the guide's. ``pytest scenarios/ -k node_freeze`` runs one.
"""

from __future__ import annotations

import pytest

from harness import beyond
from harness.pytest_plugin import assert_passed

pytestmark = pytest.mark.stack


def test_node_freeze(stack, serve_chaos_replay):
    target = stack.worker_names()[-1]
    assert_passed(serve_chaos_replay(stack, "node_freeze", lambda run: beyond.run_beyond("node_freeze", run, stack,
                                                                                          target)))


def test_proxy_freeze(stack, serve_chaos_replay):
    target = stack.worker_names()[0]
    assert_passed(serve_chaos_replay(stack, "proxy_freeze", lambda run: beyond.run_beyond("proxy_freeze", run, stack,
                                                                                           target)))


def test_node_partition(stack, serve_chaos_replay):
    target = stack.worker_names()[-1]
    assert_passed(serve_chaos_replay(stack, "node_partition",
                                     lambda run: beyond.run_beyond("node_partition", run, stack, target)))


def test_redis_partition(stack, serve_chaos_replay):
    assert_passed(serve_chaos_replay(stack, "redis_partition",
                                     lambda run: beyond.run_beyond("redis_partition", run, stack)))


def test_slow_network(stack, serve_chaos_replay):
    target = stack.worker_names()[0]
    assert_passed(serve_chaos_replay(stack, "slow_network",
                                     lambda run: beyond.run_beyond("slow_network", run, stack, target)))


def test_redis_outage(stack, serve_chaos_replay):
    assert_passed(serve_chaos_replay(stack, "redis_outage", lambda run: beyond.run_beyond("redis_outage", run, stack)))


def test_head_failure_during_redis_outage(stack, serve_chaos_replay):
    assert_passed(serve_chaos_replay(stack, "head_failure_during_redis_outage",
                                     lambda run: beyond.run_beyond("head_failure_during_redis_outage", run, stack)))


def test_graceful_drain(stack, serve_chaos_replay):
    target = stack.worker_names()[-1]
    assert_passed(serve_chaos_replay(stack, "graceful_drain",
                                     lambda run: beyond.run_beyond("graceful_drain", run, stack, target)))


def test_rolling_upgrade(stack, serve_chaos_replay):
    assert_passed(serve_chaos_replay(stack, "rolling_upgrade",
                                     lambda run: beyond.run_beyond("rolling_upgrade", run, stack)))
