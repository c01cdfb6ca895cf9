"""The kind backend: a kind cluster per run (a control plane and three workers, so that a node can be
lost), the KubeRay operator installed at a pinned version (with Helm, or from a built manifest where no chart
repository is reachable), then the RayService stack; ``down``
deletes the whole kind cluster. Its context (``kind-serve-chaos-<run id>``) lives in the run's own
kubeconfig file, so the user's kubeconfig is never touched.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml

from harness.kube.api import DEPLOYMENTS, NODES, PODS, KubeApi, load_documents
from harness.kube.backend import OPERATOR_DEPLOYMENT, Progress, RayServiceCluster, describe_pod
from harness.kube.forward import DirectDialer
from harness.kube.manifests import KIND_CLUSTER_PREFIX, kind_config
from harness.kube.routes import add_node_routes, host_routes, node_routes, pod_subnet, remove_routes, subnet_problem
from harness.kube.runs import RunRecord, is_leftover
from harness.kube.settings import KubeSettings, load_settings
from harness.kube.slots import HEAD
from harness.kube.tools import (
    Kind,
    KubeStackError,
    Runner,
    SubprocessRunner,
    ToolMissing,
    docker_cluster_containers,
    docker_image_present,
    docker_kill,
    docker_pull,
    helm_install_operator,
    require_docker_engine,
    require_tools,
)
from harness.secrets import Secret
from harness.stack.bringup import UpReport, new_run_id
from harness.stack.config import StackConfig

CGROUP_ROOT = Path("/sys/fs/cgroup")
KIND_RUN_RE = re.compile(rf"{re.escape(KIND_CLUSTER_PREFIX)}(sc[0-9a-f]{{6}})")


class KindCluster(RayServiceCluster):
    backend = "kind"

    def __init__(self, config: StackConfig, settings: KubeSettings | None = None, run_id: str | None = None,
                 secret: Secret | None = None, runner: Runner | None = None, api: KubeApi | None = None):
        settings = settings or load_settings()
        run_id = run_id or new_run_id()
        self.kind = kind_for(settings, run_id)
        self.pod_subnet = pod_subnet(run_id)
        dialer = DirectDialer() if settings.kind.reach == "pod-ip" else None
        super().__init__(config, settings, context=self.kind.context, kubeconfig=self.kind.kubeconfig, run_id=run_id,
                         secret=secret, runner=runner, on_kind=True, api=api, dialer=dialer)

    # --- up -------------------------------------------------------------------------------------------------
    def preflight(self) -> None:
        helm = ("helm",) if self.settings.kind.kuberay_install == "helm" else ()
        ip = ("ip",) if self.settings.kind.reach == "pod-ip" else ()
        require_tools(("docker", "kind", *helm, *ip))
        require_docker_engine(self.runner)
        if ip:
            self.preflight_routes()
        if self.settings.kind.kuberay_install == "manifest" and not self.settings.kind.kuberay_manifest_path().is_file():
            raise KubeStackError(f"the KubeRay operator's manifest {self.settings.kind.kuberay_manifest_path()} does not "
                                 "exist: build it (and the offline images) with `make kind-images`")
        super().preflight()

    def preflight_routes(self) -> None:
        """The run's pod subnet must be free on this host: no route may cover any part of it yet."""
        problem = subnet_problem(host_routes(self.runner), self.pod_subnet)
        if problem is not None:
            raise KubeStackError(f"{problem}: the run's pods cannot be routed from this host (remove that route, "
                                 "start a new run for another subnet, or set [kind] reach = \"port-forward\")")

    def _provision(self, report: UpReport, progress: Progress) -> None:
        swept = self.sweep()
        if swept:
            progress(f"swept kind clusters that crashed runs left behind: {', '.join(swept)}")
        report.run(progress, "kind cluster", self._create_cluster)
        if self.settings.kind.preload_images:
            report.run(progress, "images", self._preload_images)
        report.run(progress, "kuberay operator", self._install_operator)

    def _create_cluster(self) -> None:
        config_path = self.run_dir / "kind-config.yaml"
        config_path.write_text(yaml.safe_dump(kind_config(self.settings, self.run_id), sort_keys=False))
        wait_s = self.settings.timeouts.cluster_create_s
        self._run(self.kind.create(str(config_path), self.settings.kind.node_image, wait_s=int(wait_s)),
                  f"creating kind cluster {self.kind.name}", timeout_s=wait_s + 120)
        problem = self.kube.ready()
        if problem is not None:
            raise KubeStackError(f"the API server of {self.kind.context} is not ready after `kind create cluster`: "
                                 f"{problem}")

    def _preload_images(self) -> None:
        """Pull each image once on the host and load it into the nodes that run it: Ray's into the worker
        nodes only (it is large), Redis's where Redis runs. Nodes then never pull from a registry."""
        nodes = self._run(self.kind.node_containers(), "listing the kind nodes").stdout.split()
        workers = [n for n in nodes if not n.endswith("-control-plane")]
        redis_nodes = [n for n in nodes if n.endswith("-control-plane")] if self.settings.kind.redis_on_control_plane \
            else []
        images = [(self.settings.kube.ray_image, workers)]
        if self.config.redis.enabled:
            images.append((self.settings.kube.redis_image, redis_nodes))
        if self.settings.kind.kuberay_install == "manifest":
            images.append((self.settings.kind.kuberay_image, []))
        timeout = self.settings.timeouts.images_s
        for image, targets in images:
            if not self._run(docker_image_present(image), f"looking for {image} on the host", check=False).ok:
                self._run(docker_pull(image), f"pulling {image} on the host (or set [kind] preload_images = false; "
                          "with no registry, build it: `make kind-images`)", timeout_s=timeout)
            self._run(self.kind.load_image(image, targets), f"loading {image} into {', '.join(targets) or 'every node'}",
                      timeout_s=timeout)

    def _install_operator(self) -> None:
        kind = self.settings.kind
        if kind.kuberay_install == "manifest":
            objects = load_documents(kind.kuberay_manifest_path().read_text())
            self._kube(f"applying the KubeRay operator {kind.kuberay_version} ({kind.kuberay_manifest_path().name})",
                       lambda: self.kube.apply(objects, self.settings.kube.operator_namespace))
            self._wait_operator()
            return
        self._run(helm_install_operator(chart=kind.kuberay_chart, repo=kind.kuberay_chart_repo,
                                        version=kind.kuberay_version, namespace=self.settings.kube.operator_namespace,
                                        context=self.context, kubeconfig=self.kubeconfig),
                  f"installing the KubeRay operator {kind.kuberay_version} with Helm",
                  timeout_s=self.settings.timeouts.operator_ready_s)
        self._wait_operator()

    def _wait_operator(self) -> None:
        namespace = self.settings.kube.operator_namespace

        def available() -> bool:
            dep = self._kube("reading the operator's Deployment",
                             lambda: self.kube.get(DEPLOYMENTS, OPERATOR_DEPLOYMENT, namespace)) or {}
            return int((dep.get("status") or {}).get("availableReplicas") or 0) >= 1

        def describe() -> str:
            try:
                pods = "\n".join(describe_pod(p) for p in self.kube.list(PODS, namespace)) or "  (none)"
            except KubeStackError as exc:
                pods = f"  (not readable: {exc})"
            return f"--- operator pods\n{pods}\n{self.operator_log_tail()}"

        self._wait("kuberay operator", f"the KubeRay operator ({OPERATOR_DEPLOYMENT} in "
                   f"{self.settings.kube.operator_namespace}) to be Available", available,
                   self.settings.timeouts.operator_ready_s, describe=describe)

    def _start_forwards(self) -> None:
        if self.settings.kind.reach == "pod-ip":
            self._route_pods()
        super()._start_forwards()

    def _route_pods(self) -> None:
        """Route every node's pod CIDR from the host through its node container (idempotent: attach does it
        again). Waits until the control plane has given every node its podCIDR."""
        seen: list[str] = []

        def routes() -> tuple | None:
            found, missing = node_routes(self._kube("listing the kind nodes", lambda: self.kube.list(NODES)))
            seen[:] = list(missing)
            return found if found and not missing else None

        found = self._wait("pod routes", "every kind node to have a podCIDR and an internal address", routes,
                           self.settings.timeouts.cluster_create_s,
                           describe=lambda: f"nodes without one: {', '.join(seen) or '(none listed)'}")
        add_node_routes(self.runner, found, self.pod_subnet)
        self._event("pod_routes", "host", ", ".join(f"{r.pod_cidr} via {r.address}" for r in found))

    # --- down -----------------------------------------------------------------------------------------------
    def _remove(self) -> None:
        remove_kind_run(self.runner, self.settings, self.run_id)

    def sweep(self) -> list[str]:
        return sweep_kind(self.runner, self.settings, keep=(self.run_id,))

    # --- what only kind can do ------------------------------------------------------------------------------
    def set_operator(self, enabled: bool) -> None:
        """Scale this cluster's own KubeRay operator to 1 or 0 (a control scenario shows what it repairs: with
        it off, nothing recreates a deleted pod or resubmits the Serve config)."""
        self._allow("scale the KubeRay operator")
        patch = {"spec": {"replicas": 1 if enabled else 0}}
        self._kube("scaling the KubeRay operator", lambda: self.kube.patch(
            DEPLOYMENTS, OPERATOR_DEPLOYMENT, patch, "merge", self.settings.kube.operator_namespace))
        if enabled:
            self._wait_operator()
        self._event("operator_armed" if enabled else "operator_disarmed", "operator")

    def lose_node(self, node: str) -> str:
        """The guide's worker node failure: delete the Kubernetes node that runs ``node``'s pod and kill its kind
        container. KubeRay then creates the pod again on another node. Returns the Kubernetes node's name."""
        self._allow(f"lose the Kubernetes node of {node}")
        slot = self._slot(node)
        view = self._pod(slot)
        if view is None or not view.node:
            raise KubeStackError(f"node {node} has no scheduled pod: no Kubernetes node to lose")
        if node == HEAD or view.node.endswith("-control-plane"):
            raise KubeStackError(f"refusing to lose {view.node}: it holds the head or the control plane")
        kube_node = view.node
        self._kube(f"deleting Kubernetes node {kube_node}", lambda: self.kube.delete(NODES, kube_node))
        self._run(docker_kill(view.node), f"killing kind node container {view.node}")
        self._event("kube_node_lost", node, f"node {view.node} deleted, its container killed")
        return view.node


