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
                 context: str | None = None, kubeconfig: str | None = None):
    """The backend named ``backend`` for ``config``; ``kube_config`` overrides cluster/kube/kube.toml; ``context``
    and ``kubeconfig`` choose the existing cluster of the kube backend (default: the current context)."""
    from harness.kube.settings import load_settings

    settings = load_settings(kube_config)
    if backend == "kind":
        from harness.kube.kind import KindCluster

        return KindCluster(config, settings)
    if backend == "kube":
        from harness.kube.kube import KubeCluster

        return KubeCluster(config, settings, context=context, kubeconfig=kubeconfig)
    raise ValueError(f"unknown Kubernetes backend {backend!r}; choose one of {', '.join(BACKENDS)}")
