"""Failures beyond the guide, on the shared local stack (``harness/beyond.py``, docs/beyond-the-guide.md): a hung
node, a hung proxy, a worker cut off from the head, the head cut off from Redis, a slow and lossy link, Redis
down (and the head killed while it is), a drained node, a rolling upgrade. A held fault is held for its budget's
``hold_s``, then ended; each scenario passes only on figures, like the guide's. ``pytest scenarios/ -k
node_freeze`` runs one. The ones marked ``nightly`` are too long for make test: ``make nightly-beyond`` runs them.
"""

from __future__ import annotations

import pytest

from harness import beyond
from harness.known_issues import DEATH_AFTER_HEAL
from harness.pytest_plugin import assert_known_issue, assert_passed

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


@pytest.mark.nightly  # on a fresh stack 0 failed in 3 of 3 runs; after the seed suite, worker1's proxy lost 10
# requests as the head died in 3 of 3 (docs/findings.md): it runs where the stack is fresh, in make nightly-beyond
def test_redis_outage(stack, serve_chaos_replay):
    assert_passed(serve_chaos_replay(stack, "redis_outage", lambda run: beyond.run_beyond("redis_outage", run, stack)))


@pytest.mark.nightly  # about a minute, and head_failure covers the head's own failure in make test
def test_head_failure_during_redis_outage(stack, serve_chaos_replay):
    assert_passed(serve_chaos_replay(stack, "head_failure_during_redis_outage",
                                     lambda run: beyond.run_beyond("head_failure_during_redis_outage", run, stack)))


def test_graceful_drain(stack, serve_chaos_replay):
    target = stack.worker_names()[-1]
    assert_passed(serve_chaos_replay(stack, "graceful_drain",
                                     lambda run: beyond.run_beyond("graceful_drain", run, stack, target)))


@pytest.mark.nightly  # about 4 minutes: Serve replaces 6 replicas with a 10 s constructor, and the heal does it again
def test_rolling_upgrade(stack, serve_chaos_replay):
    assert_passed(serve_chaos_replay(stack, "rolling_upgrade",
                                     lambda run: beyond.run_beyond("rolling_upgrade", run, stack)))


# --- held past Ray's own detection: make nightly-beyond ------------------------------------------------------

@pytest.mark.nightly
@pytest.mark.parametrize("name", [f"{n}_long_hold" for n in beyond.LONG_HOLD])
def test_long_hold(stack, serve_chaos_replay, name):
    target = {"node_freeze": stack.worker_names()[-1], "proxy_freeze": stack.worker_names()[0],
              "node_partition": stack.worker_names()[-1], "redis_partition": None}[name.removesuffix("_long_hold")]
    if name == "node_partition_long_hold":
        # Ray 2.60 declares the node dead 10-11 s after a 45 s cut heals (2 of 2 runs, docs/findings.md): the node
        # restarts within the observation window, so node_kept, and only it, fails, carrying node_declared_dead
        judged = serve_chaos_replay(stack, name, lambda run: beyond.run_beyond(name, run, stack, target),
                                    known_issue=DEATH_AFTER_HEAL)
        assert_known_issue(judged, "node_kept")
        return
    assert_passed(serve_chaos_replay(stack, name, lambda run: beyond.run_beyond(name, run, stack, target)))
