"""The node supervisor and the operator of one local run: what the kubelet and KubeRay do on Kubernetes.

Runs detached as ``python -m harness.local.supervisor RUN_DIR`` (started by ``up``). It reads the run's
desired state from the run folder and:

* keeps every node ("pod") whose desired state is ``running`` running; a node that dies is started
  again after its restart delay when its policy is ``always`` (a pod restart), never when it is ``never``;
* once armed by ``up``, watches Serve through the head's REST API and re-applies the Serve config when
  the application or the controller has been missing for ``operator.missing_grace_s`` (RayService's role);
* writes what it does to ``events.jsonl``; SIGTERM stops every node and then itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.local import system
from harness.local.layout import NodeSpec, RunLayout, node_command
from harness.stack.app import app_under_test
from harness.stack.serve_api import HeadApi, ServeApiUnavailable, ServeDeployRejected
from harness.stack.serve_config import ServeConfig

LOOP_PERIOD_S = 0.2  # how often the supervisor compares desired and actual state
POD_EXIT_S = 5.0  # a killed pod's unshare exits once its namespace's init is dead


@dataclass
class Pod:
    spec: NodeSpec
    proc: subprocess.Popen | None = None
    exited_at: float | None = None
    held: bool = False  # stopped on request: starts again when asked, whatever the restart policy
    log: object | None = field(default=None, repr=False)


class Supervisor:
    def __init__(self, layout: RunLayout):
        self.layout = layout
        self.config = layout.read_config()
        self.secret = layout.read_secret()
        self.pods: dict[str, Pod] = {}
        self.stopping = threading.Event()

    # --- pods ---------------------------------------------------------------------------------------
    def refresh_specs(self) -> None:
        for spec in self.layout.read_nodes():
            if spec.name not in self.pods:
                self.pods[spec.name] = Pod(spec)

    def start(self, pod: Pod, reason: str) -> None:
        nodes = tuple(p.spec for p in self.pods.values())
        argv, env = node_command(self.config, self.layout, pod.spec, nodes, self.secret)
        log = self.layout.node_log(pod.spec.name).open("ab")
        log.write(f"\n===== {time.strftime('%H:%M:%S')} starting {pod.spec.name} ({reason}) =====\n".encode())
        log.flush()
        pod.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        pod.log = log
        pod.exited_at = None
        self.layout.append_event("supervisor", "node_started", pod.spec.name, f"{reason}; pid {pod.proc.pid}")

    def kill(self, pod: Pod) -> None:
        """SIGKILL the pod: its PID namespace's init first (the kernel then kills the rest of the namespace),
        which ``unshare`` reaps before it exits, and is reaped here in turn. Killed together, ``unshare`` could
        die first and leave the init to the machine's init as a zombie. What else is in the node's network
        namespace (a driver's ``nsenter``) goes last."""
        if pod.proc is None:
            return
        if pod.proc.poll() is None:
            inits = system.children(pod.proc.pid)
            system.signal_pids(inits or [pod.proc.pid], signal.SIGKILL)
            try:
                pod.proc.wait(timeout=POD_EXIT_S)
            except subprocess.TimeoutExpired:
                system.signal_pids([pod.proc.pid], signal.SIGKILL)
        system.signal_pids(system.netns_pids(pod.spec.netns), signal.SIGKILL)
        try:
            pod.proc.wait(timeout=POD_EXIT_S)
        except subprocess.TimeoutExpired:
            pass

    def reconcile(self) -> None:
        now = time.monotonic()
        for pod in self.pods.values():
            running = pod.proc is not None and pod.proc.poll() is None
            desired = self.layout.desired(pod.spec.name)
            if pod.proc is not None and not running and pod.exited_at is None:
                pod.exited_at = now
                self.layout.append_event("supervisor", "node_exited", pod.spec.name, f"exit code {pod.proc.returncode}")
                if pod.log is not None:
                    pod.log.close()  # type: ignore[attr-defined]
                if desired == "running" and pod.spec.restart == "always":
                    self.layout.append_event("supervisor", "node_restarting", pod.spec.name,
                                             f"restart policy always: in {pod.spec.restart_delay_s:g}s")
            if desired == "stopped":
                pod.held = True
                if running:
                    self.kill(pod)
                    self.layout.append_event("supervisor", "node_stopped", pod.spec.name, "desired state: stopped")
                continue
            if running:
                continue
            requested = self.layout.start_requested_at(pod.spec.name)
            if pod.proc is None or pod.held:
                pod.held = False
                self.start(pod, "first start" if pod.proc is None else "desired state: running")
            elif requested is not None and requested >= (pod.exited_at or 0.0):
                self.start(pod, "start requested")
            elif pod.spec.restart == "always" and now - (pod.exited_at or now) >= pod.spec.restart_delay_s:
                self.start(pod, f"restart policy always, {pod.spec.restart_delay_s:g}s after exit")

    def run(self) -> None:
        threading.Thread(target=self.operate, name="operator", daemon=True).start()
        while not self.stopping.is_set():
            self.refresh_specs()
            self.reconcile()
            self.stopping.wait(LOOP_PERIOD_S)
        for pod in reversed(list(self.pods.values())):
            self.kill(pod)
        self.layout.append_event("supervisor", "supervisor_stopped", "stack")

    # --- operator -----------------------------------------------------------------------------------
    def operate(self) -> None:
        cfg = self.config
        head = next(p.spec for p in self.pods.values() if p.spec.role == "head") if self.pods else None
        while head is None and not self.stopping.wait(LOOP_PERIOD_S):
            head = next((p.spec for p in self.pods.values() if p.spec.role == "head"), None)
        api = HeadApi(head.address, cfg.app.dashboard_port) if head else None
        application = app_under_test(cfg).application  # the app whose absence calls for a redeploy
        missing_since: float | None = None
        while api is not None and not self.stopping.wait(cfg.operator.period_s):
            if not (cfg.operator.enabled and self.layout.operator_armed_file.exists()):
                continue
            try:
                snap = api.serve()
            except ServeApiUnavailable:
                missing_since = None  # cannot tell while the head is away; KubeRay waits too
                continue
            gone = [] if snap.controller_actor_id else ["controller"]
            if application not in {a.name for a in snap.apps}:
                gone.append(f"application {application!r}")
            if not gone:
                missing_since = None
                continue
            now = time.monotonic()
            if missing_since is None:
                missing_since = now
                self.layout.append_event("operator", "serve_missing", application, " and ".join(gone))
            if now - missing_since < cfg.operator.missing_grace_s:
                continue
            try:
                api.deploy(ServeConfig.from_dict(json.loads(self.layout.serve_config_file.read_text())))
            except (ServeApiUnavailable, ServeDeployRejected) as exc:
                self.layout.append_event("operator", "serve_config_failed", application,
                                         self.secret.scrub(str(exc))[:500])
                continue
            missing_since = None
            self.layout.append_event("operator", "serve_config_applied", application,
                                     f"{' and '.join(gone)} missing for {cfg.operator.missing_grace_s:g}s")


def main(argv: list[str]) -> int:
    run_dir = Path(argv[1])
    layout = RunLayout(run_dir.parent, run_dir.name)
    supervisor = Supervisor(layout)
    signal.signal(signal.SIGTERM, lambda *_: supervisor.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: supervisor.stopping.set())
    layout.supervisor_pid_file.write_text(str(os.getpid()))
    layout.append_event("supervisor", "supervisor_started", "stack")
    supervisor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
