"""The kube backend: an existing cluster from a kubeconfig, with KubeRay's operator already installed.

It creates one namespace per run (``serve-chaos-<run id>``, labelled with the run id) and everything else
inside it; ``down`` deletes that namespace, after checking the label, and nothing else. Every change is
refused unless the context is on the allowlist (default ``kind-*``: a real cluster must be allowed on
purpose, see ``harness.kube.safety``).
"""

from __future__ import annotations

import shutil
import socket
import sys

from harness.kube.api import CRDS, NAMESPACES, RAYCLUSTERS, RAYSERVICES, ClientApi, KubeApi, KubeApiError
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
from harness.kube.tools import KubeStackError, Runner
from harness.secrets import Secret
from harness.stack.bringup import UpReport
from harness.stack.config import StackConfig
from harness.waiting import WaitTimeout, wait_until


def current_context(kubeconfig: str | None = None) -> str:
    """The kubeconfig's current context (the default file, or KUBECONFIG's, when ``kubeconfig`` is None)."""
    try:
        from kubernetes import config
    except ImportError:
        from harness.kube.api import INSTALL_CLIENT

        raise KubeStackError(INSTALL_CLIENT) from None
    try:
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)
    except Exception as exc:  # noqa: BLE001 - ConfigException, a missing or unreadable file
        raise KubeStackError(f"no current kube context in {kubeconfig or 'the default kubeconfig'}: {exc}; "
                             "pass one explicitly") from None
    name = (active or {}).get("name", "")
    if not name:
        raise KubeStackError(f"no current kube context in {kubeconfig or 'the default kubeconfig'}: pass one explicitly")
    return str(name)


class KubeCluster(RayServiceCluster):
    backend = "kube"

    def __init__(self, config: StackConfig, settings: KubeSettings | None = None, *, context: str | None = None,
                 kubeconfig: str | None = None, run_id: str | None = None, secret: Secret | None = None,
                 runner: Runner | None = None, api: KubeApi | None = None):
        super().__init__(config, settings or load_settings(), context=context or current_context(kubeconfig),
                         kubeconfig=kubeconfig, run_id=run_id, secret=secret, runner=runner, on_kind=False, api=api)

    def preflight(self) -> None:
        ctx = self.context
        problem = self.kube.ready()
        if problem is not None:
            raise KubeStackError(f"the Kubernetes API server of context {ctx!r} is not ready: {problem}\n"
                                 f"check it with `kubectl --context {ctx} cluster-info`")
        crd = self._kube("looking for KubeRay's CRD", lambda: self.kube.get(CRDS, "rayservices.ray.io"))
        if crd is None:
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
        remove_namespace(self.kube, self.settings, self.run_id)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def sweep(self) -> list[str]:
        return sweep_namespaces(self.kube, self.settings, keep=(self.run_id,))


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _wait_gone(what: str, listed, timeout_s: float) -> None:
    try:
        wait_until(what, lambda: not listed(), timeout_s=timeout_s, interval_s=1.0,
                   describe=lambda: f"still there: {listed()}")
    except WaitTimeout as exc:
        raise KubeStackError(str(exc)) from None


def remove_namespace(api: KubeApi, settings: KubeSettings, run_id: str, say: Progress = _stderr) -> bool:
    """Delete the run's namespace if it exists and carries the run's label; False when there was none.

    The RayService goes first, and its RayClusters are waited for, so that KubeRay's Redis cleanup of a GCS
    fault-tolerant cluster finishes while Redis still runs. When that ordered part fails, the namespace is still
    deleted and ``say`` is told why the order did not hold."""
    namespace = f"{settings.kube.namespace_prefix}-{run_id}"
    try:
        found = api.get(NAMESPACES, namespace)
    except KubeApiError as exc:
        raise KubeStackError(f"reading namespace {namespace} failed: {exc}") from None
    if found is None:
        return False
    labels = (found.get("metadata") or {}).get("labels") or {}
    if labels.get(LABEL_RUN_ID) != run_id or labels.get(LABEL_MANAGED_BY) != MANAGED_BY:
        raise KubeStackError(f"namespace {namespace} does not carry {LABEL_RUN_ID}={run_id}: the harness did not "
                             "create it and will not delete it")
    timeout = settings.timeouts.api_call_s
    try:
        for rs in api.list(RAYSERVICES, namespace):
            api.delete(RAYSERVICES, rs["metadata"]["name"], namespace)
        _wait_gone(f"the RayServices of {namespace} to be deleted",
                   lambda: [o["metadata"]["name"] for o in api.list(RAYSERVICES, namespace)], timeout)
        _wait_gone(f"the RayClusters of {namespace} to be deleted",
                   lambda: [o["metadata"]["name"] for o in api.list(RAYCLUSTERS, namespace)], timeout)
    except (KubeApiError, KubeStackError) as exc:  # the namespace's deletion below removes whatever is left
        say(f"{namespace}: the RayService went first but was not seen gone ({exc}); deleting the namespace "
            "anyway, so KubeRay's Redis cleanup may not have run")
    try:
        api.delete(NAMESPACES, namespace)
    except KubeApiError as exc:
        raise KubeStackError(f"deleting namespace {namespace} failed: {exc}") from None
    _wait_gone(f"namespace {namespace} to be gone",
               lambda: [namespace] if api.get(NAMESPACES, namespace) is not None else [],
               settings.timeouts.namespace_deleted_s)
    return True


def sweep_namespaces(api: KubeApi, settings: KubeSettings | None = None, keep: tuple[str, ...] = ()) -> list[str]:
    """Delete the namespaces of crashed runs of this host (by the harness's labels); keep live ones."""
    settings = settings or load_settings()
    try:
        items = api.list(NAMESPACES, selector=f"{LABEL_MANAGED_BY}={MANAGED_BY}")
    except KubeApiError as exc:
        raise KubeStackError(f"listing the harness's namespaces failed: {exc}") from None
    removed: list[str] = []
    failed: list[str] = []
    host = socket.gethostname()
    for item in items:
        meta = item.get("metadata") or {}
        run_id = (meta.get("labels") or {}).get(LABEL_RUN_ID, "")
        notes = meta.get("annotations") or {}
        record = RunRecord(run_id, notes.get(ANNOTATION_OWNER, ""), notes.get(ANNOTATION_STATE, ""))
        if not run_id or run_id in keep or not is_leftover(record, host):
            continue
        try:
            if remove_namespace(api, settings, run_id):
                removed.append(run_id)
        except KubeStackError as exc:  # the others are still swept; the failures are reported together
            failed.append(f"{run_id}: {exc}")
    if failed:
        raise KubeStackError(f"swept {', '.join(removed) or 'nothing'}; could not remove:\n" + "\n".join(failed))
    return removed


def client_for(context: str | None, kubeconfig: str | None, settings: KubeSettings) -> ClientApi:
    """The API of ``context`` (default: the kubeconfig's current one)."""
    return ClientApi(context or current_context(kubeconfig), kubeconfig, request_timeout_s=settings.timeouts.api_call_s)
