"""The fault agent killed mid-scenario, with traffic flowing: the guide's replica failure on the shared stack, the
agent SIGKILLed (by its process group) at the moment the harness sends the kill. The kill must still go out,
through a one-shot driver; the scenario's history must say so; the fault must take effect and the scenario be
judged as usual; and the agent must come back by itself.
"""

from __future__ import annotations

import os
import signal

import pytest

from harness import guide
from harness.history import EventKind
from harness.records import ScenarioFolder
from harness.verdict import Status, explain
from harness.waiting import wait_until

pytestmark = pytest.mark.stack


def test_replica_failure_with_the_fault_agent_killed_as_the_kill_is_sent(stack, scenario, monkeypatch):
    if not getattr(stack, "use_agent", False) or stack.agent.pid() is None:
        pytest.skip("this stack runs without the fault agent ([drivers] fault_agent = false, or not the local backend)")
    killed: list[int] = []
    kill_actor = stack.kill_actor

    def agent_dies_first(*args, **kwargs):
        if not killed:  # the scenario's own kill only: what follows goes as it would
            pid = stack.agent.pid()
            assert pid is not None, "the fault agent was not running when the kill was due"
            os.killpg(pid, signal.SIGKILL)
            killed.append(pid)
            wait_until("the killed agent to be gone", lambda: stack.agent.pid() is None, timeout_s=10,
                       interval_s=0.05)
        return kill_actor(*args, **kwargs)

    monkeypatch.setattr(stack, "kill_actor", agent_dies_first)
    run = scenario(stack, "replica_failure")
    result = guide.replica_failure(run, stack, stack.worker_names()[0])
    monkeypatch.undo()

    parts = {v.name: v for v in result.verdict.parts}
    assert killed, "the scenario never sent its kill"
    assert parts["fault_took_effect"].status is Status.PASS, explain(result.verdict)
    assert result.verdict.status is not Status.UNKNOWN, explain(result.verdict)
    assert parts["replica_replaced"].status is Status.PASS, explain(result.verdict)
    notes = [e.detail for e in ScenarioFolder(run.out_dir).read_history().events if e.kind is EventKind.NOTE]
    fallback = [n for n in notes if n.startswith("agent_fallback")]
    one_shot = [n for n in notes if n.startswith("actor_killed") and "one-shot driver" in n]
    assert fallback and one_shot, f"the history does not say the kill went by a one-shot driver: {notes}"
    wait_until("the fault agent to come back by itself", lambda: stack.agent.pid() not in (None, killed[0]),
               timeout_s=120, interval_s=0.5)
    assert stack.run_driver("print(6 * 7)").stdout.strip() == "42"
    print(f"agent {killed[0]} killed as the kill was sent: {fallback[0]}; {one_shot[0]}; "
          f"verdict {result.verdict.status}: {explain(result.verdict)}; agent back as {stack.agent.pid()}")
