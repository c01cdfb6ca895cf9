"""The Kubernetes backends: ``kind`` (a kind cluster per run, KubeRay installed by the harness) and ``kube``
(an existing cluster, KubeRay already there). Both run KubeRay's RayService built from the same StackConfig
as the local backend; see docs/kubernetes.md.

    cluster = make_cluster("kind", load_config(), kube_config=None)
"""

from __future__ import annotations

from pathlib import Path

from harness.stack.config import StackConfig

BACKENDS = ("kind", "kube")


def make_cluster(backend: str, config: StackConfig, kube_config: str | Path | None = None,
                 context: str | None = None, kubeconfig: str | None = None, run_id: str | None = None):
    """The backend named ``backend`` for ``config``; ``kube_config`` overrides cluster/kube/kube.toml; ``context``
    and ``kubeconfig`` choose the existing cluster of the kube backend (default: the current context); ``run_id``
    names a run that exists (default: a new one)."""
    from harness.kube.settings import load_settings

    settings = load_settings(kube_config)
    if backend == "kind":
        from harness.kube.kind import KindCluster

        return KindCluster(config, settings, run_id=run_id)
    if backend == "kube":
        from harness.kube.kube import KubeCluster

        return KubeCluster(config, settings, context=context, kubeconfig=kubeconfig, run_id=run_id)
    raise ValueError(f"unknown Kubernetes backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def sweep(backend: str, kube_config: str | Path | None = None, context: str | None = None,
          kubeconfig: str | None = None) -> list[str]:
    """Remove what crashed runs left behind on ``backend`` (by label; live and kept runs stay): kind clusters
    on this machine, or this host's run namespaces in the context. Returns the run ids removed."""
    from harness.kube.settings import load_settings

    settings = load_settings(kube_config)
    if backend == "kind":
        from harness.kube.kind import sweep_kind

        return sweep_kind(settings=settings)
    if backend == "kube":
        from harness.kube.kube import client_for, sweep_namespaces
        from harness.kube.safety import require_allowed

        api = client_for(context, kubeconfig, settings)
        require_allowed(api.context, settings.allowed_contexts(), "sweep namespaces")
        try:
            return sweep_namespaces(api, settings)
        finally:
            api.close()
    raise ValueError(f"unknown Kubernetes backend {backend!r}; choose one of {', '.join(BACKENDS)}")
