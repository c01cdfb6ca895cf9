"""``python -m harness.kube sweep | down``: remove what a crashed or kept Kubernetes run left behind.

    python -m harness.kube sweep --backend kind             # kind clusters of crashed runs on this machine
    python -m harness.kube sweep --backend kube --context C # namespaces of crashed runs of this host on C
    python -m harness.kube down --backend kind --run-id sc1a2b3c   # a run kept with --keep-stack
"""

from __future__ import annotations

import argparse
import sys

from harness.exit_codes import ExitCode
from harness.kube import BACKENDS
from harness.kube.safety import require_allowed
from harness.kube.settings import load_settings
from harness.kube.tools import Kubectl, KubeStackError
from harness.stack.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.kube", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("sweep", "remove leftovers of crashed runs (by label)"), ("down", "remove one run")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--backend", choices=BACKENDS, required=True)
        p.add_argument("--kube-config", metavar="FILE", help="TOML file overriding cluster/kube/kube.toml")
        p.add_argument("--context", help="kube backend: the context (default: the current one)")
        p.add_argument("--kubeconfig", help="kube backend: the kubeconfig file (default: kubectl's)")
        if name == "down":
            p.add_argument("--run-id", required=True)
            p.add_argument("--stack-config", metavar="FILE", help="TOML file overriding cluster/local.toml")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.kube_config)
        if args.command == "down":
            config = load_config(args.stack_config)
            if args.backend == "kind":
                from harness.kube.kind import KindCluster

                cluster = KindCluster(config, settings, run_id=args.run_id)
            else:
                from harness.kube.kube import KubeCluster

                cluster = KubeCluster(config, settings, context=args.context, kubeconfig=args.kubeconfig,
                                      run_id=args.run_id)
            removed = cluster.down()
        elif args.backend == "kind":
            from harness.kube.kind import sweep_kind

            removed = sweep_kind(settings=settings)
        else:
            from harness.kube.kube import current_context, sweep_namespaces
            from harness.kube.tools import SubprocessRunner

            runner = SubprocessRunner()
            context = args.context or current_context(runner, args.kubeconfig)
            require_allowed(context, settings.allowed_contexts(), "sweep namespaces")
            removed = sweep_namespaces(runner, Kubectl(context, "default", args.kubeconfig), settings)
    except (ConfigError, KubeStackError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.UNKNOWN if isinstance(exc, ConfigError) else ExitCode.STACK
    print(f"removed {', '.join(removed) if removed else 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