def kind_for(settings: KubeSettings, run_id: str) -> Kind:
    return Kind(f"{KIND_CLUSTER_PREFIX}{run_id}", str(Path(settings.kube.state_dir) / run_id / "kubeconfig"))


def _record(settings: KubeSettings, run_id: str) -> RunRecord:
    run_dir = Path(settings.kube.state_dir) / run_id

    def read(name: str) -> str:
        try:
            return (run_dir / name).read_text().strip()
        except OSError:
            return ""

    return RunRecord(run_id, read("owner"), read("state"))


def _can_route() -> bool:
    return shutil.which("ip") is not None


def remove_kind_run(runner: Runner, settings: KubeSettings, run_id: str, cgroup_root: Path = CGROUP_ROOT) -> None:
    """Delete the run's host routes to its pods, its kind cluster (a no-op when it does not exist) and its
    run folder. When the delete fails and a node container holds a frozen cgroup, those are thawed and the
    delete is tried once more."""
    kind = kind_for(settings, run_id)
    if _can_route():
        remove_routes(runner, within=pod_subnet(run_id))
    Path(kind.kubeconfig).parent.mkdir(parents=True, exist_ok=True)
    result = runner.run(kind.delete(), timeout_s=settings.timeouts.cluster_create_s)
    if not result.ok:
        thawed = thaw_frozen(runner, kind.name, cgroup_root)
        if thawed:  # a run cut off while runc had a container's cgroup frozen: Docker cannot kill it until thawed
            result = runner.run(kind.delete(), timeout_s=settings.timeouts.cluster_create_s)
        if not result.ok:
            note = f" (after thawing {len(thawed)} frozen cgroups)" if thawed else ""
            raise KubeStackError(f"kind delete cluster --name {kind.name} failed{note}:\n{result.tail(5)}")
    shutil.rmtree(Path(kind.kubeconfig).parent, ignore_errors=True)


