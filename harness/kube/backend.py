"""RayServiceCluster: the stack as KubeRay's RayService in one namespace of one Kubernetes context, and the
Cluster protocol on it. The kind and kube backends differ only in where that context comes from and what
they may create or delete around it (``harness.kube.kind``, ``harness.kube.kube``).

How each fault primitive maps onto Kubernetes:

- ``kill_node``: the pod is deleted (KubeRay creates a new pod, which takes the same node name);
- ``stop_node`` / ``start_node``: the worker group is scaled by one, naming the pod to remove
  (``scaleStrategy.workersToDelete``, as Ray's autoscaler does) / adding one;
- ``freeze_node`` / ``thaw_node``: SIGSTOP / SIGCONT to every process of the pod but its init;
- ``run_driver`` / ``kill_actor``: ``python -c ...`` exec'd in the head pod (``ray.kill`` there);
- ``add_worker``: the worker group grows by one; ``apply_serve_config`` / ``scale``: ``serveConfigV2``;
- ``status`` / ``actors``: the Serve REST API and the State API through a port-forward to the head;
- ``endpoints``: a port-forward to every node's proxy, on a local port that stays through pod restarts.

Everything that changes the cluster first checks the context against the allowlist. Every API call goes
through ``harness.kube.api`` (the ``kubernetes`` client); the runner only runs kind, docker and helm.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from harness.kube.agent import LOG_FILE as AGENT_LOG_FILE
from harness.kube.agent import HeadPod, PodAgent
from harness.kube.api import (
    DEPLOYMENTS,
    EVENTS,
    NAMESPACES,
    PODS,
    RAYCLUSTERS,
    RAYSERVICES,
    SECRETS,
    ClientApi,
    KubeApi,
    KubeApiError,
    KubeObject,
    Resource,
)
from harness.kube.forward import Dialer, PodAddress, PortForwards, StreamDialer
from harness.kube.kuberay_schema import check_stack
from harness.kube.manifests import (
    ANNOTATION_STATE,
    HEAD_CONTAINER,
    LABEL_RAY_POD,
    LABEL_ROLE,
    REDIS_NAME,
    REDIS_SECRET,
    SECRET_PASSWORD_KEY,
    WORKER_CONTAINER,
    StackManifests,
    run_names,
    serve_config_v2,
    stack_manifests,
)
from harness.kube.safety import require_allowed
from harness.kube.settings import KubeSettings
from harness.kube.slots import (
    HEAD,
    PodView,
    Slot,
    bind_slots,
    initial_slots,
    next_worker_name,
)
from harness.kube.tools import (
    Completed,
    KubeStackError,
    Runner,
    SubprocessRunner,
)
from harness.secrets import Secret
from harness.stack.agent_wire import AgentDown
from harness.stack.app import AppUnderTest, app_under_test
from harness.stack.bringup import ANSI_RE, UpReport, new_run_id
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
from harness.stack.config import ConfigError, StackConfig
from harness.stack.drivers import kill_actor_snippet, read_routing
from harness.stack.health import answer_once, probe_url, unhealthy_reason
from harness.stack.serve_api import HeadApi, ServeApiUnavailable, read_serve
from harness.stack.serve_config import ServeConfig, build_serve_config
from harness.waiting import WaitTimeout, wait_until

Progress = Callable[[str], None]
T = TypeVar("T")
LOG_TAIL_LINES = 25
OPERATOR_DEPLOYMENT = "kuberay-operator"

# Run inside a pod with the pod's own python (the Ray image has one): list processes, signal them.
TERMINATION_GRACE_S = 30  # Kubernetes' default terminationGracePeriodSeconds: SIGTERM, then SIGKILL after it

_PS_SNIPPET = r"""
import json, os
me = os.getpid()
for p in os.listdir('/proc'):
    if not p.isdigit() or int(p) == me:
        continue
    try:
        comm = open(f'/proc/{p}/comm').read().strip()
        cmd = open(f'/proc/{p}/cmdline', 'rb').read().replace(b'\0', b' ').decode(errors='replace').strip()
    except OSError:
        continue
    try:
        state = open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[0]
    except (OSError, IndexError):
        state = ''
    print(json.dumps([int(p), comm, cmd, state]))
"""

_SIGNAL_SNIPPET = r"""
import os, signal
me, n = os.getpid(), 0
for p in os.listdir('/proc'):
    if p.isdigit() and int(p) not in (1, me):
        try:
            os.kill(int(p), signal.{sig})
            n += 1
        except OSError:
            pass
print(n)
"""

_RAY_LOGS_SNIPPET = r"""
import glob, json, os
out = {}
base = '/tmp/ray/session_latest/logs'
for pattern in ('raylet.out', 'gcs_server.out', 'dashboard.log', 'serve/*.log'):
    for path in sorted(glob.glob(os.path.join(base, pattern))):
        with open(path, 'rb') as fh:
            fh.seek(max(0, os.path.getsize(path) - {max_bytes}))
            out[os.path.relpath(path, base)] = fh.read().decode(errors='replace')
