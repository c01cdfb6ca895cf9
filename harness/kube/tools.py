"""The command-line tools the Kubernetes backends drive (docker, kind, helm): argv builders, one runner, and
preflight checks whose errors name the missing tool and how to install it. The API server itself is reached
through ``harness.kube.api`` (the ``kubernetes`` client), not kubectl.

Every command is an argv list, never a shell string; no secret is ever on one. A ``Runner`` runs commands;
tests give a fake one and read the argv it was handed.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from harness.kube.settings import KIND_CACHE
from harness.stack.errors import StackError


class KubeStackError(StackError):
    """The Kubernetes stack cannot be brought up or used; the message says which part and why."""


class ToolMissing(KubeStackError):
    """A required command-line tool is not installed."""


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, lines: int = 15) -> str:
        text = (self.stderr.strip() or self.stdout.strip() or "(no output)").splitlines()
        return "\n".join(text[-lines:])


class Runner(Protocol):
    def run(self, argv: Sequence[str], *, stdin: str | None = None, timeout_s: float = 60.0) -> Completed: ...
    def spawn(self, argv: Sequence[str], log_path: str) -> subprocess.Popen: ...


class SubprocessRunner:
    """The real runner: ``subprocess.run`` with a timeout; a timeout is a failed command, not an exception."""

    def run(self, argv: Sequence[str], *, stdin: str | None = None, timeout_s: float = 60.0) -> Completed:
        argv = tuple(argv)
        try:
            proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout_s)
        except FileNotFoundError:
            raise ToolMissing(missing_tool_message(argv[0])) from None
        except subprocess.TimeoutExpired as exc:
            return Completed(argv, -1, _text(exc.stdout), f"{argv[0]} timed out after {timeout_s:g}s\n{_text(exc.stderr)}")
        return Completed(argv, proc.returncode, proc.stdout, proc.stderr)

    def spawn(self, argv: Sequence[str], log_path: str) -> subprocess.Popen:
        with open(log_path, "ab") as log:
            return subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


# --- preflight ---------------------------------------------------------------------------------------------

KIND_VERSION = "v0.33.0"

INSTALL_HINTS = {
    "docker": "the kind backend runs Kubernetes nodes as Docker containers: install Docker Engine "
              "(https://docs.docker.com/engine/install/, or Debian's `apt-get install docker.io`) and start it",
    "kind": f"install kind {KIND_VERSION}: `go install sigs.k8s.io/kind@{KIND_VERSION}`, or its release binary "
            "(https://kind.sigs.k8s.io/docs/user/quick-start/#installation)",
    "kubectl": "install kubectl (https://kubernetes.io/docs/tasks/tools/), a version within one minor of the cluster's",
    "helm": "install Helm 3 (https://helm.sh/docs/intro/install/); the kind backend installs the KubeRay operator with it",
}


def missing_tool_message(tool: str) -> str:
    built = KIND_CACHE / "bin" / tool
    if built.is_file():
        # `make kind-images` built it but keeps it in its cache: the Makefile's kind targets put that first on PATH.
        return (f"{tool} not found on PATH, but `make kind-images` built one: "
                f"`export PATH={built.parent}:$PATH` (the Makefile's kind targets do this)")
    return f"{tool} not found on PATH: {INSTALL_HINTS.get(tool, f'install {tool}')}"


def require_tools(tools: Sequence[str]) -> None:
    """Raise ToolMissing for the first tool that is not on PATH."""
    for tool in tools:
        if shutil.which(tool) is None:
            raise ToolMissing(missing_tool_message(tool))


def require_docker_engine(runner: Runner) -> None:
    """The docker CLI is there; the engine must answer too."""
    result = runner.run(("docker", "info", "--format", "{{.ServerVersion}}"), timeout_s=30)
    if not result.ok:
        raise KubeStackError(
            "the Docker engine does not answer (`docker info` failed): start it (`systemctl start docker`, or "
            f"`dockerd &` as root) and check that you may use its socket\n{result.tail(5)}")


# --- argv builders -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Kind:
    """The kind CLI for one cluster, writing its context into its own kubeconfig file."""

    name: str
    kubeconfig: str

    def create(self, config_path: str, node_image: str = "", wait_s: int = 300) -> tuple[str, ...]:
        argv = ("kind", "create", "cluster", "--name", self.name, "--config", config_path,
                "--kubeconfig", self.kubeconfig, "--wait", f"{wait_s}s")
        return (*argv, "--image", node_image) if node_image else argv

    def delete(self) -> tuple[str, ...]:
        return ("kind", "delete", "cluster", "--name", self.name, "--kubeconfig", self.kubeconfig)

    @property
    def context(self) -> str:
        return f"kind-{self.name}"

    @staticmethod
    def list_clusters() -> tuple[str, ...]:
        return ("kind", "get", "clusters")

    def node_containers(self) -> tuple[str, ...]:
        return ("kind", "get", "nodes", "--name", self.name)

    def load_image(self, image: str, nodes: Sequence[str]) -> tuple[str, ...]:
        """Copy an image from the host's Docker into ``nodes`` (all of the cluster's when empty)."""
        argv = ("kind", "load", "docker-image", image, "--name", self.name)
        return (*argv, "--nodes", ",".join(nodes)) if nodes else argv


def helm_install_operator(*, chart: str, repo: str, version: str, namespace: str, context: str,
                          kubeconfig: str | None) -> tuple[str, ...]:
    """``helm upgrade --install`` of the KubeRay operator at a pinned version; ``--repo`` leaves the user's
    Helm repository list alone. The harness waits for it itself (to show the operator's log on a timeout)."""
    argv = ("helm", "upgrade", "--install", "kuberay-operator", chart, "--repo", repo, "--version", version,
            "--namespace", namespace, "--create-namespace", "--kube-context", context)
    return (*argv, "--kubeconfig", kubeconfig) if kubeconfig else argv


def docker_kill(container: str) -> tuple[str, ...]:
    return ("docker", "kill", container)


def docker_cluster_containers(cluster: str) -> tuple[str, ...]:
    """The full ids of a kind cluster's node containers (kind labels each with its cluster's name)."""
    return ("docker", "ps", "-a", "--no-trunc", "--filter", f"label=io.x-k8s.kind.cluster={cluster}",
            "--format", "{{.ID}}")


def docker_image_present(image: str) -> tuple[str, ...]:
    return ("docker", "image", "inspect", "--format", "{{.Id}}", image)


def docker_pull(image: str) -> tuple[str, ...]:
    return ("docker", "pull", image)
