"""Where a stack runs, chosen the same way by every command: ``--backend local|kind|kube`` and one way to name
the stack (its ``--stack-config``; on Kubernetes also ``--run-id`` when more than one run is up).

    choice = StackChoice.from_args(args)   # after add_stack_options(parser)
    cluster = new_stack(choice)            # for `up`: a stack not yet brought up
    cluster = attach_stack(choice)         # for `status`, `inject`, `down`: the one that is up

The local backend finds its stack in the configuration's ``network.state_dir``; the Kubernetes backends find
theirs in ``[kube] state_dir`` (cluster/kube/kube.toml), where ``up`` marks a run ``up`` when it is ready.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from harness.stack.config import StackConfig, load_config
from harness.stack.errors import StackError

BACKENDS = ("local", "kind", "kube")


def add_stack_options(parser: argparse.ArgumentParser) -> None:
    """The options that name a stack, the same on every command that works on one."""
    group = parser.add_argument_group("which stack")
    group.add_argument("--backend", choices=BACKENDS, default="local", help="where the stack runs (default: local)")
    group.add_argument("--stack-config", metavar="FILE", help="TOML file overriding the default stack (cluster/local.toml)")
    group.add_argument("--run-id", help="the run, when several are up (Kubernetes backends) or to pick one (local)")
    group.add_argument("--kube-config", metavar="FILE", help="kind/kube: TOML file overriding cluster/kube/kube.toml")
    group.add_argument("--context", help="kube: the kubectl context of the existing cluster (default: the current one)")
    group.add_argument("--kubeconfig", metavar="FILE", help="kube: the kubeconfig file (default: kubectl's)")
    group.add_argument("--state-dir", help=argparse.SUPPRESS)  # older name: the local state folder itself


@dataclass(frozen=True)
class StackChoice:
    """Which stack a command works on."""

    backend: str = "local"
    stack_config: str | None = None
    run_id: str | None = None
    kube_config: str | None = None
    context: str | None = None
    kubeconfig: str | None = None
    state_dir: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> StackChoice:
        return cls(args.backend, args.stack_config, args.run_id, args.kube_config, args.context, args.kubeconfig,
                   args.state_dir)

    def config(self) -> StackConfig:
        """The stack's configuration (a ConfigError when the file does not load), with ``--state-dir`` applied."""
        config = load_config(self.stack_config)
        if self.state_dir:
            config = config.model_copy(update={"network": config.network.model_copy(update={"state_dir": self.state_dir})})
        return config

    def local_state_dir(self) -> str:
        return self.config().network.state_dir


def new_stack(choice: StackChoice):
    """A stack of ``choice``'s configuration on its backend, not yet brought up."""
    config = choice.config()
    if choice.backend == "local":
        from harness.local.backend import LocalCluster

        return LocalCluster(config, run_id=choice.run_id)
    from harness.kube import make_cluster

    return make_cluster(choice.backend, config, kube_config=choice.kube_config, context=choice.context,
                        kubeconfig=choice.kubeconfig)


def up_runs(state_dir: str | Path) -> tuple[str, ...]:
    """The Kubernetes runs that ``up`` finished and nothing has taken down, from their run folders."""
    root = Path(state_dir)
    if not root.is_dir():
        return ()
    return tuple(sorted(d.name for d in root.iterdir() if (d / "state").is_file()
                        and (d / "state").read_text().strip() == "up"))


def kube_run_id(choice: StackChoice) -> str:
    """The run a Kubernetes command means: ``--run-id``, or the one run that is up; a StackError otherwise."""
    from harness.kube.settings import load_settings

    state_dir = load_settings(choice.kube_config).kube.state_dir
    runs = up_runs(state_dir)
    if choice.run_id:
        if choice.run_id not in runs:
            raise StackError(f"no {choice.backend} run {choice.run_id} is up (runs up in {state_dir}: "
                             f"{', '.join(runs) or 'none'})")
        return choice.run_id
    if not runs:
        raise StackError(f"no {choice.backend} stack is up (no run marked up in {state_dir}); start one with "
                         f"`serve-chaos up --backend {choice.backend}`")
    if len(runs) > 1:
        raise StackError(f"{len(runs)} {choice.backend} runs are up ({', '.join(runs)}); name one with --run-id")
    return runs[0]


def attach_stack(choice: StackChoice):
    """The stack that is up on ``choice``'s backend (a StackError naming where it looked when there is none).
    A Kubernetes stack's port-forwards are started; its ``close()`` stops them."""
    if choice.backend == "local":
        from harness.local.backend import LocalCluster

        return LocalCluster.attach(choice.local_state_dir(), choice.run_id)
    from harness.kube import make_cluster

    cluster = make_cluster(choice.backend, choice.config(), kube_config=choice.kube_config, context=choice.context,
                           kubeconfig=choice.kubeconfig, run_id=kube_run_id(choice))
    cluster.attach()
    return cluster
