"""The kube backend: an existing cluster from a kubeconfig, with KubeRay's operator already installed.

It creates one namespace per run (``serve-chaos-<run id>``, labelled with the run id) and everything else
inside it; ``down`` deletes that namespace, after checking the label, and nothing else. Every change is
refused unless the context is on the allowlist (default ``kind-*``: a real cluster must be allowed on
purpose, see ``harness.kube.safety``).
"""

from __future__ import annotations

import json
import shutil
import socket

from harness.kube.backend import Progress, RayServiceCluster
from harness.kube.manifests import (
    ANNOTATION_OWNER,
    ANNOTATION_STATE,
    LABEL_MANAGED_BY,
    LABEL_RUN_ID,
    MANAGED_BY,
)
from harness.kube.runs import RunRecord, is_leftover
from harness.kube.settings import KubeSettings, load_settings
from harness.kube.tools import (
    Kubectl,
    KubeStackError,
    Runner,
    SubprocessRunner,
    require_tools,
)
from harness.secrets import Secret
from harness.stack.bringup import UpReport
from harness.stack.config import StackConfig


def current_context(runner: Runner, kubeconfig: str | None = None) -> str:
    result = runner.run(Kubectl("", "", kubeconfig).current_context(), timeout_s=30)
    if not result.ok or not result.stdout.strip():
        raise KubeStackError(f"no current kube context (kubectl config current-context): {result.tail(3)}; "
                             "pass one explicitly")
    return result.stdout.strip()


class KubeCluster(RayServiceCluster):
    backend = "kube"

    def __init__(self, config: StackConfig, settings: KubeSettings | None = None, *, context: str | None = None,
                 kubeconfig: str | None = None, run_id: str | None = None, secret: Secret | None = None,
                 runner: Runner | None = None):
        runner = runner or SubprocessRunner()
        super().__init__(config, settings or load_settings(), context=context or current_context(runner, kubeconfig),
                         kubeconfig=kubeconfig, run_id=run_id, secret=secret, runner=runner, on_kind=False)

    def preflight(self) -> None:
        require_tools(("kubectl",))
        ctx = self.kubectl.context
        ready = self._run(self.kubectl.api_ready(), "asking the API server", check=False)
        if not ready.ok:
            raise KubeStackError(f"the Kubernetes API server of context {ctx!r} does not answer: {ready.tail(5)}\n"
                                 f"check it with `kubectl --context {ctx} cluster-info`")
        crd = self._run(self.kubectl("get", "crd", "rayservices.ray.io", namespaced=False), "looking for KubeRay's CRD",
                        check=False)
        if not crd.ok:
            kind = self.settings.kind
            raise KubeStackError(
                f"KubeRay is not installed on context {ctx!r} (no CRD rayservices.ray.io): the kube backend creates "
                "nothing outside its namespace, so install the operator first, e.g. `helm install kuberay-operator "
                f"{kind.kuberay_chart} --repo {kind.kuberay_chart_repo} --version {kind.kuberay_version} "
                f"--namespace {self.settings.kube.operator_namespace} --create-namespace`")
        super().preflight()

    def _provision(self, report: UpReport, progress: Progress) -> None:
        swept = self.sweep()
        if swept:
            progress(f"swept namespaces that crashed runs left behind: {', '.join(swept)}")

    def _remove(self) -> None:
        remove_namespace(self.runner, self.kubectl, self.settings, self.run_id)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def sweep(self) -> list[str]:
        return sweep_namespaces(self.runner, self.kubectl, self.settings, keep=(self.run_id,))


def remove_namespace(runner: Runner, kubectl: Kubectl, settings: KubeSettings, run_id: str) -> bool:
    """Delete the run's namespace if it exists and carries the run's label; False when there was none.

    The RayService goes first, and its RayClusters are waited for, so that KubeRay's Redis cleanup of a GCS
    fault-tolerant cluster finishes while Redis still runs."""
    namespace = f"{settings.kube.namespace_prefix}-{run_id}"
    ns = kubectl.in_namespace(namespace)
    got = runner.run(ns.get_json("namespace", namespace, namespaced=False), timeout_s=settings.timeouts.kubectl_s)
    if not got.ok:
        if "NotFound" in got.stderr or "not found" in got.stderr:
            return False
        raise KubeStackError(f"reading namespace {namespace} failed: {got.tail(3)}")
    labels = json.loads(got.stdout).get("metadata", {}).get("labels", {})
    if labels.get(LABEL_RUN_ID) != run_id or labels.get(LABEL_MANAGED_BY) != MANAGED_BY:
        raise KubeStackError(f"namespace {namespace} does not carry {LABEL_RUN_ID}={run_id}: the harness did not "
                             "create it and will not delete it")
    runner.run(ns("delete", "rayservices", "--all", "--wait=true", f"--timeout={int(settings.timeouts.kubectl_s)}s"),
               timeout_s=settings.timeouts.kubectl_s + 10)
    runner.run(ns("wait", "--for=delete", "rayclusters", "--all", f"--timeout={int(settings.timeouts.kubectl_s)}s"),
               timeout_s=settings.timeouts.kubectl_s + 10)
    deleted = runner.run(ns.delete_namespace(), timeout_s=settings.timeouts.kubectl_s)
    if not deleted.ok:
        raise KubeStackError(f"deleting namespace {namespace} failed: {deleted.tail(3)}")
    timeout = int(settings.timeouts.namespace_deleted_s)
    gone = runner.run(ns("wait", "--for=delete", f"namespace/{namespace}", f"--timeout={timeout}s", namespaced=False),
                      timeout_s=timeout + 10)
    if not gone.ok and "NotFound" not in gone.stderr and "not found" not in gone.stderr:
        raise KubeStackError(f"namespace {namespace} is still there after {timeout}s: {gone.tail(3)}")
    return True


def sweep_namespaces(runner: Runner | None, kubectl: Kubectl, settings: KubeSettings | None = None,
                     keep: tuple[str, ...] = ()) -> list[str]:
    """Delete the namespaces of crashed runs of this host (by the harness's labels); keep live ones."""
    runner = runner or SubprocessRunner()
    settings = settings or load_settings()
    listed = runner.run(kubectl.get_json("namespaces", selector=f"{LABEL_MANAGED_BY}={MANAGED_BY}", namespaced=False),
                        timeout_s=settings.timeouts.kubectl_s)
    if not listed.ok:
        raise KubeStackError(f"listing the harness's namespaces failed: {listed.tail(3)}")
    removed = []
    host = socket.gethostname()
    for item in json.loads(listed.stdout or "{}").get("items", []):
        meta = item.get("metadata", {})
        run_id = meta.get("labels", {}).get(LABEL_RUN_ID, "")
        notes = meta.get("annotations", {})
        record = RunRecord(run_id, notes.get(ANNOTATION_OWNER, ""), notes.get(ANNOTATION_STATE, ""))
        if not run_id or run_id in keep or not is_leftover(record, host):
            continue
        if remove_namespace(runner, kubectl, settings, run_id):
            removed.append(run_id)
    return removed
