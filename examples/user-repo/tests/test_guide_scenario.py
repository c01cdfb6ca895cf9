"""One of the fault-tolerance guide's scenarios, as the harness ships it, on our stack."""

from harness import guide
from harness.verdict import Status, explain


def test_replica_failure(serve_chaos_stack, serve_chaos_scenario):
    run = serve_chaos_scenario(serve_chaos_stack, "replica_failure")
    result = guide.replica_failure(run, serve_chaos_stack, serve_chaos_stack.worker_names()[0])
    assert result.verdict.status is Status.PASS, explain(result.verdict)
