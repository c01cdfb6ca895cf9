"""Waiting for processes to leave /proc (what `down` does before it returns), on real processes; no root."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.local import system
from harness.local.backend import wait_processes_gone
from harness.stack.errors import StackError
from harness.waiting import wait_until


def test_a_zombie_child_of_ours_is_reaped_and_then_counts_as_gone():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    processes = system.process_identities([child.pid])
    wait_until("the child to be a zombie", lambda: system.process_state(child.pid) == "Z", timeout_s=10,
               interval_s=0.01)
    assert not system.pid_alive(child.pid) and system.still_in_proc(processes)  # dead, and still in /proc
    wait_processes_gone(processes, "a zombie child", timeout_s=5)
    assert system.process_state(child.pid) is None and system.still_in_proc(processes) == {}


def test_an_orphans_zombie_counts_until_its_new_parent_reaps_it():
    # the shell starts a grandchild and exits at once; the grandchild exits shortly after, as an orphan
    shell = subprocess.run(["sh", "-c", f"{sys.executable} -c 'import time; time.sleep(0.3)' & echo $!"],
                           capture_output=True, text=True, timeout=10)
    processes = system.process_identities([int(shell.stdout)])
    assert processes, "the grandchild was already gone"
    wait_processes_gone(processes, "an orphan", timeout_s=10)
    assert system.still_in_proc(processes) == {}


def test_a_process_that_stays_is_named_in_the_error():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        processes = system.process_identities([child.pid])
        with pytest.raises(StackError) as exc:
            wait_processes_gone(processes, "the test's sleeper", timeout_s=0.3)
        message = str(exc.value)
        assert message.startswith("timed out after 0s waiting for the test's sleeper (1 signalled) to leave /proc")
        assert f"still in /proc: pid {child.pid} (python" in message and "parent " in message, message
    finally:
        child.kill()
        child.wait(timeout=10)


def test_a_pid_reused_by_another_process_is_not_the_one_that_was_signalled():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=10)
    assert system.still_in_proc({child.pid: 1}) == {}  # start time 1: whatever holds the PID now is not it
