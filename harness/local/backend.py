"""LocalCluster: the local backend's client side. ``up`` builds the network, starts the node supervisor
and waits phase by phase until the app serves; ``down`` and ``sweep`` remove everything by run-id label.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import redis

from harness.local import system
from harness.local.agent_client import (
    AgentClient,
    AgentDown,
    agent_command,
    launch_in_namespaces,
)
from harness.local.layout import (
    HEAD_NODE,
    REDIS_NODE,
    NodeSpec,
    RunLayout,
    bridge_address,
    plan_nodes,
)
from harness.secrets import Secret
from harness.stack.app import AppUnderTest, app_under_test
from harness.stack.bringup import ANSI_RE, Progress, UpReport, new_run_id
from harness.stack.bringup import quiet as _quiet
from harness.stack.cluster import (
    DriverResult,
    Endpoint,
    NodeInfo,
    NodeProcess,
    ProxyRoute,
    RayActor,
    StackEvent,
    StackStatus,
)
from harness.stack.config import StackConfig
from harness.stack.drivers import DRIVER_TIMEOUT_S, kill_actor_snippet, read_routing
from harness.stack.errors import StackError
from harness.stack.health import answer_once, probe_url, unhealthy_reason
from harness.stack.serve_api import (
    HeadApi,
    ServeApiUnavailable,
    ServeDeployRejected,
    read_serve,
)
from harness.stack.serve_config import ServeConfig, build_serve_config
from harness.waiting import WaitTimeout, wait_until

CURRENT_FILE = "current"
SUPERVISOR_STOP_S = 5.0  # the supervisor stops every node and exits on SIGTERM; the sweep kills what is left after
PROCESSES_EXIT_S = 10.0  # every process a sweep SIGKILLed has exited
PROCESSES_GONE_S = 10.0  # ... and left /proc: an orphan's zombie waits for the machine's init (up to ~2 s here)
LOG_TAIL_LINES = 25


class LocalCluster:
    """One local stack. Create with a config (``load_config()``); ``attach()`` finds the running one."""

    def __init__(self, config: StackConfig, run_id: str | None = None, secret: Secret | None = None):
        self.config = config
        self.run_id = run_id or new_run_id()
        self.layout = RunLayout(config.network.state_dir, self.run_id)
        self.secret = secret or Secret.from_env_or_generate(config.redis.password_env)
        self.nodes: tuple[NodeSpec, ...] = plan_nodes(config, self.layout.names)
        self.api = HeadApi(self.head.address, config.app.dashboard_port)
        self.agent = AgentClient(self.layout.root / "agent.sock", self.layout.root / "agent.pid",
                                 launch=self._launch_agent, head_alive=lambda: self.node_alive(HEAD_NODE))
        self.use_agent = config.drivers.fault_agent

    # --- finding a run --------------------------------------------------------------------------------
    @classmethod
    def attach(cls, state_dir: str | Path = "/tmp/serve-chaos", run_id: str | None = None) -> LocalCluster:
        """The stack that ``up`` left running (or ``run_id``'s)."""
        state = Path(state_dir)
        if run_id is None:
            try:
                run_id = (state / CURRENT_FILE).read_text().strip()
            except FileNotFoundError:
                raise StackError(f"no local stack is up (nothing in {state}); start one with `serve-chaos up`") from None
        layout = RunLayout(state, run_id)
        if not layout.config_file.exists():
            raise StackError(f"run {run_id} has no state in {layout.root}; it is gone or was never up")
        cluster = cls(layout.read_config(), run_id=run_id, secret=layout.read_secret())
        cluster.nodes = layout.read_nodes()
        return cluster

    @property
    def head(self) -> NodeSpec:
        return next(n for n in self.nodes if n.role == "head")

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise StackError(f"no node named {name!r}; nodes: {', '.join(n.name for n in self.nodes)}")

    # --- up -------------------------------------------------------------------------------------------
    def up(self, progress: Progress = _quiet) -> UpReport:
        preflight(self.config)
        report = UpReport(self.run_id)
        state_dir = Path(self.config.network.state_dir)
        live = _live_run(state_dir)
        if live is not None:
            raise StackError(f"a stack is already up (run {live}); run `serve-chaos down` first")
        swept = sweep(state_dir, keep=tuple(live_runs()))
        if swept:
            progress(f"swept leftovers of earlier runs: {', '.join(swept)}")
        check_subnet_free(self.config)
        try:
            self._up(report, progress)
        except BaseException:
            progress("bring-up failed: removing what was created")
            self._teardown()
            raise
        return report

    def _up(self, report: UpReport, progress: Progress) -> None:
        layout, cfg = self.layout, self.config
        layout.create()
        (Path(cfg.network.state_dir) / CURRENT_FILE).write_text(self.run_id)
        (layout.root / "state").write_text("starting")
        (layout.root / "owner.pid").write_text(str(os.getpid()))
        layout.write_secret(self.secret)
        layout.write_config(cfg)
        layout.write_nodes(self.nodes)
        layout.serve_config_file.write_text(json.dumps(build_serve_config(cfg).to_dict(), indent=2))
        report.run(progress, "network", self._create_network)
        self._start_supervisor()
        if cfg.redis.enabled:
            report.run(progress, "redis", self._start_redis)
        report.run(progress, "head", self._start_head)
        report.run(progress, "workers", self._start_workers)
        report.run(progress, "deploy", self._deploy)
        report.run(progress, "app healthy", self.wait_healthy)
        if self.use_agent and self.agent.usable:
            report.run(progress, "fault agent", lambda: self.agent.wait_ready(timeout_s=self.config.timeouts.head_ready_s))
        layout.operator_armed_file.write_text("armed")
        (layout.root / "state").write_text("up")

    def _create_network(self) -> None:
        names, cfg = self.layout.names, self.config
        system.create_bridge(names.bridge, bridge_address(cfg))
        system.add_forward_accept(names.bridge, names.iptables_comment)
        prefix = cfg.network.subnet.split("/")[1]
        for node in self.nodes:
            system.create_netns_with_veth(node.netns, names.veth_host(node.index), names.veth_peer(node.index),
                                          names.bridge, f"{node.address}/{prefix}")

    def _start_supervisor(self) -> None:
        env = {**os.environ, system.LABEL_ENV: self.run_id}
        log = self.layout.node_log("supervisor").open("ab")
        subprocess.Popen([sys.executable, "-m", "harness.local.supervisor", str(self.layout.root)],
                         env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True, cwd=str(Path(__file__).resolve().parents[2]))

    def _start_redis(self) -> None:
        self.layout.set_desired(REDIS_NODE, "running")
        node = self.node(REDIS_NODE)

        def ping() -> bool:
            client = redis.Redis(host=node.address, port=self.config.redis.port, password=self.secret.reveal(),
                                 socket_timeout=2, socket_connect_timeout=2)
            try:
                return bool(client.ping())
            finally:
                client.close()

        self._wait("redis", f"Redis to answer PING at {node.address}:{self.config.redis.port}", ping,
                   self.config.timeouts.redis_ready_s, [REDIS_NODE])

    def _start_head(self) -> None:
        self.layout.set_desired(HEAD_NODE, "running")
        self._wait("head", f"the head's GCS and dashboard at {self.head.address}", lambda: self.api.nodes(),
                   self.config.timeouts.head_ready_s, [HEAD_NODE])

    def _start_workers(self) -> None:
        workers = [n for n in self.nodes if n.role == "worker"]
        for n in workers:
            self.layout.set_desired(n.name, "running")

        def all_alive() -> bool:
            alive = {a for a, n in self.api.newest_nodes().items() if n.state == "ALIVE"}
            return all(w.address in alive for w in workers)

        self._wait("workers", f"{len(workers)} workers ALIVE in Ray's node table", all_alive,
                   self.config.timeouts.workers_ready_s, [w.name for w in workers])

    def _deploy(self) -> None:
        config = self._serve_config()

        def put() -> bool:
            self.api.deploy(config)
            return True

        try:
            self._wait("deploy", "the Serve REST API to accept the Serve config", put, self.config.timeouts.deploy_s,
                       [HEAD_NODE])
        except StackError:
            try:  # a refusal is the user's to fix: say what Serve answered
                self.api.deploy(config)
            except ServeDeployRejected as exc:
                raise StackError(f"Serve rejected the Serve config: {self.secret.scrub(str(exc))}") from None
            except ServeApiUnavailable:
                pass
            raise
        self.layout.append_event("harness", "serve_config_applied", self.app().application, "initial deploy")

    def wait_healthy(self, timeout_s: float | None = None) -> StackStatus:
        """Until the app is RUNNING with every replica RUNNING and every proxy HEALTHY and answering."""
        cfg = self.config
        last: list[StackStatus] = []

        def healthy() -> StackStatus | None:
            status = self.status()
            last[:] = [status]
            problem = self._down_nodes() or unhealthy_reason(status, cfg)
            if problem:
                raise _Unhealthy(problem)
            for proxy in status.proxies:
                answer_once(probe_url(proxy.url or "", app_under_test(cfg)), timeout_s=5.0)
            return status

        return self._wait("app", f"app {app_under_test(cfg).application!r} healthy (its replicas RUNNING, "
                          "every proxy answering)", healthy, timeout_s or cfg.timeouts.app_healthy_s, [HEAD_NODE],
                          serve_logs=True)

    def _wait(self, part: str, what: str, probe: Callable[[], object], timeout_s: float, log_nodes: list[str],
              serve_logs: bool = False):
        """Wait for one part of the stack; on timeout a StackError names the part and shows its logs' tails."""
        try:
            return wait_until(what, probe, timeout_s=timeout_s, interval_s=0.5,
                              describe=lambda: self.log_tails(log_nodes, serve_logs=serve_logs))
        except WaitTimeout as exc:
            raise StackError(self.secret.scrub(f"{part}: {exc}")) from None

    # --- down and sweep -------------------------------------------------------------------------------
    def close(self) -> None:
        """Let go of the stack without changing it (nothing to stop: the local stack needs no forwards)."""

    def down(self) -> list[str]:
        """Remove this run and anything earlier runs left behind; return the run ids removed. It returns
        only when every process it signalled has left /proc (zombies included), or raises StackError."""
        supervisor = self._stop_supervisor()
        others = tuple(rid for rid in live_runs() if rid != self.run_id)
        removed = sweep(Path(self.config.network.state_dir), keep=others)
        wait_processes_gone(supervisor, f"the node supervisor of run {self.run_id}")
        return removed

    def _teardown(self) -> None:
        supervisor = self._stop_supervisor()
        sweep(Path(self.config.network.state_dir), keep=(), only=(self.run_id,))
        wait_processes_gone(supervisor, f"the node supervisor of run {self.run_id}")

    def _stop_supervisor(self) -> dict[int, int]:
        """SIGTERM the supervisor (it stops every node, and reaps them) and wait for it to exit; return it as
        PID → start time, for the caller to wait until it has left /proc."""
        pid = _supervisor_pid(self.layout)
        if pid is None:
            return {}
        identity = system.process_identities([pid])
        system.signal_pids([pid], signal.SIGTERM)
        try:
            wait_until("the node supervisor to stop every node and exit", lambda: not system.pid_alive(pid),
                       timeout_s=SUPERVISOR_STOP_S, interval_s=0.05)
        except WaitTimeout:
            pass  # the sweep kills what is left, by label
        return identity

    # --- queries --------------------------------------------------------------------------------------
    def status(self) -> StackStatus:
        port, route = self.config.app.serve_port, self._route()
        view = read_serve(self.api, {n.address: n.name for n in self.nodes},
                          lambda node, ip: f"http://{ip}:{port}{route}" if ip else None)
        ray_nodes = view.ray_nodes
        nodes = tuple(
            NodeInfo(n.name, n.role, n.address, self.node_alive(n.name),
                     ray_nodes[n.address].node_id if n.address in ray_nodes else None,
                     ray_nodes[n.address].state if n.address in ray_nodes else None)
            for n in self.nodes if n.is_ray
        )
        return StackStatus(self.run_id, nodes, view.controller, view.proxies, view.replicas, view.apps, view.reachable)

    def _route(self) -> str:
        return app_under_test(self.config).route

    def app(self) -> AppUnderTest:
        """The application under test (the stack config's [app] resolved against its Serve config)."""
        return app_under_test(self.config)

    def endpoints(self, route: str | None = None) -> tuple[Endpoint, ...]:
        """One proxy URL per node that should run (a node lost for good has none), at ``route`` (default: the app's)."""
        path = route if route is not None else self._route()
        return tuple(Endpoint(n.name, f"http://{n.address}:{self.config.app.serve_port}{path}")
                     for n in self.nodes if n.is_ray and self.layout.desired(n.name) == "running")

    def node_processes(self, node: str) -> tuple[NodeProcess, ...]:
        spec = self.node(node)
        procs = []
        for pid in system.netns_pids(spec.netns):
            nspid = system.ns_pid(pid)
            if nspid is None or not system.pid_alive(pid):
                continue
            procs.append(NodeProcess(node, pid, nspid, system.process_name(pid),
                                     self.secret.scrub(system.process_cmdline(pid))[:300],
                                     system.process_state(pid) or ""))
        return tuple(procs)

    def node_alive(self, node: str) -> bool:
        return any(p.ns_pid == 1 for p in self.node_processes(node))

    def events(self) -> tuple[StackEvent, ...]:
        return self.layout.read_events()

    # --- fault primitives -----------------------------------------------------------------------------
    def kill_node(self, node: str) -> None:
        """SIGKILL every process of the node (a pod kill); its restart policy decides what follows."""
        spec = self.node(node)
        pids = system.netns_pids(spec.netns)
        if not pids:
            raise StackError(f"node {node} has no processes to kill")
        system.signal_pids(pids, signal.SIGKILL)
        self.layout.append_event("harness", "node_killed", node, f"SIGKILL to {len(pids)} processes")

    def stop_node(self, node: str, timeout_s: float = 15) -> None:
        self.layout.set_desired(self.node(node).name, "stopped")
        wait_until(f"node {node} to have no processes", lambda: not self.node_processes(node), timeout_s=timeout_s,
                   interval_s=0.1, describe=lambda: str([p.name for p in self.node_processes(node)]))

    def start_node(self, node: str, timeout_s: float = 15) -> None:
        """Start the node now, whatever its restart policy (a no-op for a node that runs)."""
        if self.node_alive(node):
            self.layout.set_desired(self.node(node).name, "running")
            return
        self.layout.request_start(self.node(node).name)
        wait_until(f"node {node} to run", lambda: self.node_alive(node), timeout_s=timeout_s, interval_s=0.1)

    def freeze_node(self, node: str) -> None:
        pids = system.netns_pids(self.node(node).netns)
        system.signal_pids(pids, signal.SIGSTOP)
        self.layout.append_event("harness", "node_frozen", node, f"SIGSTOP to {len(pids)} processes")

    def thaw_node(self, node: str) -> None:
        pids = system.netns_pids(self.node(node).netns)
        system.signal_pids(pids, signal.SIGCONT)
        self.layout.append_event("harness", "node_thawed", node, f"SIGCONT to {len(pids)} processes")

    def _host_pid(self, node: str, pid: int) -> int:
        """The machine's PID of the process Ray reports as ``pid`` on ``node`` (its own PID namespace)."""
        found = next((p.host_pid for p in self.node_processes(node) if p.ns_pid == pid), None)
        if found is None:
            raise StackError(f"node {node} has no process {pid}")
        return found

    def freeze_process(self, node: str, pid: int) -> None:
        """SIGSTOP one process of a node (a hung actor), by the PID Ray reports for it."""
        system.signal_pids([self._host_pid(node, pid)], signal.SIGSTOP)
        self.layout.append_event("harness", "process_frozen", node, f"SIGSTOP to pid {pid}")

    def thaw_process(self, node: str, pid: int) -> None:
        """SIGCONT to a process frozen by ``freeze_process`` (a no-op for one that is gone)."""
        try:
            host_pid = self._host_pid(node, pid)
        except StackError:
            return
        system.signal_pids([host_pid], signal.SIGCONT)
        self.layout.append_event("harness", "process_thawed", node, f"SIGCONT to pid {pid}")

    @property
    def _partition_comment(self) -> str:
        return f"{self.layout.names.iptables_comment}:partition"

    def partition(self, node: str, peer: str) -> None:
        """No packet between ``node`` and ``peer`` (a node, or redis), either way: a DROP on each receiver's
        INPUT chain for the other's address. Traffic from the machine (the harness's) still reaches both."""
        a, b = self.node(node), self.node(peer)
        if a.name == b.name:
            raise StackError(f"cannot partition {node} from itself")
        system.add_input_drop(a.netns, b.address, self._partition_comment)
        system.add_input_drop(b.netns, a.address, self._partition_comment)
        self.layout.append_event("harness", "partitioned", node, f"from {peer}: DROP on both INPUT chains")

    def unpartition(self, node: str, peer: str) -> None:
        a, b = self.node(node), self.node(peer)
        system.delete_input_drop(a.netns, b.address, self._partition_comment)
        system.delete_input_drop(b.netns, a.address, self._partition_comment)
        self.layout.append_event("harness", "unpartitioned", node, f"from {peer}: the DROP rules removed")

    def partitioned_from(self, node: str) -> tuple[str, ...]:
        """The nodes whose packets ``node`` drops (the partitions in place, as its INPUT chain says)."""
        drops = set(system.netns_input_drops(self.node(node).netns, self._partition_comment))
        return tuple(n.name for n in self.nodes if n.address in drops)

    @property
    def _degrade_comment(self) -> str:
        return f"{self.layout.names.iptables_comment}:degrade"

    def degrade_network(self, node: str, rate_kbit: int, loss: float) -> None:
        """A slow, lossy link into ``node``: tbf at ``rate_kbit`` on its host-side veth (what enters the node) and
        each packet into it dropped with probability ``loss`` (iptables statistic). Everyone's packets to the
        node pass there, the harness's traffic too: the node's own endpoint sees the link as a client would."""
        spec = self.node(node)
        if rate_kbit > 0:
            system.set_rate_limit(self.layout.names.veth_host(spec.index), rate_kbit)
        if loss > 0:
            system.delete_rules_with_comment(spec.netns, self._degrade_comment)
            system.add_random_drop(spec.netns, loss, self._degrade_comment)
        self.layout.append_event("harness", "network_degraded", node, f"tbf {rate_kbit} kbit/s, loss {loss:.1%}")

    def restore_network(self, node: str) -> None:
        spec = self.node(node)
        system.clear_rate_limit(self.layout.names.veth_host(spec.index))
        system.delete_rules_with_comment(spec.netns, self._degrade_comment)
        self.layout.append_event("harness", "network_restored", node, "tbf and random drop removed")

    def network_degradation(self, node: str) -> str | None:
        """What degrade_network put in place on ``node``'s link (None: nothing)."""
        spec = self.node(node)
        rate = system.rate_limit_of(self.layout.names.veth_host(spec.index))
        out = system.run(["ip", "netns", "exec", spec.netns, "iptables", "-S", "INPUT"], check=False).stdout
        loss = "statistic" in out and self._degrade_comment in out.replace('"', "")
        parts = [f"tbf {rate}" if rate else "", "random drop" if loss else ""]
        return ", ".join(p for p in parts if p) or None

    def terminate_node(self, node: str) -> None:
        """SIGTERM to the node's init (``ray start --block``), as the kubelet does when a pod is deleted: Ray's
        graceful drain runs if the node's environment turns it on (RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S)."""
        inits = [p.host_pid for p in self.node_processes(node) if p.ns_pid == 1]
        if not inits:
            raise StackError(f"node {node} has no init process to terminate")
        system.signal_pids(inits, signal.SIGTERM)
        self.layout.append_event("harness", "node_terminated", node, "SIGTERM to its init")

    def run_driver(self, snippet: str, timeout_s: float = DRIVER_TIMEOUT_S, node: str = HEAD_NODE) -> DriverResult:
        """Run Python as a Ray driver inside a node's namespaces (the guide's ``kubectl exec ... python``).

        The snippet runs after ``ray.init`` attached to the cluster; ``ray`` is imported. On the head it goes to
        the fault agent (one long-lived driver: milliseconds, no process start on the machine under test);
        where the agent is down (the head was killed, it is still attaching) a one-shot driver runs it, the
        events say so, and the agent is started again in the background.
        """
        return self._run_driver(snippet, timeout_s, node)[0]

    def _run_driver(self, snippet: str, timeout_s: float, node: str) -> tuple[DriverResult, float | None]:
        """The result, and the agent-side time the snippet began (None on a one-shot driver)."""
        if node == HEAD_NODE and self.use_agent:
            try:
                answer = self.agent.run(snippet, timeout_s)
                return DriverResult(answer.result.returncode, self.secret.scrub(answer.result.stdout),
                                    self.secret.scrub(answer.result.stderr)), answer.started_wall
            except AgentDown as exc:
                self.layout.append_event("harness", "agent_fallback", HEAD_NODE,
                                         f"fault agent {exc}: a one-shot driver runs the snippet")
                self.agent.start_in_background()
        return self._one_shot_driver(snippet, timeout_s, node), None

    def _launch_agent(self) -> int:
        init = next((p.host_pid for p in self.node_processes(HEAD_NODE) if p.ns_pid == 1), None)
        if init is None:
            raise StackError("the head is not running: the fault agent cannot start there")
        env = {**os.environ, system.LABEL_ENV: self.run_id, "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ADDRESS", None)
        pid = launch_in_namespaces(init, agent_command(self.agent.socket_path, f"{self.head.address}:{self.config.gcs.port}",
                                                       self.head.address), env, self.layout.logs_dir / "agent.log")
        self.layout.append_event("harness", "agent_started", HEAD_NODE, f"pid {pid}")
        return pid

    def _one_shot_driver(self, snippet: str, timeout_s: float, node: str) -> DriverResult:
        spec = self.node(node)
        init = next((p.host_pid for p in self.node_processes(node) if p.ns_pid == 1), None)
        if init is None:
            raise StackError(f"node {node} is not running: no driver can attach there")
        prelude = (
            "import ray\n"
            f"ray.init(address='{self.head.address}:{self.config.gcs.port}', _node_ip_address='{spec.address}', "
            "logging_level='ERROR', log_to_driver=False)\n"
        )
        env = {**os.environ, system.LABEL_ENV: self.run_id, "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ADDRESS", None)
        try:
            proc = subprocess.run(["nsenter", "-t", str(init), "-p", "-m", "-n", "--", sys.executable, "-c",
                                   prelude + snippet], capture_output=True, text=True, timeout=timeout_s, env=env)
        except subprocess.TimeoutExpired as exc:
            return DriverResult(-1, self.secret.scrub(_text(exc.stdout)),
                                self.secret.scrub(f"driver timed out after {timeout_s:g}s\n{_text(exc.stderr)}"))
        return DriverResult(proc.returncode, self.secret.scrub(proc.stdout), self.secret.scrub(proc.stderr))

    def proxy_routing(self, routes: Iterable[str]) -> tuple[ProxyRoute, ...]:
        """Each live proxy's replica set per route, read by a driver (harness.stack.drivers)."""
        return read_routing(self.run_driver, routes)

    def kill_actor(self, name: str, namespace: str = "serve", no_restart: bool = True) -> DriverResult:
        result, sent_wall = self._run_driver(kill_actor_snippet(name, namespace, no_restart), DRIVER_TIMEOUT_S, HEAD_NODE)
        sent = f"kill sent by the fault agent at {sent_wall:.3f}" if sent_wall else "one-shot driver"
        self.layout.append_event("harness", "actor_killed" if result.returncode == 0 else "actor_kill_failed", name,
                                 f"no_restart={no_restart}; {sent}; {result.stderr.strip()[-300:]}",
                                 at_wall=sent_wall)
        return result

    def add_worker(self, timeout_s: float = 60) -> NodeSpec:
        """A new worker node joins (what KubeRay does when a node is lost): network, then the supervisor starts it."""
        names, cfg = self.layout.names, self.config
        index = max(n.index for n in self.nodes) + 1
        number = 1 + max(int(n.name[len("worker"):]) for n in self.nodes if n.role == "worker") if any(
            n.role == "worker" for n in self.nodes) else 1
        net = ipaddress.ip_network(cfg.network.subnet)
        spec = NodeSpec(f"worker{number}", "worker", index, names.netns(f"worker{number}"), str(net[index]),
                        cfg.workers.restart, cfg.workers.restart_delay_s)
        system.create_netns_with_veth(spec.netns, names.veth_host(index), names.veth_peer(index), names.bridge,
                                      f"{spec.address}/{net.prefixlen}")
        self.nodes = (*self.nodes, spec)
        self.layout.write_nodes(self.nodes)
        self.layout.set_desired(spec.name, "running")
        self.layout.append_event("harness", "node_added", spec.name, spec.address)
        wait_until(f"new node {spec.name} to be ALIVE in Ray",
                   lambda: (n := self.api.newest_nodes().get(spec.address)) is not None and n.state == "ALIVE",
                   timeout_s=timeout_s)
        return spec

    def allowed_networks(self) -> tuple[str, ...]:
        """Where traffic may go: the stack's own subnet, which exists only on this machine."""
        return (self.config.network.subnet,)

    def health_problem(self) -> str | None:
        """Why the stack is not healthy now (every node that should run runs; every app, replica RUNNING;
        proxies HEALTHY), or None."""
        return self._down_nodes() or unhealthy_reason(self.status(), self.config)

    def _down_nodes(self) -> str | None:
        down = [n.name for n in self.nodes if self.layout.desired(n.name) == "running" and not self.node_alive(n.name)]
        return f"nodes that should run are down: {', '.join(down)}" if down else None

    def worker_names(self) -> tuple[str, ...]:
        """Workers whose desired state is running (a node lost for good is not one)."""
        return tuple(n.name for n in self.nodes if n.role == "worker" and self.layout.desired(n.name) == "running")

    def set_operator(self, enabled: bool) -> None:
        """Arm or disarm the operator (a control scenario disarms it to show what it repairs)."""
        if enabled:
            self.layout.operator_armed_file.write_text("armed")
        else:
            self.layout.operator_armed_file.unlink(missing_ok=True)
        self.layout.append_event("harness", "operator_armed" if enabled else "operator_disarmed", "operator")

    def apply_serve_config(self) -> None:
        """Apply the stack's Serve config now (what the operator does when the app is gone)."""
        self.api.deploy(self._serve_config())
        self.layout.append_event("harness", "serve_config_applied", self.app().application, "applied by hand")

    def _serve_config(self) -> ServeConfig:
        """The Serve config this run applies (kept in its run folder, which the operator reads too)."""
        return ServeConfig.from_dict(json.loads(self.layout.serve_config_file.read_text()), "the run's Serve config")

    def scale(self, application: str, deployment: str, num_replicas: int | None) -> None:
        """Apply the stack's Serve config with ``deployment`` of ``application`` at ``num_replicas``
        (None: as the stack's config says). The stored config, which the operator applies, is unchanged."""
        config = self._serve_config()
        if num_replicas is not None:
            config = config.with_replicas(application, deployment, num_replicas)
        self.api.deploy(config)
        self.layout.append_event("harness", "serve_config_applied", application,
                                 f"{deployment} scaled to {num_replicas if num_replicas is not None else 'its config'}")

    def upgrade_app(self, application: str, version: str | None) -> None:
        """Apply the stack's Serve config with ``application`` at a new ``version`` of its code (None: as the
        stack's config says), as a RayService update does; the stored config, which the operator applies, is
        unchanged."""
        config = self._serve_config()
        if version is not None:
            config = config.with_version(application, version)
        self.api.deploy(config)
        self.layout.append_event("harness", "serve_config_applied", application,
                                 f"code version {version}" if version is not None else "code as its config says")

    def actors(self, class_name: str | None = None, state: str | None = None) -> tuple[RayActor, ...]:
        return self.api.actors(class_name=class_name, state=state)

    # --- diagnostics ----------------------------------------------------------------------------------
    def collect_logs(self, dest: Path, max_bytes: int = 256 * 1024) -> None:
        """What a person needs to debug a failed scenario, secrets scrubbed: the harness's node logs, each
        node's Ray logs (last ``max_bytes`` of each), the stack's events and status."""
        dest.mkdir(parents=True, exist_ok=True)
        sources = list(self.layout.logs_dir.glob("*.log"))
        for node in self.nodes:
            logs = self.layout.ray_temp_dir(node.name) / "session_latest" / "logs"
            for pattern in ("raylet.out", "gcs_server.out", "dashboard.log", "serve/*.log"):
                sources += sorted(logs.glob(pattern))
        for src in sources:
            rel = src.relative_to(self.layout.root) if src.is_relative_to(self.layout.root) else Path(src.name)
            target = dest / str(rel).replace("/session_latest/logs", "").replace("/", "__")
            with src.open("rb") as fh:
                fh.seek(max(0, src.stat().st_size - max_bytes))
                target.write_text(self.secret.scrub(fh.read().decode(errors="replace")))
        events = self.layout.events_file.read_text() if self.layout.events_file.exists() else ""
        (dest / "events.jsonl").write_text(self.secret.scrub(events))
        (dest / "status.json").write_text(json.dumps(self.status().to_json(), indent=2))
        if self.use_agent:
            try:
                st = self.agent.stats()
                agent = {"running": True, "pid": st.pid, "cpu_s": st.cpu_s, "rss_mb": st.rss_mb, "commands": st.commands}
            except AgentDown as exc:
                agent = {"running": False, "why": str(exc)}
            (dest / "agent.json").write_text(json.dumps(agent, indent=2))

    def log_tails(self, parts: tuple[str, ...] | list[str], serve_logs: bool = False) -> str:
        """The last lines of the logs of ``parts`` (node names), secrets scrubbed."""
        files: list[Path] = []
        for part in parts:
            files.append(self.layout.node_log(part))
            logs = self.layout.ray_temp_dir(part) / "session_latest" / "logs"
            if part == HEAD_NODE:
                files += [logs / "gcs_server.out", logs / "dashboard.log"]
            if serve_logs:
                files += sorted((logs / "serve").glob("controller_*.log"))
                files += sorted((logs / "serve").glob("replica_*.log"))[-1:]
        out = []
        for f in files:
            try:
                lines = f.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            except OSError:
                continue
            out.append(f"--- tail of {f} ---\n" + "\n".join(lines))
        return self.secret.scrub(ANSI_RE.sub("", "\n".join(out)))


class _Unhealthy(Exception):
    pass


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


# --- preflight ----------------------------------------------------------------------------------------------

REQUIRED_TOOLS = {
    "ip": "iproute2", "iptables": "iptables", "unshare": "util-linux", "nsenter": "util-linux",
}


def preflight(cfg: StackConfig) -> None:
    """Everything that can be checked before anything is created."""
    if not _has_namespace_caps():
        raise StackError("the local backend needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to create network and "
                         "PID namespaces: run it as root or with sudo")
    tools = dict(REQUIRED_TOOLS)
    if cfg.redis.enabled:
        tools["redis-server"] = "redis-server"
    for tool, package in tools.items():
        if shutil.which(tool) is None:
            raise StackError(f"{tool} not found on PATH: install the Debian package {package} "
                             f"(`apt-get install {package}`, or `make setup`)")
    build_serve_config(cfg)
    check_import_path(cfg)


def _has_namespace_caps() -> bool:
    """CAP_NET_ADMIN (12) and CAP_SYS_ADMIN (21) in the effective set: what root normally has."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            caps = int(line.split()[1], 16)
            return bool(caps & (1 << 12)) and bool(caps & (1 << 21))
    return False


def check_import_path(cfg: StackConfig) -> None:
    """Every application's import path imports with the stack's python_path (a real import, in a child: the
    error names the key and shows the import's last line)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*cfg.app.python_path, os.environ.get("PYTHONPATH", "")]),
           "RAY_USAGE_STATS_ENABLED": "0"}
    for app in build_serve_config(cfg).applications:
        module, sep, attr = app.import_path.partition(":")
        if not sep:
            module, _, attr = app.import_path.rpartition(".")
        code = f"import importlib\nm = importlib.import_module({module!r})\ngetattr(m, {attr!r})\n"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            key = "app.import_path" if cfg.app.import_path and app.name == app_under_test(cfg).application else \
                "app.python_path"
            raise StackError(f"key {key!r}: application {app.name!r}: import path {app.import_path!r} does not "
                             f"import with python_path {cfg.app.python_path}: {last}")


def check_subnet_free(cfg: StackConfig) -> None:
    net = ipaddress.ip_network(cfg.network.subnet)
    for iface, cidr in system.addresses_in_use():
        if ipaddress.ip_interface(cidr).network.overlaps(net):
            raise StackError(f"address {cidr} on {iface} is already in network.subnet {net}: "
                             f"choose another subnet (key network.subnet) or remove that address")
    for route in system.routes_in_use():
        if route != "default" and ipaddress.ip_network(route, strict=False).overlaps(net):
            raise StackError(f"a route to {route} already covers network.subnet {net}: choose another subnet")


# --- runs, sweeping -------------------------------------------------------------------------------------------

def _supervisor_pid(layout: RunLayout) -> int | None:
    try:
        pid = int(layout.supervisor_pid_file.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if system.labeled_processes().get(pid) == layout.run_id else None


def live_runs() -> dict[str, Path]:
    """Runs that are in use, wherever their state folder is: run id → run folder.

    A run is live when its supervisor runs and either its ``up`` finished or the ``up`` that owns it is
    still running. A run whose ``up`` died midway is not live: it is left over, and swept."""
    live: dict[str, Path] = {}
    for pid, run_id in system.labeled_processes().items():
        argv = system.process_cmdline(pid).split()
        if "harness.local.supervisor" not in argv or not system.pid_alive(pid):
            continue
        run_dir = Path(argv[-1])
        try:
            state = (run_dir / "state").read_text().strip()
        except OSError:
            continue
        try:
            owner = int((run_dir / "owner.pid").read_text())
        except (OSError, ValueError):
            owner = None
        if state == "up" or (owner is not None and owner != os.getpid() and system.pid_alive(owner)):
            live[run_id] = run_dir
    return live


def _live_run(state_dir: Path) -> str | None:
    """The live run of this state folder, if any."""
    return next((rid for rid, run_dir in live_runs().items() if run_dir.parent == state_dir), None)


def find_runs(state_dir: Path) -> set[str]:
    """Run ids of everything labelled by the harness on this machine: processes, namespaces, links, rules, folders."""
    runs = set(system.labeled_processes().values())
    runs |= {m.group(0) for ns in system.list_netns() if (m := system.RUN_ID_RE.match(ns))}
    runs |= {m.group(0) for link in system.list_links() if (m := system.RUN_ID_RE.match(link))}
    for rule in system.iptables_rules_with_comment(system.IPTABLES_COMMENT_PREFIX):
        runs |= set(system.RUN_ID_RE.findall(" ".join(rule)))
    if state_dir.is_dir():
        runs |= {p.name for p in state_dir.iterdir() if p.is_dir() and system.RUN_ID_RE.fullmatch(p.name)}
    return {r for r in runs if system.RUN_ID_RE.fullmatch(r)}


def sweep(state_dir: Path, keep: tuple[str, ...] = (), only: tuple[str, ...] | None = None) -> list[str]:
    """Remove every labelled thing of every run (or of ``only``), except runs in ``keep``. Each step runs even if
    another failed; processes go first (by label and by namespace), then rules, links, namespaces, folders."""
    runs = sorted((set(only) if only is not None else find_runs(state_dir)) - set(keep))
    errors: list[str] = []
    for run_id in runs:
        names = system.Names(run_id)
        netns = [ns for ns in system.list_netns() if ns.startswith(f"{run_id}-")]

        def victims() -> list[int]:
            pids = {pid for pid, rid in system.labeled_processes().items() if rid == run_id}
            for ns in netns:
                pids |= set(system.netns_pids(ns))
            pids.discard(os.getpid())
            return [p for p in pids if system.pid_alive(p)]

        signalled: dict[int, int] = {}  # PID → start time of every process this sweep SIGKILLed

        def kill_victims() -> bool:
            """SIGKILL every live process of the run (again, and what started meanwhile); True once none is left."""
            pids = victims()
            signalled.update(system.process_identities(pids))
            system.signal_pids(pids, signal.SIGKILL)
            return not pids

        steps: list[tuple[str, Callable[[], object]]] = [
            ("kill processes", lambda: wait_until(f"processes of run {run_id} to exit", kill_victims,
                                                  timeout_s=PROCESSES_EXIT_S, interval_s=0.05,
                                                  describe=lambda: f"still running: {victims()}")),
            ("processes gone", lambda: wait_processes_gone(signalled, f"the processes of run {run_id}")),
            ("iptables rules", lambda: [system.delete_iptables_rule(r) for r in
                                        system.iptables_rules_with_comment(names.iptables_comment)]),
            ("links", lambda: [system.delete_link(link) for link in system.list_links()
                               if link.startswith(run_id) and link != names.bridge]),
            ("bridge", lambda: system.delete_link(names.bridge)),
            ("namespaces", lambda: [system.delete_netns(ns) for ns in netns]),
            ("run folder", lambda: RunLayout(state_dir, run_id).remove()),
        ]
        for label, step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - one failing cleanup must not stop the others
                errors.append(f"{run_id}: {label}: {exc}")
        current = state_dir / CURRENT_FILE
        if current.exists() and current.read_text().strip() == run_id:
            current.unlink()
    if errors:
        raise StackError("sweep left something behind:\n" + "\n".join(errors))
    return runs


def wait_processes_gone(processes: dict[int, int], what: str, timeout_s: float = PROCESSES_GONE_S) -> None:
    """Until every process of ``processes`` (PID → start time) has left /proc: a zombie has not. Zombies whose
    parent is this process are reaped here; any other is its parent's to reap (an orphan's: the machine's init).
    StackError naming what is left when ``timeout_s`` passes."""
    if not processes:
        return

    def gone() -> bool:
        system.reap_own_zombies(processes)
        return not system.still_in_proc(processes)

    def left() -> str:
        return "still in /proc: " + "; ".join(f"pid {pid} ({seen})" for pid, seen in
                                              sorted(system.still_in_proc(processes).items()))

    try:
        wait_until(f"{what} ({len(processes)} signalled) to leave /proc", gone, timeout_s=timeout_s,
                   interval_s=0.02, describe=left)
    except WaitTimeout as exc:
        raise StackError(str(exc)) from None


@dataclass(frozen=True)
class Leftovers:
    """What the harness's labels still find on the machine."""

    processes: tuple[int, ...]
    netns: tuple[str, ...]
    links: tuple[str, ...]
    iptables_rules: tuple[str, ...]
    run_dirs: tuple[str, ...]

    def __bool__(self) -> bool:
        return any((self.processes, self.netns, self.links, self.iptables_rules, self.run_dirs))


def leftovers(state_dir: str | Path, run_id: str | None = None) -> Leftovers:
    """Everything labelled with ``run_id`` (or with any run id) that still exists."""
    def ours(name: str) -> bool:
        m = system.RUN_ID_RE.match(name)
        return m is not None and (run_id is None or m.group(0) == run_id)

    state = Path(state_dir)
    return Leftovers(
        processes=tuple(pid for pid, rid in system.labeled_processes().items()
                        if (run_id is None or rid == run_id) and system.pid_alive(pid)),
        netns=tuple(ns for ns in system.list_netns() if ours(ns)),
        links=tuple(link for link in system.list_links() if ours(link)),
        iptables_rules=tuple(" ".join(r) for r in system.iptables_rules_with_comment(system.IPTABLES_COMMENT_PREFIX)
                             if run_id is None or run_id in " ".join(r)),
        run_dirs=tuple(p.name for p in state.iterdir() if p.is_dir() and ours(p.name)) if state.is_dir() else (),
    )
