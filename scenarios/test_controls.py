"""Controls: the seed scenarios, unchanged, against stacks where the property they check is broken.

A scenario that passes on a broken stack proves nothing; each control must fail, and for the reason its
property names: every control states the checks that must fail and a pattern each one's reason must match
(``Fails``), and prints them. The stacks:

- the fragile stack (cluster/controls/fragile.toml): one replica, pinned to worker1 (the guide's worker and
  replica failures, and beyond it a hung node, a node cut off from the head, a slow link into it, its drain, and
  a rolling upgrade of the one replica);
- the health-controls stack (cluster/controls/health_controls.toml): the health-check app's check runs once an
  hour, and a third HealthToggle replica has nowhere to go;
- the no-GCS-FT stack: the head runs without Redis;
- the Redis-without-data stack (cluster/controls/redis_no_data.toml): Redis restarts empty (``make
  nightly-beyond``, beside ``redis_outage``);
- the shared stack, with the repairing part switched off: the operator disarmed (nothing brings a killed
  controller back), a squatter holding the killed proxy's port (its replacement cannot bind), or proxies that
  outlived a replaced controller (Ray 2.60 never tells them of new replicas).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness import beyond, guide
from harness.faults import KillController
from harness.history import EventKind
from harness.local import system
from harness.local.backend import LocalCluster
from harness.pytest_plugin import local_stack, progress_writer
from harness.records import ScenarioResult
from harness.repair import restore
from harness.stack.cluster import Cluster, StackStatus
from harness.stack.config import REPO_ROOT, load_config
from harness.verdict import Status, Verdict
from harness.waiting import wait_until

pytestmark = [pytest.mark.stack, pytest.mark.control]
CONTROLS = REPO_ROOT / "cluster" / "controls"
SQUATTER = CONTROLS / "squat_port.py"


@pytest.fixture
def control(scenario):
    """A scenario run that is expected to fail: its verdict.json says so, and the report shows it as a control."""
    return lambda cluster, name: scenario(cluster, name, expected=Status.FAIL)


@dataclass(frozen=True)
class Fails:
    """A check that must FAIL, with a reason that matches ``reason`` (a regular expression, searched) and, with
    ``at_least``, figures at least that large."""

    check: str
    reason: str
    at_least: Mapping[str, float] = field(default_factory=dict)


def assert_failed(result: ScenarioResult | Verdict, *expected: Fails) -> None:
    """The verdict is a fail, and each of ``expected`` is among its failing checks for the reason it names.
    A ScenarioResult is judged by its verdict's parts; a lone check's Verdict (a control that calls one check
    directly) by itself."""
    verdict = result.verdict if isinstance(result, ScenarioResult) else result
    name = result.scenario if isinstance(result, ScenarioResult) else verdict.name
    assert expected, "a control names the checks that must fail"
    assert verdict.status is Status.FAIL, f"control {name} did not fail: {verdict.status}: {verdict.reason}"
    parts = {p.name: p for p in (verdict.parts or (verdict,))}
    shown = "; ".join(f"{p.name}: {p.status}: {p.reason}" for p in parts.values() if p.status is not Status.PASS)
    for want in expected:
        part = parts.get(want.check)
        assert part is not None, f"control {name}: no check {want.check} in the verdict ({sorted(parts)})"
        assert part.status is Status.FAIL, (f"control {name}: {want.check} is {part.status}, not FAIL: {part.reason}"
                                            f" (all: {shown})")
        assert re.search(want.reason, part.reason), (f"control {name}: {want.check} failed, but its reason does not "
                                                     f"match /{want.reason}/: {part.reason}")
        for figure, least in want.at_least.items():
            seen = part.figures.get(figure)
            assert seen is not None and seen >= least, (f"control {name}: {want.check}'s figure {figure} is {seen}, "
                                                        f"expected >= {least:g}")
    print(f"control {name} failed as it must:")
    for want in expected:
        part = parts[want.check]
        figures = "".join(f" [{f} = {part.figures[f]:g} >= {least:g}]" for f, least in want.at_least.items())
        print(f"  {want.check}: FAIL, matching /{want.reason}/{figures}: {part.reason}")
    others = [p for p in parts.values() if p.status is not Status.PASS and p.name not in {w.check for w in expected}]
    for part in others:
        print(f"  (also {part.name}: {part.status}: {part.reason})")


def control_stack(name: str, pytestconfig: pytest.Config) -> Iterator[LocalCluster]:
    yield from local_stack(load_config(CONTROLS / name), pytestconfig, name)


def _local(cluster: Cluster) -> LocalCluster:
    if not isinstance(cluster, LocalCluster):
        pytest.skip("this control runs a process in a local node's network namespace")
    return cluster


# --- the shared stack, with the repairing part switched off ------------------------------------------------

def test_controller_failure_control(stack, control):
    """Without the operator, nothing brings a controller killed with no_restart=True back."""
    run = control(stack, "controller_failure")
    stack.set_operator(False)
    run.add_cleanup("re-arm the operator", lambda: stack.set_operator(True))
    result = guide.controller_failure(run, stack)
    assert_failed(result, Fails("time_to_recover", r"no recovery recorded for KillController@SERVE_CONTROLLER_ACTOR"))


@dataclass
class PortSquatter:
    """A process in ``node``'s network namespace that takes the node's Serve port the moment the proxy lets go of
    it, and holds it without answering (cluster/controls/squat_port.py). Started by the harness, labelled with
    the stack's run id (a sweep finds it), killed by its PID."""

    cluster: LocalCluster
    node: str
    bound_file: Path
    log_file: Path
    proc: subprocess.Popen | None = None

    @property
    def port(self) -> int:
        return self.cluster.config.app.serve_port

    def start(self) -> None:
        env = {**os.environ, system.LABEL_ENV: self.cluster.run_id, "PYTHONPATH": str(REPO_ROOT)}
        self.bound_file.unlink(missing_ok=True)
        netns = self.cluster.node(self.node).netns
        with self.log_file.open("w") as log:  # `ip netns exec` execs: the child's PID is the squatter's
            self.proc = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, str(SQUATTER), "0.0.0.0",
                                          str(self.port), str(self.bound_file)],
                                         env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        wait_until(f"the squatter (pid {self.proc.pid}) to run in {netns}",
                   lambda: self.running() and self.proc.pid in system.netns_pids(netns), timeout_s=10, interval_s=0.05)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def bound_at(self) -> float | None:
        """CLOCK_MONOTONIC of its bind, or None while it has not bound."""
        try:
            return float(self.bound_file.read_text())
        except (OSError, ValueError):
            return None

    def holds_port(self) -> bool:
        """Observed in /proc: a LISTEN socket on the port, in the squatter's namespace, is one of its own fds."""
        if not self.running():
            return False
        pid = self.proc.pid
        fds = Path(f"/proc/{pid}/fd")
        inodes = {link[len("socket:["):-1] for link in (os.readlink(fd) for fd in fds.iterdir())
                  if link.startswith("socket:[")}
        for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(f":{self.port:04X}") and fields[3] == "0A" and fields[9] in inodes:
                return True
        return False

    def stop(self) -> None:
        """Kill it by PID, reap it, then wait until the node has a HEALTHY proxy again (the controller retries)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()  # SIGKILL to this child's PID (Popen does not signal a reaped PID)
        self.proc.wait(timeout=10)
        wait_until(f"a HEALTHY proxy on {self.node} once the squatter is gone", lambda: any(
            p.node == self.node and p.status == "HEALTHY" for p in self.cluster.status().proxies), timeout_s=180)


def test_proxy_failure_control(stack, control):
    """A squatter takes the killed proxy's port: the controller's new proxy cannot bind, never becomes HEALTHY,
    and the proxy never recovers."""
    cluster = _local(stack)
    target = cluster.worker_names()[0]
    run = control(cluster, "proxy_failure")
    squatter = PortSquatter(cluster, target, run.out_dir / "squatter-bound", run.out_dir / "squatter.log")
    run.add_cleanup(f"kill the port squatter on {target} (by PID), wait for its proxy", squatter.stop)
    squatter.start()  # it binds the moment the proxy lets go of the port: once KillProxy has taken effect
    result = guide.proxy_failure(run, cluster, target)

    injected = next(e.t_mono for e in run.history().events if e.kind is EventKind.INJECT)
    bound = squatter.bound_at()
    assert bound is not None, f"the squatter never bound {target}:{squatter.port}: {squatter.log_file.read_text()}"
    assert bound > injected, "the squatter bound before the proxy was killed"
    wait_until(f"the squatter to hold {target}:{squatter.port}", squatter.holds_port, timeout_s=5)
    assert_failed(result, Fails("proxy_replaced", rf"no HEALTHY proxy on {target} after the fault"),
                  Fails("time_to_recover", rf"no recovery recorded for KillProxy@{target}"))
    node_id = next(n.ray_node_id for n in cluster.status().nodes if n.name == target)
    tried = [a for a in cluster.actors(class_name="ProxyActor") if a.node_id == node_id and a.state != "ALIVE"]
    print(f"  squatter pid {squatter.proc.pid} bound {target}:{squatter.port} {bound - injected:.2f}s after the "
          f"kill was injected and held it to the end; proxy actors on {target} that died meanwhile: {len(tried)} "
          f"(the killed one and the controller's replacements)")


def _proxies(status: StackStatus) -> dict[str, tuple[str, int | None]]:
    return {str(p.node): (p.actor_id, p.pid) for p in status.proxies}


def test_replica_failure_routing_control(stack, control, pytestconfig):
    """Proxies that outlived a replaced controller (Ray 2.60: ray-project/ray#63784) never route to the replica
    that replaces a killed one. The run is made first (its factory's restore replaces stale proxies), then the
    controller is replaced, then the scenario runs: nothing repairs the proxies in between."""
    say = progress_writer(pytestconfig)
    run = control(stack, "replica_failure")  # restore() runs here, and not again before the scenario
    run.add_cleanup("replace the stale proxies (restore the shared stack)", lambda: restore(stack, say))
    before = stack.status()
    fault = KillController(stack)
    run.add_cleanup("heal KillController", fault.heal)
    fault.inject()
    wait_until("the killed controller to be DEAD", fault.taken_effect, timeout_s=30)
    wait_until("the operator's new controller, and the stack healthy", fault.recovered, timeout_s=90)
    outlived = stack.status()
    assert _proxies(outlived) == _proxies(before), \
        f"the proxies did not outlive the controller: {_proxies(before)} -> {_proxies(outlived)}"
    assert outlived.controller is not None and before.controller is not None
    replaced = (f"controller replaced before the scenario (actor {before.controller.actor_id[:8]} -> "
                f"{outlived.controller.actor_id[:8]}); the proxies outlived it: {sorted(_proxies(outlived))}")
    run.writer.note(replaced, name="control", target="KillController")
    print(replaced)

    result = guide.replica_failure(run, stack, stack.worker_names()[0])
    assert_failed(result, Fails("replacement_routed", r"proxy on \S+ for /: .*(does not know|routes to) \d+ "
                                r"(running )?replica", at_least={"stale_routes": 1}))


# Class-scoped stacks: each is torn down before the next comes up, so that at most two stacks (this and the
# shared one) run at a time on a small machine.
@pytest.fixture(scope="class")
def fragile_stack(pytestconfig) -> Iterator[LocalCluster]:
    yield from control_stack("fragile.toml", pytestconfig)


@pytest.fixture(scope="class")
def health_stack(pytestconfig) -> Iterator[LocalCluster]:
    yield from control_stack("health_controls.toml", pytestconfig)


@pytest.fixture(scope="class")
def redis_no_data_stack(pytestconfig) -> Iterator[LocalCluster]:
    yield from control_stack("redis_no_data.toml", pytestconfig)


@pytest.fixture(scope="class")
def no_ft_stack(pytestconfig) -> Iterator[LocalCluster]:
    yield from control_stack("no_gcs_ft.toml", pytestconfig)


SURVIVOR = r"(head|worker2)"  # the fragile stack's nodes that hold no replica
# the only replica's node is gone, hung or drained: the survivors' proxies have nothing to route to
SURVIVORS_OUT = (Fails("availability", rf"availability raw: lowest endpoint {SURVIVOR} "),
                 Fails("longest_outage", rf"longest outage [\d.]+s on {SURVIVOR} "))


class TestFragileStack:
    """One replica, pinned to worker1."""

    def test_worker_pod_failure_control(self, fragile_stack, control):
        result = guide.worker_pod_failure(control(fragile_stack, "worker_pod_failure"), fragile_stack, "worker1")
        assert_failed(result, *SURVIVORS_OUT)

    def test_replica_failure_control(self, fragile_stack, control):
        result = guide.replica_failure(control(fragile_stack, "replica_failure"), fragile_stack, "worker1")
        assert_failed(result, Fails("availability", r"availability raw: lowest endpoint \w+ "),
                      Fails("longest_outage", r"longest outage [\d.]+s on \w+ "))

    def test_replica_spread_control(self, fragile_stack, control, stack_config):
        result = guide.replica_spread(control(fragile_stack, "replica_spread"), fragile_stack, "worker1",
                                      stack_config.app.max_replicas_per_node)
        assert_failed(result, Fails("placement", r"on at least 2 nodes; placement is worker1: 1$"))

    def test_node_freeze_control(self, fragile_stack, control):
        """A hung node holding the only replica: the other proxies have nothing to route to."""
        result = beyond.run_beyond("node_freeze", control(fragile_stack, "node_freeze"), fragile_stack, "worker1")
        assert_failed(result, *SURVIVORS_OUT)

    def test_node_partition_control(self, fragile_stack, control):
        """The only replica's node cut off from the head: the head's proxy cannot reach it."""
        result = beyond.run_beyond("node_partition", control(fragile_stack, "node_partition"), fragile_stack,
                                   "worker1")
        assert_failed(result, Fails("availability", r"availability raw: lowest endpoint head "),
                      Fails("longest_outage", r"longest outage [\d.]+s on head "))

    def test_slow_network_control(self, fragile_stack, control):
        """The only replica's node behind a slow, lossy link: every proxy's requests cross it. slow_network's own
        link (1000 kbit/s, 5% drop) cost this stack nothing (0 of 272 requests failed), so the control holds the
        link its budget table names ([slow_network_severe]: 100 kbit/s, 50%) to show that the scenario sees a
        link that does cost."""
        result = guide.run_guide(beyond.BEYOND["slow_network"], control(fragile_stack, "slow_network_severe"),
                                 fragile_stack, "worker1")
        assert_failed(result, Fails("availability", rf"availability raw: lowest endpoint {SURVIVOR} "))

    def test_graceful_drain_control(self, fragile_stack, control):
        """The only replica's node drained: Serve cannot start its replacement anywhere else (it is pinned)."""
        result = beyond.run_beyond("graceful_drain", control(fragile_stack, "graceful_drain"), fragile_stack,
                                   "worker1")
        assert_failed(result, *SURVIVORS_OUT)

    def test_rolling_upgrade_control(self, fragile_stack, control):
        """One replica upgraded: Serve stops the old version before the new one has run its constructor."""
        result = beyond.run_beyond("rolling_upgrade", control(fragile_stack, "rolling_upgrade"), fragile_stack)
        assert_failed(result, Fails("availability", r"availability raw: lowest endpoint \w+ "),
                      Fails("longest_outage", r"longest outage [\d.]+s on \w+ "))

    def test_worker_node_failure_control(self, fragile_stack, control):
        # last on this stack: worker1 is lost for good, and the replacement has no `pinned` resource
        result = guide.worker_node_failure(control(fragile_stack, "worker_node_failure"), fragile_stack, "worker1")
        assert_failed(result, Fails("availability", rf"availability raw: lowest endpoint {SURVIVOR} "),
                      Fails("time_to_recover", r"no recovery recorded for LoseWorkerNode@worker1"))


class TestHealthControls:
    """The health-check app's check runs once an hour; a third replica has nowhere to go."""

    def test_accepts_changes_control(self, health_stack):
        """The change head_failure asks for after recovery (scale HealthToggle up by one) cannot be placed."""
        health_stack.wait_healthy()
        verdict = guide.accepts_changes(health_stack)
        assert_failed(verdict, Fails("accepts_changes", r"scaling HealthToggle 2 -> 3 failed: timed out after \d+s "
                                     r"waiting for 3 RUNNING replicas of HealthToggle"))
        # scaling back repairs it: the change, and nothing else, was what failed
        started = time.monotonic()
        after = health_stack.wait_healthy()
        running = sorted(str(r.node) for r in after.replicas if r.deployment == "HealthToggle" and r.state == "RUNNING")
        assert len(running) == 2, f"HealthToggle was not scaled back to 2: {running}"
        print(f"  scaled back: the stack is healthy again {time.monotonic() - started:.1f}s after the check, "
              f"HealthToggle RUNNING on {running}")

    def test_health_check_failure_control(self, health_stack, control):
        """The toggle works (check_health raises when called), but Serve never calls it within the scenario."""
        result = guide.health_check_failure(control(health_stack, "health_check_failure"), health_stack, "head")
        assert_failed(result, Fails("fault_took_effect", r"never took effect: FailHealthCheck@http://\S+/health"))
        found = next((m for f in result.findings if (m := re.search(r"replica (\S+) \(pid (\d+)\) fails", f))), None)
        assert found is not None, f"the toggle named no replica: {result.findings}"
        victim, pid = found.group(1), int(found.group(2))
        replica = next((r for r in health_stack.status().replicas if r.replica_id == victim), None)
        assert replica is not None and replica.state == "RUNNING" and replica.pid == pid, \
            f"replica {victim} (pid {pid}) should still run, never seen unhealthy: {replica}"
        name = next(a.name for a in health_stack.actors(state="ALIVE") if a.actor_id == replica.actor_id)
        called = health_stack.run_driver(
            f"try:\n    ray.get(ray.get_actor({name!r}, namespace='serve').check_health.remote(), timeout=30)\n"
            "    print('CHECK passed')\nexcept Exception as exc:\n"
            "    print('CHECK raised', 'toggled to fail' in str(exc))\n", timeout_s=90)
        assert "CHECK raised True" in called.stdout, ("the toggled replica's check_health should raise when "
                                                      f"called: {called.stdout[-300:]} {called.stderr[-300:]}")
        print(f"  replica {victim} still RUNNING, pid {pid}, never seen unhealthy; its check_health, called once "
              "by hand after the verdict, raises 'health check toggled to fail by the harness'")


# --- the head without GCS fault tolerance: the guide's own control ------------------------------------------

class TestNoGcsFt:

    def test_head_failure_without_gcs_ft(self, no_ft_stack, control):
        """Kill the head of a stack without GCS FT: the harness must see the outage, the workers restart, and
        the app go away until the operator redeploys it."""
        run = control(no_ft_stack, "head_failure")
        result = guide.head_failure(run, no_ft_stack)
        assert_failed(result, Fails("availability", r"availability raw: lowest endpoint worker\d "),
                      Fails("replicas_kept", r"expected the \d+ replicas on \['worker1', 'worker2'\] to keep their "
                                             r"PIDs; changed or gone"))
        injected = next(e.t_wall for e in run.history().events if e.kind == "inject")
        after = [(e.source, e.kind, e.target) for e in no_ft_stack.events() if e.t_wall >= injected]
        restarted = {t for s, k, t in after if s == "supervisor" and k == "node_started" and t.startswith("worker")}
        assert restarted, f"no worker restarted after the head came back without its GCS data: {after}"
        assert ("operator", "serve_missing", "app") in after and ("operator", "serve_config_applied", "app") in after, \
            f"the app did not go away and come back through a redeploy: {after}"


# --- Redis without its data: the control of the Redis faults (make nightly-beyond, beside redis_outage) ------

@pytest.mark.nightly
class TestRedisWithoutData:

    def test_redis_outage_without_data(self, redis_no_data_stack, control):
        """Redis down for the hold and back empty: the head's GCS comes back to no cluster state, so the workers'
        raylets are strangers to it, their replicas die with them and the app is redeployed: the workers'
        proxies, which a Redis outage with its data spares, fail."""
        result = beyond.run_beyond("redis_outage", control(redis_no_data_stack, "redis_outage"), redis_no_data_stack)
        assert_failed(result, Fails("availability", r"availability raw: lowest endpoint worker\d "),
                      Fails("replicas_kept", r"expected the \d+ replicas on \['worker1', 'worker2'\] to keep their "
                                             r"PIDs; changed or gone"))

    def test_head_failure_during_redis_outage_without_data(self, redis_no_data_stack, control):
        """The head killed while Redis is down, Redis back empty: the restarted head's GCS has no cluster state
        either, so the workers' proxies fail and their replicas are replaced."""
        result = beyond.run_beyond("head_failure_during_redis_outage",
                                   control(redis_no_data_stack, "head_failure_during_redis_outage"),
                                   redis_no_data_stack)
        assert_failed(result, Fails("availability", r"availability raw: lowest endpoint worker\d "),
                      Fails("replicas_kept", r"expected the \d+ replicas on \['worker1', 'worker2'\] to keep their "
                                             r"PIDs; changed or gone"))