print(json.dumps(out))
"""


def _quiet(_: str) -> None:
    pass


class RayServiceCluster:
    """One run's stack in its namespace. Subclasses say how the context comes to be (``_provision``), what is
    checked first (``preflight``), and what is removed on the way down (``_remove``)."""

    backend = "kube"

    def __init__(self, config: StackConfig, settings: KubeSettings, *, context: str, kubeconfig: str | None = None,
                 run_id: str | None = None, secret: Secret | None = None, runner: Runner | None = None,
                 on_kind: bool = False, api: KubeApi | None = None, dialer: Dialer | None = None):
        self.config = config
        self.settings = settings
        self.run_id = run_id or new_run_id()
        self.names = run_names(settings, self.run_id)
        self.secret = secret or Secret.from_env_or_generate(config.redis.password_env)
        self.runner: Runner = runner or SubprocessRunner()
        self.context = context
        self.kubeconfig = kubeconfig
        self.kube: KubeApi = api or ClientApi(context, kubeconfig, request_timeout_s=settings.timeouts.api_call_s)
        self.on_kind = on_kind
        self.run_dir = Path(settings.kube.state_dir) / self.run_id
        self._slots: tuple[Slot, ...] = initial_slots(config.workers.count)
        self._pods: dict[str, PodView] = {}
        self._lock = threading.RLock()
        self._events: list[StackEvent] = []
        self.forwards = PortForwards(dialer or StreamDialer(self.kube, self.names.namespace), self.running_pods,
                                     self.run_dir)
        self.api = HeadApi("127.0.0.1", self.forwards.add(HEAD, config.app.dashboard_port).local_port)
        self.agent = PodAgent(self.kube, self.names.namespace, self._head_pod, self._agent_exec,
                              lambda kind, detail: self._event(kind, HEAD, detail))
        self.use_agent = config.drivers.fault_agent
        self._agent_adopted = False  # a process that attached to a run asks the pod for a running agent once

    # --- commands -------------------------------------------------------------------------------------------
    def _run(self, argv: tuple[str, ...], what: str, *, stdin: str | None = None, check: bool = True,
             timeout_s: float | None = None) -> Completed:
        result = self.runner.run(argv, stdin=stdin, timeout_s=timeout_s or self.settings.timeouts.api_call_s)
        result = Completed(result.argv, result.returncode, self.secret.scrub(result.stdout),
                           self.secret.scrub(result.stderr))
        if check and not result.ok:
            raise KubeStackError(f"{what} failed ({' '.join(argv[:8])} ...):\n{result.tail()}")
        return result

    def _kube(self, what: str, call: Callable[[], T]) -> T:
        """One API call; a refusal is a KubeStackError that says what was being done (secrets scrubbed)."""
        try:
            return call()
        except KubeApiError as exc:
            raise KubeStackError(self.secret.scrub(f"{what} failed: {exc}")) from None

    def _get(self, resource: Resource, name: str, what: str) -> KubeObject:
        """The object in the run's namespace; its absence is an error saying ``what`` was being read."""
        found = self._kube(what, lambda: self.kube.get(resource, name, self.names.namespace))
        if found is None:
            raise KubeStackError(f"{what} failed: {resource.plural}/{name} not found in {self.names.namespace}")
        return found

    def _exec(self, view: PodView, container: str, argv: Sequence[str], what: str, *, check: bool = True,
              timeout_s: float | None = None) -> Completed:
        result = self.kube.exec(self.names.namespace, view.name, container, argv,
                                timeout_s or self.settings.timeouts.api_call_s)
        result = Completed(result.argv, result.returncode, self.secret.scrub(result.stdout),
                           self.secret.scrub(result.stderr))
        if check and not result.ok:
            raise KubeStackError(f"{what} failed (exec in {view.name}):\n{result.tail()}")
        return result

    def _allow(self, operation: str) -> None:
        require_allowed(self.context, self.settings.allowed_contexts(), operation)

    def _event(self, kind: str, target: str, detail: str = "", at_wall: float | None = None) -> None:
        """Record an event now, or at ``at_wall`` (a wall time seen elsewhere: when the agent sent a kill)."""
        now_wall, now_mono = time.time(), time.monotonic()
        at = now_wall if at_wall is None else at_wall
        self._events.append(StackEvent(at, now_mono - (now_wall - at), "harness", kind, target, detail))

    # --- the objects ------------------------------------------------------------------------------------------
    def manifests(self, password: Secret | None = None) -> StackManifests:
        return stack_manifests(self.config, self.settings, self.run_id, password=password, on_kind=self.on_kind,
                               owner=self._owner())

    @staticmethod
    def _owner() -> str:
        return f"{socket.gethostname()}/{os.getpid()}"

    def check_manifests(self) -> None:
        """The objects validate offline (core objects strictly, the RayService against KubeRay's fields)."""
        problems = check_stack(self.manifests())
        if problems:
            raise ConfigError("the stack's Kubernetes objects do not validate:\n" + "\n".join(map(str, problems)))

    # --- up -----------------------------------------------------------------------------------------------------
    def preflight(self) -> None:
        """What can be checked before anything is created. Subclasses add tools and reachability."""
        build_serve_config(self.config)
        self.check_manifests()

    def _provision(self, report: UpReport, progress: Progress) -> None:
        """Make the context exist and hold the operator (kind); nothing on an existing cluster."""

    def _remove(self) -> None:
        """Remove what this run created (subclasses)."""
        raise NotImplementedError

    def up(self, progress: Progress = _quiet) -> UpReport:
        self._allow("bring a stack up")
        self.preflight()
        report = UpReport(self.run_id)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "owner").write_text(self._owner())
        (self.run_dir / "state").write_text("starting")
        try:
            self._provision(report, progress)
            report.run(progress, "namespace", self._create_namespace)
            report.run(progress, "objects", self._apply_objects)
            if self.config.redis.enabled:
                report.run(progress, "redis", self._wait_redis)
            report.run(progress, "rayservice", self._wait_rayservice)
            report.run(progress, "relays", self._start_forwards)
            report.run(progress, "app healthy", lambda: self.wait_healthy())
            if self.use_agent:
                report.run(progress, "fault agent", lambda: self.agent.wait_ready(self.settings.timeouts.agent_ready_s))
                self._agent_adopted = True
            self._mark_up()
        except BaseException:
            progress("bring-up failed: removing what was created")
            self._teardown()
            raise
        return report

    def _create_namespace(self) -> None:
        # create, not apply: a namespace of that name that exists already is not ours to adopt
        body = self.manifests().namespace.body
        self._kube(f"creating namespace {self.names.namespace}", lambda: self.kube.create(body))

    def _apply_objects(self) -> None:
        """Everything but the namespace, server-side applied; the Secret's value travels only in its body."""
        objects = [m.body for m in self.manifests(password=self.secret).all() if m.kind != "Namespace"]
        self._kube("applying the stack's objects", lambda: self.kube.apply(objects, self.names.namespace))
        self._event("objects_applied", self.names.namespace, f"{len(objects)} objects")

    def _mark_up(self) -> None:
        (self.run_dir / "state").write_text("up")
        patch = {"metadata": {"annotations": {ANNOTATION_STATE: "up"}}}
        self._kube("marking the run's namespace up",
                   lambda: self.kube.patch(NAMESPACES, self.names.namespace, patch, "merge"))

    def _wait(self, part: str, what: str, probe: Callable[[], object], timeout_s: float,
              describe: Callable[[], str] | None = None):
        try:
            return wait_until(what, probe, timeout_s=timeout_s, interval_s=1.0, describe=describe)
        except WaitTimeout as exc:
            raise KubeStackError(self.secret.scrub(f"{part}: {exc}")) from None

    def _wait_redis(self) -> None:
        def available() -> bool:
            dep = self._get(DEPLOYMENTS, REDIS_NAME, "reading Redis's Deployment")
            return int(dep.get("status", {}).get("availableReplicas") or 0) >= 1

        self._wait("redis", "Redis's Deployment to be Available", available, self.settings.timeouts.redis_ready_s,
                   describe=lambda: self.describe_pods(f"{LABEL_ROLE}=redis"))

    def rayservice_ready(self) -> bool:
        return rayservice_is_ready(self._get(RAYSERVICES, self.names.rayservice, "reading the RayService"))

    def _wait_rayservice(self) -> None:
        self._wait("rayservice", f"RayService {self.names.rayservice} to be Ready (its Serve apps RUNNING)",
                   self.rayservice_ready, self.settings.timeouts.rayservice_ready_s,
                   describe=lambda: "\n".join((self.describe_rayservice(), self.describe_pods(f"{LABEL_RAY_POD}=true"),
                                               self.operator_log_tail())))

    def _start_forwards(self) -> None:
        self.refresh()
        for slot in self._slots:
            self.forwards.add(slot.name, self.config.app.serve_port)
        self.forwards.reconcile()
        self.forwards.start()

    # --- attaching (another process brought the run up) --------------------------------------------------------
    def attach(self) -> None:
        """Work on this run as its ``up`` (another process) left it: the run must be marked up; Redis's password
        is read back from the run's Secret, so everything printed stays scrubbed; the port-forwards start."""
        try:
            state = (self.run_dir / "state").read_text().strip()
        except OSError:
            state = ""
        if state != "up":
            raise KubeStackError(f"run {self.run_id} is not up (state {state or 'unknown'!r} in {self.run_dir})")
        if self.config.redis.enabled:
            secret = self._get(SECRETS, REDIS_SECRET, "reading the run's Redis Secret")
            encoded = secret.get("data", {}).get(SECRET_PASSWORD_KEY, "")
            if encoded:
                self.secret = Secret(base64.b64decode(encoded).decode())
        self._start_forwards()

    def close(self) -> None:
        """Let go of the run without changing it: the port-forwards stop."""
        self.forwards.stop()

    # --- down ---------------------------------------------------------------------------------------------------
    def down(self) -> list[str]:
        """Remove this run (and, by label, what crashed runs left behind); return the run ids removed."""
        self._allow("tear the stack down")
        self._teardown()
        return [self.run_id, *self.sweep()]

    def _teardown(self) -> None:
        self.forwards.stop()
        self._remove()

    def sweep(self) -> list[str]:
        """Remove leftovers of crashed runs by label; subclasses know where to look."""
        return []

    # --- pods and slots -----------------------------------------------------------------------------------------
    def pod_views(self) -> tuple[PodView, ...]:
        items = self._kube("listing the Ray pods", lambda: self.kube.list(
            PODS, self.names.namespace, f"{self.names.selector},{LABEL_RAY_POD}=true"))
        return tuple(pod_view(item) for item in items)

    def refresh(self) -> tuple[Slot, ...]:
        """Bind every node name to the pod that plays it now."""
        pods = self.pod_views()
        with self._lock:
            self._slots = bind_slots(self._slots, pods)
            self._pods = {p.name: p for p in pods}
            return self._slots

    def _slot(self, node: str) -> Slot:
        if node == REDIS_NAME:
            # Redis is no Ray node here: its Deployment's data is an emptyDir, lost with its pod, so stopping or
            # killing it would be Redis coming back without its data (the control), not the outage RedisDown is
            raise KubeStackError(
                "Redis faults (RedisDown, RedisDownHeadKilled) are not supported on the kube backend: the Redis "
                "pod's data is an emptyDir, lost with the pod, so a stopped Redis would come back empty; on the "
                "local backend Redis keeps its appendonly file")
        for slot in self.refresh():
            if slot.name == node:
                return slot
        raise KubeStackError(f"no node named {node!r}; nodes: {', '.join(s.name for s in self._slots)}")

    def _pod(self, slot: Slot) -> PodView | None:
        return self._pods.get(slot.pod) if slot.pod else None

    def running_pods(self) -> dict[str, PodAddress | None]:
        slots = self.refresh()
        return {s.name: PodAddress(v.name, v.ip) if (v := self._pod(s)) is not None and v.running else None
                for s in slots}

    def _container(self, slot: Slot) -> str:
        return HEAD_CONTAINER if slot.role == "head" else WORKER_CONTAINER

    # --- queries ------------------------------------------------------------------------------------------------
    def _route(self) -> str:
        return app_under_test(self.config).route

    def _proxy_url(self, node: str | None) -> str | None:
        if node is None:
            return None
        return self.forwards.add(node, self.config.app.serve_port).base_url + self._route()

    def status(self) -> StackStatus:
        slots = self.refresh()
        by_ip = {v.ip: s.name for s in slots if (v := self._pod(s)) is not None and v.ip}
        serve = read_serve(self.api, by_ip, lambda node, ip: self._proxy_url(node))
        ray_nodes = serve.ray_nodes
        nodes = []
        for s in slots:
            view = self._pod(s)
            ip = view.ip if view is not None and view.ip else ""
            ray = ray_nodes.get(ip)
            nodes.append(NodeInfo(s.name, s.role, ip, view is not None and view.running and not view.terminating,
                                  ray.node_id if ray else None, ray.state if ray else None))
        return StackStatus(self.run_id, tuple(nodes), serve.controller, serve.proxies, serve.replicas, serve.apps,
                           serve.reachable)

    def health_problem(self) -> str | None:
        return unhealthy_reason(self.status(), self.config)

    def wait_healthy(self, timeout_s: float | None = None) -> StackStatus:
        """Until every app and replica is RUNNING and every proxy is HEALTHY and answers through its forward."""
        cfg = self.config

        def healthy() -> StackStatus:
            status = self.status()
            problem = unhealthy_reason(status, cfg)
            if problem:
                raise RuntimeError(problem)
            for proxy in status.proxies:
                answer_once(probe_url(proxy.url or "", app_under_test(cfg)), timeout_s=5.0)
            return status

        return self._wait("app", f"app {app_under_test(cfg).application!r} healthy (its replicas RUNNING, "
                          "every proxy answering through its port-forward)", healthy,
                          timeout_s or self.settings.timeouts.app_healthy_s,
                          describe=lambda: self.describe_pods(f"{LABEL_RAY_POD}=true"))

    def allowed_networks(self) -> tuple[str, ...]:
        """Traffic goes to the port-forwards on loopback only."""
        return ()

    def node_alive(self, node: str) -> bool:
        view = self._pod(self._slot(node))
        return view is not None and view.running and not view.terminating

    def actors(self, class_name: str | None = None, state: str | None = None) -> tuple[RayActor, ...]:
        return self.api.actors(class_name=class_name, state=state)

    def worker_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.refresh() if s.role == "worker" and s.desired == "running")

    def app(self) -> AppUnderTest:
        """The application under test (the stack config's [app] resolved against its Serve config)."""
        return app_under_test(self.config)

    def endpoints(self, route: str | None = None) -> tuple[Endpoint, ...]:
        """One proxy URL per node that should run, through its port-forward, at ``route`` (default: the app's)."""
        path = route if route is not None else self._route()
        return tuple(Endpoint(s.name, self.forwards.add(s.name, self.config.app.serve_port).base_url + path)
                     for s in self.refresh() if s.desired == "running")

    def node_processes(self, node: str) -> tuple[NodeProcess, ...]:
        """The processes of the pod that plays ``node`` now, read from its /proc. Pod PIDs are what the harness
        signals here (host_pid = ns_pid); a node without a running pod has none."""
        slot = self._slot(node)
        view = self._pod(slot)
        if view is None or not view.running or view.terminating:
            return ()
        result = self._exec(view, self._container(slot), ("python", "-c", _PS_SNIPPET),
                            f"listing the processes of {node}", check=False)
        if not result.ok:
            return ()
        procs = []
        for line in result.stdout.splitlines():
            try:
                pid, comm, cmd, *rest = json.loads(line)
            except ValueError:
                continue
            procs.append(NodeProcess(node, int(pid), int(pid), str(comm), self.secret.scrub(str(cmd))[:300],
                                     str(rest[0]) if rest else ""))
        return tuple(procs)

    def events(self) -> tuple[StackEvent, ...]:
        """What the harness did, and the namespace's Kubernetes events (KubeRay's as ``operator``)."""
        out = list(self._events)
        try:
            items = self.kube.list(EVENTS, self.names.namespace)
        except KubeApiError:
            items = []  # the API server is briefly away: the harness's own events still stand
        if items:
            offset = time.time() - time.monotonic()
            for item in items:
                wall = _timestamp(item.get("lastTimestamp") or item.get("eventTime") or "")
                component = (item.get("source") or {}).get("component") or item.get("reportingComponent") or ""
                out.append(StackEvent(wall, wall - offset, "operator" if "ray" in component.lower() else "kubernetes",
                                      str(item.get("reason", "")), str((item.get("involvedObject") or {}).get("name", "")),
                                      self.secret.scrub(str(item.get("message", "")))[:300]))
        return tuple(sorted(out, key=lambda e: e.t_wall))

    # --- fault primitives ---------------------------------------------------------------------------------------
    def kill_node(self, node: str) -> None:
        """The node's pod is deleted (grace period ``kill_grace_period_s``); KubeRay replaces it."""
        self._allow(f"kill node {node}")
        slot = self._slot(node)
        if slot.pod is None:
            raise KubeStackError(f"node {node} has no pod to delete")
        pod, grace = slot.pod, self.settings.kube.kill_grace_period_s
        self._kube(f"deleting pod {pod}", lambda: self.kube.delete(PODS, pod, self.names.namespace, grace))
        self._event("node_killed", node, f"pod {slot.pod} deleted")

    def stop_node(self, node: str, timeout_s: float | None = None) -> None:
        """The worker leaves for good: its group shrinks by one, naming its pod to delete (no replacement)."""
        if node == HEAD:
            raise NotImplementedError(
                "stop_node('head'): KubeRay always keeps one head pod and recreates a deleted one, so the head "
                "cannot stay stopped on Kubernetes; use kill_node('head') for a head failure")
        self._allow(f"stop node {node}")
        slot = self._slot(node)
        with self._lock:
            self._slots = tuple(replace(s, desired="stopped") if s.name == node else s for s in self._slots)
        self._scale_workers(-1, delete_pod=slot.pod)
        self._event("node_stopped", node, f"pod {slot.pod} scaled away")
        if slot.pod is not None:
            pod = slot.pod
            self._wait("stop", f"pod {pod} of {node} to be gone", lambda: pod not in {p.name for p in self.pod_views()},
                       timeout_s or self.settings.timeouts.pod_ready_s)

    def start_node(self, node: str, timeout_s: float | None = None) -> None:
        """A stopped worker comes back (its group grows by one); a node being restarted is waited for."""
        self._allow(f"start node {node}")
        slot = self._slot(node)
        if slot.desired == "stopped":
            with self._lock:
                self._slots = tuple(replace(s, desired="running", pod=None) if s.name == node else s
                                    for s in self._slots)
            self._scale_workers(+1)
            self._event("node_started", node, "worker group grown by one")
        self.forwards.add(node, self.config.app.serve_port)
        self._wait("start", f"node {node} to run a pod", lambda: self.node_alive(node),
                   timeout_s or self.settings.timeouts.pod_ready_s, describe=lambda: self.describe_pods(
                       f"{LABEL_RAY_POD}=true"))

    def add_worker(self, timeout_s: float | None = None) -> NodeInfo:
        """A new worker joins (the group grows by one) and is ALIVE in Ray; it gets the next worker name."""
        self._allow("add a worker")
        with self._lock:
            name = next_worker_name(self.refresh())
            self._slots = (*self._slots, Slot(name, "worker", "running", None))
        self.forwards.add(name, self.config.app.serve_port)
        self._scale_workers(+1)
        self._event("node_added", name)

        def joined() -> NodeInfo | None:
            node = next((n for n in self.status().nodes if n.name == name), None)
            return node if node is not None and node.alive and node.ray_state == "ALIVE" else None

        return self._wait("add worker", f"new node {name} to be ALIVE in Ray", joined,
                          timeout_s or self.settings.timeouts.pod_ready_s)

    def _active_raycluster(self) -> KubeObject:
        rs = self._get(RAYSERVICES, self.names.rayservice, "reading the RayService")
        name = (rs.get("status", {}).get("activeServiceStatus") or {}).get("rayClusterName")
        if not name:
            raise KubeStackError(f"RayService {self.names.rayservice} has no active RayCluster yet")
        return self._get(RAYCLUSTERS, name, f"reading RayCluster {name}")

    def _scale_workers(self, delta: int, delete_pod: str | None = None) -> None:
        """Patch the active RayCluster's worker group, as Ray's autoscaler does (a RayService does not roll a
        new cluster for replica changes); the ``test`` op makes a concurrent change fail instead of being lost."""
        cluster = self._active_raycluster()
        groups = cluster["spec"].get("workerGroupSpecs", [])
        index = next((i for i, g in enumerate(groups) if g.get("groupName") == self.names.worker_group), None)
        if index is None:
            raise KubeStackError(f"RayCluster {cluster['metadata']['name']} has no worker group "
                                 f"{self.names.worker_group!r}")
        patch = scale_patch(index, int(groups[index].get("replicas") or 0), delta, delete_pod)
        name = cluster["metadata"]["name"]
        self._kube(f"scaling worker group {self.names.worker_group} by {delta:+d}",
                   lambda: self.kube.patch(RAYCLUSTERS, name, patch, "json", self.names.namespace))

    def _signal_pod(self, node: str, sig: str) -> int:
        slot = self._slot(node)
        view = self._pod(slot)
        if view is None or not view.running:
            raise KubeStackError(f"node {node} has no running pod to signal")
        result = self._exec(view, self._container(slot), ("python", "-c", _SIGNAL_SNIPPET.replace("{sig}", sig)),
                            f"sending {sig} in the pod of {node}")
        return int((result.stdout.strip().splitlines() or ["0"])[-1])

    def freeze_node(self, node: str) -> None:
        """SIGSTOP to every process of the node's pod but its init (the kernel shields a namespace's PID 1)."""
        self._allow(f"freeze node {node}")
        self._event("node_frozen", node, f"SIGSTOP to {self._signal_pod(node, 'SIGSTOP')} processes")

    def thaw_node(self, node: str) -> None:
        self._allow(f"thaw node {node}")
        self._event("node_thawed", node, f"SIGCONT to {self._signal_pod(node, 'SIGCONT')} processes")

    def _signal_process(self, node: str, pid: int, sig: str) -> None:
        slot = self._slot(node)
        view = self._pod(slot)
        if view is None or not view.running:
            raise KubeStackError(f"node {node} has no running pod to signal")
        self._exec(view, self._container(slot), ("python", "-c", f"import os, signal; os.kill({int(pid)}, signal.{sig})"),
                   f"sending {sig} to pid {pid} in the pod of {node}")

    def freeze_process(self, node: str, pid: int) -> None:
        """SIGSTOP one process of the node's pod (pod PIDs are what Ray reports)."""
        self._allow(f"freeze pid {pid} on {node}")
        self._signal_process(node, pid, "SIGSTOP")
        self._event("process_frozen", node, f"SIGSTOP to pid {pid}")

    def thaw_process(self, node: str, pid: int) -> None:
        self._allow(f"thaw pid {pid} on {node}")
        self._signal_process(node, pid, "SIGCONT")
        self._event("process_thawed", node, f"SIGCONT to pid {pid}")

    def partition(self, node: str, peer: str) -> None:
        """Refused: a partition needs a NetworkPolicy the cluster's CNI enforces, and the harness does not
        know that it does (kind's default kindnet did not, before v0.24); a policy that is not enforced would
        partition nothing and the scenario would pass on a healthy network."""
        raise KubeStackError(f"partitioning {node} from {peer} is not supported on the kube backend: it needs a "
                             f"NetworkPolicy that the cluster's CNI is known to enforce")

    def unpartition(self, node: str, peer: str) -> None:
        """Nothing to undo: partition() is refused here."""

    def partitioned_from(self, node: str) -> tuple[str, ...]:
        return ()

    def degrade_network(self, node: str, rate_kbit: int, loss: float) -> None:
        """Refused: shaping a pod's link needs tc or iptables in its network namespace (a privileged
        container), which the harness does not run in a user's cluster."""
        raise KubeStackError(f"degrading the network of {node} is not supported on the kube backend: it needs "
                             f"tc or iptables in the pod's network namespace (a privileged sidecar)")

    def restore_network(self, node: str) -> None:
        """Nothing to undo: degrade_network() is refused here."""

    def network_degradation(self, node: str) -> str | None:
        return None

    def terminate_node(self, node: str) -> None:
        """Delete the node's pod with its grace period: the kubelet sends SIGTERM, then SIGKILL."""
        self._allow(f"terminate node {node}")
        slot = self._slot(node)
        if slot.pod is None:
            raise KubeStackError(f"node {node} has no pod to terminate")
        pod = slot.pod
        self._kube(f"deleting pod {pod} gracefully",
                   lambda: self.kube.delete(PODS, pod, self.names.namespace, TERMINATION_GRACE_S))
        self._event("node_terminated", node, f"pod {slot.pod} deleted, grace period {TERMINATION_GRACE_S}s")

    def run_driver(self, snippet: str, timeout_s: float = 60.0, node: str = HEAD) -> DriverResult:
        """Python as a Ray driver inside the node's pod (the guide's ``kubectl exec ... python``); ``ray`` is
        imported and initialised before the snippet runs. In the head pod it goes to the fault agent (one
        long-lived driver there, reached by a port-forward: milliseconds, no process start in the cluster under
        test); where the agent is down (the head pod was replaced, it is still attaching) a one-shot driver runs
        it through the API's exec stream, the events say so, and the agent is started again in the background."""
        return self._run_driver(snippet, timeout_s, node)[0]

    def _run_driver(self, snippet: str, timeout_s: float, node: str) -> tuple[DriverResult, float | None]:
        """The result, and the (harness-clock) time the agent began the snippet (None on a one-shot driver)."""
        self._allow("run a driver")
        if node == HEAD and self.use_agent:
            if not self._agent_adopted:
                self._agent_adopted = True
                self.agent.start()  # attached from another process: finds the running agent (or starts one)
            try:
                answer = self.agent.run(snippet, timeout_s)
                return DriverResult(answer.result.returncode, self.secret.scrub(answer.result.stdout),
                                    self.secret.scrub(answer.result.stderr)), answer.started_wall
            except AgentDown as exc:
                self._event("agent_fallback", HEAD, f"fault agent {exc}: a one-shot driver runs the snippet")
                self.agent.start_in_background()
        return self._one_shot_driver(snippet, timeout_s, node), None

    def _one_shot_driver(self, snippet: str, timeout_s: float, node: str) -> DriverResult:
        slot = self._slot(node)
        view = self._pod(slot)
        if view is None or not view.running:
            raise KubeStackError(f"node {node} is not running: no driver can attach there")
        prelude = "import ray\nray.init(address='auto', logging_level='ERROR', log_to_driver=False)\n"
        result = self._exec(view, self._container(slot), ("python", "-c", prelude + snippet), f"a driver in {node}",
                            check=False, timeout_s=timeout_s)
        return DriverResult(result.returncode, result.stdout, result.stderr)

    def proxy_routing(self, routes: Iterable[str]) -> tuple[ProxyRoute, ...]:
        """Each live proxy's replica set per route, read by a driver in the head pod (harness.stack.drivers)."""
        return read_routing(self.run_driver, routes)

    def kill_actor(self, name: str, namespace: str = "serve", no_restart: bool = True) -> DriverResult:
        result, sent_wall = self._run_driver(kill_actor_snippet(name, namespace, no_restart), 60.0, HEAD)
        sent = (f"kill sent by the fault agent at {sent_wall:.3f} (clock offset {self.agent.clock_offset_s:+.3f}s)"
                if sent_wall else "one-shot driver")
        self._event("actor_killed" if result.returncode == 0 else "actor_kill_failed", name,
                    f"no_restart={no_restart}; {sent}; {result.stderr.strip()[-300:]}", at_wall=sent_wall)
        return result

    # --- the fault agent's pod ----------------------------------------------------------------------------------
    def _head_pod(self) -> HeadPod | None:
        try:
            slot = self._slot(HEAD)
        except KubeStackError:
            return None
        view = self._pod(slot)
        if view is None or not view.running:
            return None
        return HeadPod(view.name, f"{view.uid}/{view.restarts}", self._container(slot))

    def _agent_exec(self, head: HeadPod, argv: tuple[str, ...], timeout_s: float) -> tuple[int, str, str]:
        result = self.kube.exec(self.names.namespace, head.name, head.container, argv, timeout_s)
        return result.returncode, self.secret.scrub(result.stdout), self.secret.scrub(result.stderr)

    def set_operator(self, enabled: bool) -> None:
        raise NotImplementedError(
            "set_operator: on an existing cluster the KubeRay operator is not the harness's to stop (it may serve "
            "other users); the kind backend scales its own operator")

    def _patch_serve_config(self, serve_config: ServeConfig, why: str) -> None:
        patch = {"spec": {"serveConfigV2": serve_config_v2(self.config, serve_config)}}
        self._kube(f"patching the RayService's serveConfigV2 ({why})",
                   lambda: self.kube.patch(RAYSERVICES, self.names.rayservice, patch, "merge", self.names.namespace))

    def apply_serve_config(self) -> None:
        """The stack's Serve config, now: into ``serveConfigV2`` (undoing ``scale``) and, since KubeRay submits
        only a changed config, straight to the Serve REST API as KubeRay itself does."""
        self._allow("apply the Serve config")
        config = build_serve_config(self.config)
        self._patch_serve_config(config, "the stack's own")
        try:
            self.api.deploy(config)
        except ServeApiUnavailable as exc:
            self._event("serve_config_deferred", self.app().application, f"left to KubeRay: {exc}")
        self._event("serve_config_applied", self.app().application, "applied by hand")

    def scale(self, application: str, deployment: str, num_replicas: int | None) -> None:
        """``deployment`` of ``application`` at ``num_replicas`` through ``serveConfigV2`` (None: the stack's own
        config); KubeRay submits the changed config to Serve."""
        self._allow("scale a deployment")
        config = build_serve_config(self.config)
        if num_replicas is not None:
            try:
                config = config.with_replicas(application, deployment, num_replicas)
            except ConfigError as exc:
                raise KubeStackError(str(exc)) from None
        self._patch_serve_config(config, f"{deployment} at {num_replicas if num_replicas is not None else 'its config'}")
        self._event("serve_config_applied", application,
                    f"{deployment} scaled to {num_replicas if num_replicas is not None else 'its config'}")

    def upgrade_app(self, application: str, version: str | None) -> None:
        """``application`` at a new code ``version`` through ``serveConfigV2`` (None: the stack's own config), as a
        RayService update does; KubeRay submits it to Serve, which replaces the replicas, rolling."""
        self._allow("upgrade an application")
        config = build_serve_config(self.config)
        if version is not None:
            try:
                config = config.with_version(application, version)
            except ConfigError as exc:
                raise KubeStackError(str(exc)) from None
        self._patch_serve_config(config, f"{application} at code version {version}")
        self._event("serve_config_applied", application, f"code version {version}")

    # --- diagnostics --------------------------------------------------------------------------------------------
    def describe_rayservice(self) -> str:
        try:
            found = self.kube.get(RAYSERVICES, self.names.rayservice, self.names.namespace)
        except KubeApiError as exc:
            return f"--- RayService: not readable: {self.secret.scrub(str(exc))}"
        if found is None:
            return f"--- RayService {self.names.rayservice}: not found"
        status = found.get("status") or {}
        conditions = "; ".join(f"{c.get('type')}={c.get('status')} ({c.get('reason')}: {c.get('message', '')[:200]})"
                               for c in status.get("conditions", []))
        apps = (status.get("activeServiceStatus") or {}).get("applicationStatuses") or {}
        app_states = ", ".join(f"{name}={app.get('status')}" for name, app in apps.items()) or "none"
        return f"--- RayService {self.names.rayservice}: {conditions or 'no conditions yet'}; apps: {app_states}"

    def describe_pods(self, selector: str) -> str:
        try:
            items = self.kube.list(PODS, self.names.namespace, f"{self.names.selector},{selector}")
        except KubeApiError as exc:
            return f"--- pods: not readable: {self.secret.scrub(str(exc))}"
        lines = [f"--- pods ({selector})"]
        for item in items:
            lines.append(describe_pod(item))
        return "\n".join(lines)

    def operator_pods(self) -> list[KubeObject]:
        """The KubeRay operator's pods (by its Deployment's selector), newest first."""
        namespace = self.settings.kube.operator_namespace
        dep = self.kube.get(DEPLOYMENTS, OPERATOR_DEPLOYMENT, namespace)
        if dep is None:
            return []
        labels = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        pods = self.kube.list(PODS, namespace, selector)
        return sorted(pods, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp", ""), reverse=True)

    def operator_log_tail(self) -> str:
        head = "--- tail of the KubeRay operator's log"
        try:
            pods = self.operator_pods()
        except KubeApiError as exc:
            return f"{head}\n(not readable: {exc})"
        if not pods:
            return f"{head}\n(no operator pod in {self.settings.kube.operator_namespace})"
        pod = pods[0]
        name = pod["metadata"]["name"]
        container = ((pod.get("spec") or {}).get("containers") or [{}])[0].get("name", "")
        text = self.kube.logs(self.settings.kube.operator_namespace, name, container, LOG_TAIL_LINES)
        return f"{head} ({name})\n{text.strip()}"

    def collect_logs(self, dest: Path, max_bytes: int = 256 * 1024) -> None:
        """Pod logs (and previous containers'), Ray's logs from each Ray pod, events, the RayService, the
        status, the operator's log tail, the port-forwards' logs; secrets scrubbed."""
        dest.mkdir(parents=True, exist_ok=True)

        def write(name: str, text: str) -> None:
            (dest / name).write_text(self.secret.scrub(ANSI_RE.sub("", text)))

        namespace = self.names.namespace

        def listed(resource: Resource) -> str:
            try:
                return json.dumps({"items": self.kube.list(resource, namespace)}, indent=1)
            except KubeApiError as exc:
                return json.dumps({"error": str(exc)})

        try:
            items = self.kube.list(PODS, namespace)
        except KubeApiError as exc:
            items = []
            write("pods.json", json.dumps({"error": str(exc)}))
        else:
            write("pods.json", json.dumps({"items": items}, indent=1))
        for item in items:
            name = item["metadata"]["name"]
            restarted = {c.get("name") for c in (item.get("status") or {}).get("containerStatuses", [])
                         if c.get("restartCount")}
            for container in ((item.get("spec") or {}).get("containers") or []):
                cname = container.get("name", "")
                write(f"pod__{name}__{cname}.log", self.kube.logs(namespace, name, cname, 5000))
                if cname in restarted:
                    write(f"pod__{name}__{cname}__previous.log", self.kube.logs(namespace, name, cname, 5000, True))
        for slot in self.refresh():
            view = self._pod(slot)
            if view is None or not view.running:
                continue
            snippet = _RAY_LOGS_SNIPPET.replace("{max_bytes}", str(max_bytes))
            result = self._exec(view, self._container(slot), ("python", "-c", snippet), f"Ray's logs of {slot.name}",
                                check=False)
            if result.ok:
                for rel, text in json.loads(result.stdout or "{}").items():
                    write(f"ray__{slot.name}__{rel.replace('/', '__')}", text)
        write("events.json", listed(EVENTS))
        write("rayservices.json", listed(RAYSERVICES))
        write("rayclusters.json", listed(RAYCLUSTERS))
        write("operator.log", self.operator_log_tail())
        for log in sorted(self.run_dir.glob("port-forward-*.log")):
            write(log.name, log.read_text(errors="replace")[-max_bytes:])
        if self.use_agent:
            try:
                st = self.agent.stats()
                agent = {"running": True, "pid": st.pid, "cpu_s": st.cpu_s, "rss_mb": st.rss_mb,
                         "commands": st.commands, "clock_offset_s": round(self.agent.clock_offset_s, 4)}
            except AgentDown as exc:
                agent = {"running": False, "why": str(exc)}
            write("agent.json", json.dumps(agent, indent=2))
            head = self._head_pod()
            if head is not None:
                rc, out, err = self._agent_exec(head, ("sh", "-c", f"tail -c {max_bytes} {AGENT_LOG_FILE}"), 30.0)
                write("agent.log", out if rc == 0 else f"(no agent log: {err.strip()})")
        write("harness-events.json", json.dumps([e.__dict__ for e in self._events], indent=2))
        try:
            (dest / "status.json").write_text(json.dumps(self.status().to_json(), indent=2))
        except KubeStackError as exc:
            write("status.json", json.dumps({"error": str(exc)}))


# --- pure helpers ---------------------------------------------------------------------------------------------

def pod_view(item: KubeObject) -> PodView:
    meta, spec, status = item.get("metadata", {}), item.get("spec", {}), item.get("status", {})
    labels = meta.get("labels", {})
    role = labels.get(LABEL_ROLE) or labels.get("ray.io/node-type") or "worker"
    container = HEAD_CONTAINER if role == "head" else WORKER_CONTAINER
    states = {c.get("name"): c for c in status.get("containerStatuses", [])}
    ray = states.get(container, {})
    return PodView(
        name=meta.get("name", ""), uid=meta.get("uid", ""), role=role, ip=status.get("podIP"),
        node=spec.get("nodeName"), phase=status.get("phase", "Unknown"),
        running="running" in (ray.get("state") or {}), terminating=bool(meta.get("deletionTimestamp")),
        created=meta.get("creationTimestamp", ""), restarts=sum(int(c.get("restartCount") or 0) for c in states.values()),
    )


def describe_pod(item: KubeObject) -> str:
    view = pod_view(item)
    waiting = [f"{c.get('name')}: {(c.get('state') or {}).get('waiting', {}).get('reason')}"
               for c in item.get("status", {}).get("containerStatuses", []) if "waiting" in (c.get("state") or {})]
    return (f"  {view.name} ({view.role}) {view.phase}{' terminating' if view.terminating else ''} on {view.node} "
            f"ip {view.ip} restarts {view.restarts}{'; ' + ', '.join(waiting) if waiting else ''}")


def rayservice_is_ready(rs: KubeObject) -> bool:
    """KubeRay v1.3+ sets condition Ready; ``serviceStatus: Running`` is its deprecated twin."""
    status = rs.get("status") or {}
    if any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", [])):
        return True
    return status.get("serviceStatus") == "Running"


def scale_patch(index: int, replicas: int, delta: int, delete_pod: str | None) -> list[dict]:
    """JSON patch of a RayCluster's worker group ``index``: replicas by ``delta`` (tested against the value read),
    and the pod to delete when shrinking (an empty list when growing, so an old name is not reused)."""
    path = f"/spec/workerGroupSpecs/{index}"
    target = replicas + delta
    if target < 0:
        raise KubeStackError(f"worker group has {replicas} replicas: cannot scale by {delta}")
    ops: list[dict] = [{"op": "test", "path": f"{path}/replicas", "value": replicas},
                       {"op": "replace", "path": f"{path}/replicas", "value": target}]
    ops.append({"op": "add", "path": f"{path}/scaleStrategy",
                "value": {"workersToDelete": [delete_pod] if delete_pod and delta < 0 else []}})
    return ops


def _timestamp(text: str) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(re.sub(r"Z$", "+00:00", text)).timestamp()
    except ValueError:
        return time.time()

