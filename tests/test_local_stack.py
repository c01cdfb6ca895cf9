"""The local backend against the real machine: Ray, Redis, namespaces, iptables. Needs root."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from harness.exit_codes import ExitCode
from harness.local import system
from harness.local.backend import LocalCluster, leftovers
from harness.local.layout import RunLayout
from harness.secrets import Secret
from harness.stack.config import load_config
from harness.stack.errors import StackError
from harness.waiting import wait_until

pytestmark = pytest.mark.stack
REPO = Path(__file__).resolve().parents[1]


def harness_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
                prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env if env is not None else dict(os.environ))


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A state folder of the test's own (short: Ray's socket paths), so a test never touches a stack a person left up."""
    path = Path(tempfile.mkdtemp(prefix="sct-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def config_file(tmp_path: Path, state_dir: Path, extra: str = "", network: str = "") -> Path:
    path = tmp_path / "stack.toml"
    path.write_text(f'[network]\nstate_dir = "{state_dir}"\n{network}\n{extra}')
    return path


def assert_nothing_left(state_dir: Path, seen_pids: list[int] = ()) -> None:
    left = leftovers(state_dir)
    assert not left, f"left behind: {left}"
    alive = [p for p in seen_pids if system.pid_alive(p)]
    assert alive == [], f"processes of the stack still alive: {alive}"


def test_stack_up_serves_on_every_node_and_down_leaves_nothing(tmp_path, state_dir):
    password = Secret.generate()
    config = load_config(config_file(tmp_path, state_dir))
    cluster = LocalCluster(config, secret=password)
    seen: list[int] = []
    try:
        report = cluster.up()
        assert [p.name for p in report.phases] == ["network", "redis", "head", "workers", "deploy", "app healthy",
                                                  "fault agent"]

        status = cluster.status()
        assert {(n.name, n.role, n.alive, n.ray_state) for n in status.nodes} == {
            ("head", "head", True, "ALIVE"), ("worker1", "worker", True, "ALIVE"), ("worker2", "worker", True, "ALIVE")}
        running = [r for r in status.replicas if r.state == "RUNNING" and r.deployment == "SleepyPid"]
        assert len(running) == 6 and all(r.pid for r in running)
        assert status.controller is not None and status.controller.pid and status.controller.node == "head"
        # max_replicas_per_node = 2 spreads 2/2/2, so every node holds replicas and runs a proxy
        assert sorted(p.node for p in status.proxies) == ["head", "worker1", "worker2"]
        assert all(p.status == "HEALTHY" and p.pid for p in status.proxies)

        # every node's proxy answers with the PID of a replica (prefer-local routing: one on that node)
        replica_pids = {(r.node, r.pid) for r in running}
        for endpoint in cluster.endpoints():
            body = requests.get(endpoint.url, timeout=5)
            assert body.status_code == 200, f"{endpoint.url} answered {body.status_code}"
            assert (endpoint.node, int(body.text)) in replica_pids, f"{endpoint.url} answered pid {body.text}"

        # GCS fault tolerance: the cluster's tables live in Redis under the run's storage namespace
        r = redis.Redis(host=cluster.node("redis").address, port=6379, password=password.reveal())
        keys = {k.decode() for k in r.keys("*")}
        r.close()
        assert {f"RAY{cluster.run_id}@NODE", f"RAY{cluster.run_id}@ACTOR", f"RAY{cluster.run_id}@KV"} <= keys, keys

        # the CLI sees the same stack, and its JSON has the documented shape; no secret in it
        cli = harness_cli("status", "--json", "--state-dir", str(state_dir))
        assert cli.returncode == 0, cli.stderr
        data = json.loads(cli.stdout)
        assert {n["name"] for n in data["nodes"]} == {"head", "worker1", "worker2"}
        assert set(data["controller"]) >= {"pid", "node", "actor_id"}
        assert all(set(p) >= {"node", "url", "status", "actor_id", "pid"} for p in data["proxies"])
        assert all(set(r) >= {"replica_id", "node", "pid", "state"} for r in data["replicas"])
        assert password.reveal() not in cli.stdout + cli.stderr

        # facts that work with the head down come from the namespaces
        head_procs = cluster.node_processes("head")
        assert {"raylet", "gcs_server"} <= {p.name for p in head_procs}
        for node in ("redis", "head", "worker1", "worker2"):
            seen += [p.host_pid for p in cluster.node_processes(node)]
        events = cluster.events()
        assert {e.kind for e in events} >= {"supervisor_started", "node_started", "serve_config_applied"}
    finally:
        cluster.down()
    assert_nothing_left(state_dir, seen)
    logs_and_state = " ".join(str(p) for p in Path("/tmp").glob(f"*{cluster.run_id}*"))
    assert logs_and_state == "", f"temp folders left: {logs_and_state}"


def test_the_fault_agent_runs_the_drivers_and_comes_back_after_its_death_and_a_head_kill(tmp_path, state_dir):
    """Drivers go to the fault agent in the head; killed, it is down at once (a one-shot driver runs the command,
    the events say so) and starts again; with the head down a command fails fast and clearly; after the head
    is back, the agent is too; nothing of it is left after down."""
    cluster = LocalCluster(load_config(config_file(tmp_path, state_dir)))
    seen: list[int] = []

    def fallbacks() -> int:
        return sum(e.kind == "agent_fallback" for e in cluster.events())

    try:
        cluster.up()
        before = cluster.agent.stats()
        assert cluster.run_driver("print(len([n for n in ray.nodes() if n['Alive']]))").stdout.strip() == "3"
        assert cluster.agent.stats().commands == before.commands + 1 and fallbacks() == 0
        seen.append(cluster.agent.pid())

        # the agent killed (a head kill does that too): the next command runs on a one-shot driver
        os.killpg(cluster.agent.pid(), signal.SIGKILL)
        wait_until("the killed agent to be gone", lambda: cluster.agent.pid() is None, timeout_s=10)
        assert cluster.run_driver("print('via fallback')").stdout.strip() == "via fallback"
        assert fallbacks() == 1
        wait_until("the agent to be started again and attached", lambda: cluster.agent.pid() is not None
                   and (cluster.agent.stats() is not None), timeout_s=90, interval_s=0.5)
        assert cluster.agent.stats().commands == 0 and cluster.agent.stats().pid != before.pid
        assert cluster.run_driver("print('via agent')").stdout.strip() == "via agent" and fallbacks() == 1

        # the head down: the agent went with it, and a one-shot driver cannot attach: a clear error, at once
        seen.append(cluster.agent.pid())
        cluster.stop_node("head")
        started = time.monotonic()
        with pytest.raises(StackError, match="node head is not running: no driver can attach there"):
            cluster.run_driver("print(1)")
        failed_after = time.monotonic() - started
        cluster.start_node("head")
        cluster.wait_healthy()
        wait_until("the agent to come back with the head", lambda: cluster.run_driver("print(7)").stdout.strip() == "7"
                   and cluster.agent.pid() is not None and cluster.agent.stats().commands > 0, timeout_s=120,
                   interval_s=1.0)
        print(f"fault agent: a command with the head down failed after {failed_after:.3f}s; "
              f"{fallbacks()} fallbacks to a one-shot driver in the test")
        seen += [p.host_pid for n in ("head", "worker1", "worker2") for p in cluster.node_processes(n)]
    finally:
        cluster.down()
    assert_nothing_left(state_dir, [p for p in seen if p])
    assert not (state_dir / cluster.run_id).exists()


def test_sigkill_during_up_then_next_up_sweeps_and_succeeds(tmp_path, state_dir):
    cfg_path = config_file(tmp_path, state_dir)
    proc = subprocess.Popen([sys.executable, "-m", "harness", "up", "--stack-config", str(cfg_path)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # kill it once the head's processes run: network, Redis and the supervisor exist by then
        def head_started() -> str | None:
            runs = [p.name for p in state_dir.iterdir() if system.RUN_ID_RE.fullmatch(p.name)]
            if runs and '"node_started", "target": "head"' in (RunLayout(state_dir, runs[0]).events_file.read_text()
                                                                if RunLayout(state_dir, runs[0]).events_file.exists() else ""):
                return runs[0]
            return None

        crashed = wait_until("the interrupted up to start the head", head_started, timeout_s=60, interval_s=0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert leftovers(state_dir, crashed), "the killed up left nothing to sweep: the test proves nothing"

    cluster = LocalCluster(load_config(cfg_path))
    swept: list[str] = []
    try:
        cluster.up(progress=swept.append)
        assert any(crashed in line for line in swept if line.startswith("swept")), swept
        assert not leftovers(state_dir, crashed)
        assert cluster.status().serve_api_reachable
    finally:
        cluster.down()
    assert_nothing_left(state_dir)


# --- bad input: a clear message, a non-zero exit, nothing left behind -------------------------------------

def tools_dir_without(tmp_path: Path, missing: str) -> str:
    """A PATH with every tool the backend needs except ``missing``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ip", "iptables", "unshare", "nsenter", "redis-server"):
        if tool != missing and shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    return str(bin_dir)


@pytest.mark.parametrize("missing, expected", [
    ("redis-server", "redis-server not found on PATH: install the Debian package redis-server"),
    ("ip", "ip not found on PATH: install the Debian package iproute2"),
])
def test_missing_tool(tmp_path, state_dir, missing, expected):
    env = {**os.environ, "PATH": tools_dir_without(tmp_path, missing)}
    res = harness_cli("up", "--stack-config", str(config_file(tmp_path, state_dir)), env=env)
    assert res.returncode == ExitCode.STACK and expected in res.stderr, res.stderr
    assert_nothing_left(state_dir)


def test_without_root_capabilities(tmp_path, state_dir):
    # root without its capabilities is what a plain user has: no CAP_NET_ADMIN, no CAP_SYS_ADMIN
    res = harness_cli("up", "--stack-config", str(config_file(tmp_path, state_dir)),
                      prefix=("setpriv", "--bounding-set=-all", "--inh-caps=-all"))
    assert res.returncode == ExitCode.STACK, res.stdout + res.stderr
    assert "needs root" in res.stderr, res.stderr
    assert_nothing_left(state_dir)


def test_malformed_config(tmp_path, state_dir):
    res = harness_cli("up", "--stack-config", str(config_file(tmp_path, state_dir, '[workers]\ncount = "two"\n')))
    assert res.returncode == 2 and "key 'workers.count': Input should be a valid integer" in res.stderr, res.stderr
    assert_nothing_left(state_dir)


def test_app_import_path_that_does_not_import(tmp_path, state_dir):
    res = harness_cli("up", "--stack-config",
                      str(config_file(tmp_path, state_dir, '[app]\nimport_path = "no_such_module:app"\n')))
    assert res.returncode == 2, res.stderr  # a configuration error, before anything starts
    assert "key 'app.import_path': application 'app': module 'no_such_module' of import path " \
           "'no_such_module:app' is not found" in res.stderr, res.stderr
    assert_nothing_left(state_dir)


def test_app_module_that_imports_but_has_no_such_attribute(tmp_path, state_dir):
    """The module is found, but the import path's attribute is not in it: the real import at `up` says so."""
    res = harness_cli("up", "--stack-config",
                      str(config_file(tmp_path, state_dir, '[app]\nimport_path = "sleepy_pid:no_such_app"\n')))
    assert res.returncode == ExitCode.STACK, res.stderr
    assert "key 'app.import_path': application 'app': import path 'sleepy_pid:no_such_app' does not import" \
        in res.stderr, res.stderr
    assert "no_such_app" in res.stderr
    assert_nothing_left(state_dir)


def test_address_already_taken(tmp_path, state_dir):
    dummy = "sctestbr0"  # a bridge: this kernel has no dummy links
    system.run(["ip", "link", "add", dummy, "type", "bridge"])
    try:
        system.run(["ip", "addr", "add", "10.213.99.1/24", "dev", dummy])
        res = harness_cli("up", "--stack-config",
                          str(config_file(tmp_path, state_dir, network='subnet = "10.213.99.0/24"')))
    finally:
        system.delete_link(dummy)
    assert res.returncode == ExitCode.STACK, res.stderr
    assert f"address 10.213.99.1/24 on {dummy} is already in network.subnet 10.213.99.0/24" in res.stderr
    assert_nothing_left(state_dir)


def test_stack_that_does_not_become_healthy_names_the_part_and_its_log(tmp_path, state_dir):
    # the app's constructor sleeps 10 s: an app_healthy_s of 3 s cannot be met
    password = "a-password-that-must-not-leak"
    cfg = config_file(tmp_path, state_dir, "[timeouts]\napp_healthy_s = 3\n")
    res = harness_cli("up", "--stack-config", str(cfg), env={**os.environ, "SERVE_CHAOS_REDIS_PASSWORD": password})
    assert res.returncode == ExitCode.STACK, res.stderr
    assert "app: timed out after 3s waiting for app 'app' healthy" in res.stderr, res.stderr
    assert "/6 replicas of SleepyPid RUNNING" in res.stderr  # what was last seen
    assert "--- tail of" in res.stderr  # the logs of the part that failed
    assert password not in res.stderr + res.stdout
    assert_nothing_left(state_dir)


# --- down returns only when every process it signalled is gone --------------------------------------------

def run_processes(state_dir: Path, run_id: str) -> dict[int, int | None]:
    """PID → start time of every live process of ``run_id``: by its label, and by membership of its namespaces."""
    pids = {pid for pid, rid in system.labeled_processes().items() if rid == run_id}
    for ns in system.list_netns():
        if ns.startswith(f"{run_id}-"):
            pids |= set(system.netns_pids(ns))
    pids.discard(os.getpid())
    return {pid: system.process_start_time(pid) for pid in pids if system.pid_alive(pid)}


def still_in_proc(seen: dict[int, int | None]) -> dict[int, str]:
    """The PIDs of ``seen`` that are still in /proc as the same process (a zombie counts): PID → state, name, parent.
    Read here from /proc, not with the backend's own check (system.still_in_proc), which this test judges."""
    left = {}
    for pid, started in seen.items():
        state = system.process_state(pid)
        if state is not None and system.process_start_time(pid) == started:
            left[pid] = f"{state} {system.process_name(pid) or '?'} (parent {system.process_parent(pid)})"
    return left


def test_down_after_a_sigkilled_up_returns_only_when_every_process_is_gone(tmp_path, state_dir):
    """SIGKILL `up` once Redis runs; `up` again (it sweeps the crashed run); `down`. Right after `down`
    returns, no process of either run is in /proc at all, zombies included, and nothing else is left."""
    cfg_path = config_file(tmp_path, state_dir, network='subnet = "10.213.12.0/24"')
    proc = subprocess.Popen([sys.executable, "-m", "harness", "up", "--stack-config", str(cfg_path)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    runs: list[str] = []
    seen: dict[int, int | None] = {}
    try:
        try:
            def crashed_run_with_redis() -> str | None:
                """The crashed run's id once its Redis runs (the PID-namespace init of its redis node)."""
                found = [p.name for p in state_dir.iterdir() if system.RUN_ID_RE.fullmatch(p.name)]
                for run_id in found:
                    pids = system.netns_pids(f"{run_id}-redis")
                    if any(system.ns_pid(p) == 1 and system.pid_alive(p) for p in pids):
                        return run_id
                return None

            runs.append(wait_until("the interrupted up to start Redis", crashed_run_with_redis, timeout_s=60, interval_s=0.05))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        seen |= run_processes(state_dir, runs[0])
        assert any(system.process_name(p) == "redis-server" for p in seen), \
            f"the killed up left no Redis to sweep: the test proves nothing ({seen})"

        up = harness_cli("up", "--stack-config", str(cfg_path))
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"swept leftovers of earlier runs: {runs[0]}" in up.stdout + up.stderr, up.stdout + up.stderr
        runs.append((state_dir / "current").read_text().strip())
        second = run_processes(state_dir, runs[1])
        assert any(system.process_name(p) == "redis-server" for p in second), second
        seen |= second
    finally:
        down = harness_cli("down", "--stack-config", str(cfg_path))
    left = still_in_proc(seen)  # IMMEDIATELY after down returned
    gone_after = "n/a"
    if left:
        started = time.monotonic()
        wait_until("the leftover processes to leave /proc", lambda: not still_in_proc(seen), timeout_s=30,
                   interval_s=0.01)
        gone_after = f"{time.monotonic() - started:.2f}s"
    print(f"down: {down.stdout.strip()}; {len(seen)} processes of runs {runs} tracked; "
          f"still in /proc right after down: {len(left)}")
    assert down.returncode == 0, down.stdout + down.stderr
    assert left == {}, f"still in /proc right after down returned: {left}; they left /proc {gone_after} later"
    labelled = {pid: rid for pid, rid in system.labeled_processes().items() if rid in runs}
    assert labelled == {}, f"labelled processes left: {labelled}"
    for run_id in runs:
        assert not leftovers(state_dir, run_id), f"left behind by {run_id}: {leftovers(state_dir, run_id)}"
