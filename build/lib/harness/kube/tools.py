"""The command-line tools the Kubernetes backends drive (docker, kind, kubectl, helm): argv builders, one
runner, and preflight checks whose errors name the missing tool and how to install it.

Every command is an argv list, never a shell string. Secrets travel on stdin (``kubectl apply -f -``),
never on argv. A ``Runner`` runs commands; tests give a fake one and read the argv it was handed.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

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
class Kubectl:
    """kubectl on one context (and, optionally, its own kubeconfig file) in one namespace."""

    context: str
    namespace: str
    kubeconfig: str | None = None

    def base(self, namespaced: bool = True) -> tuple[str, ...]:
        argv: tuple[str, ...] = ("kubectl",)
        if self.kubeconfig:
            argv += ("--kubeconfig", self.kubeconfig)
        argv += ("--context", self.context)
        if namespaced:
            argv += ("--namespace", self.namespace)
        return argv

    def __call__(self, *args: str, namespaced: bool = True) -> tuple[str, ...]:
        return (*self.base(namespaced), *args)

    def in_namespace(self, namespace: str) -> Kubectl:
        return Kubectl(self.context, namespace, self.kubeconfig)

    def apply_stdin(self) -> tuple[str, ...]:
        """``kubectl apply -f -``: the objects (the Secret among them) come on stdin, never on disk or argv."""
        return self("apply", "--server-side", "--field-manager=serve-chaos", "--force-conflicts", "-f", "-")

    def get_json(self, kind: str, name: str | None = None, selector: str | None = None,
                 namespaced: bool = True) -> tuple[str, ...]:
        args = ["get", kind] + ([name] if name else []) + (["--selector", selector] if selector else [])
        return self(*args, "--output", "json", namespaced=namespaced)

    def delete_pod(self, pod: str, grace_period_s: int) -> tuple[str, ...]:
        return self("delete", "pod", pod, f"--grace-period={grace_period_s}", "--wait=false")

    def exec(self, pod: str, container: str, argv: Sequence[str]) -> tuple[str, ...]:
        return self("exec", pod, "--container", container, "--", *argv)

    def port_forward(self, pod: str, local_port: int, remote_port: int) -> tuple[str, ...]:
        return self("port-forward", "--address", "127.0.0.1", f"pod/{pod}", f"{local_port}:{remote_port}")

    def patch_json(self, kind: str, name: str, patch: str) -> tuple[str, ...]:
        return self("patch", kind, name, "--type=json", "--patch", patch)

    def patch_merge(self, kind: str, name: str, patch: str) -> tuple[str, ...]:
        return self("patch", kind, name, "--type=merge", "--patch", patch)

    def logs(self, pod: str, tail: int, previous: bool = False) -> tuple[str, ...]:
        return self("logs", pod, "--all-containers", f"--tail={tail}", *(("--previous",) if previous else ()))

    def delete_namespace(self) -> tuple[str, ...]:
        return self("delete", "namespace", self.namespace, "--wait=false", "--ignore-not-found", namespaced=False)

    def scale_deployment(self, name: str, replicas: int) -> tuple[str, ...]:
        return self("scale", "deployment", name, f"--replicas={replicas}")

    def api_ready(self) -> tuple[str, ...]:
        return self("get", "--raw", "/readyz", namespaced=False)

    def current_context(self) -> tuple[str, ...]:
        argv: tuple[str, ...] = ("kubectl",) + (("--kubeconfig", self.kubeconfig) if self.kubeconfig else ())
        return (*argv, "config", "current-context")


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


def docker_image_present(image: str) -> tuple[str, ...]:
    return ("docker", "image", "inspect", "--format", "{{.Id}}", image)


def docker_pull(image: str) -> tuple[str, ...]:
    return ("docker", "pull", image)