def thaw_frozen(runner: Runner, cluster: str, cgroup_root: Path = CGROUP_ROOT) -> list[Path]:
    """Thaw the frozen cgroups inside the kind cluster's node containers (and only there); return them.

    A session cut off while runc was creating a container inside a node (kubelet's pods) can leave that
    container's cgroup frozen: its processes sit in the freezer, Docker's kill of the node never sees an exit
    ("did not receive an exit event") and the node container cannot be removed. cgroup v1: ``freezer.state``
    FROZEN under ``freezer/docker/<id>``; cgroup v2: ``cgroup.freeze`` 1 under the container's cgroup."""
    listed = runner.run(docker_cluster_containers(cluster), timeout_s=60)
    if not listed.ok:
        return []
    thawed: list[Path] = []
    for container in (line.strip() for line in listed.stdout.splitlines()):
        if not re.fullmatch(r"[0-9a-f]{64}", container):
            continue
        for top in (cgroup_root / "freezer" / "docker" / container, cgroup_root / "docker" / container,
                    cgroup_root / "system.slice" / f"docker-{container}.scope"):
            for name, frozen, thaw in (("freezer.state", "FROZEN", "THAWED"), ("cgroup.freeze", "1", "0")):
                for state in sorted(top.rglob(name)) if top.is_dir() else []:
                    try:
                        if state.read_text().strip() == frozen:
                            state.write_text(thaw)
                            thawed.append(state)
                    except OSError:
                        continue
    return thawed


def sweep_kind(runner: Runner | None = None, settings: KubeSettings | None = None,
               keep: tuple[str, ...] = ()) -> list[str]:
    """Delete the kind clusters of crashed runs (named ``serve-chaos-<run id>``) on this machine; keep live ones."""
    runner = runner or SubprocessRunner()
    settings = settings or load_settings()
    try:
        listed = runner.run(Kind.list_clusters(), timeout_s=60)
    except ToolMissing:
        return []
    if not listed.ok:
        return []
    removed, existing = [], []
    for line in listed.stdout.splitlines():
        match = KIND_RUN_RE.fullmatch(line.strip())
        if match is None:
            continue
        if match.group(1) in keep or not is_leftover(_record(settings, match.group(1))):
            existing.append(match.group(1))
            continue
        remove_kind_run(runner, settings, match.group(1))
        removed.append(match.group(1))
    if _can_route():  # routes whose kind cluster is gone (a run that crashed after `kind delete`)
        orphans = remove_routes(runner, keep=[pod_subnet(run_id) for run_id in (*existing, *keep)])
        removed += [f"route {dst}" for dst in orphans]
    return removed
