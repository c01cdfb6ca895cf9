"""The harness as a pytest plugin (entry point ``serve_chaos``): options and the shared stack fixture.

Options: ``--backend`` (local), ``--stack-config FILE``, ``--keep-stack`` (leave the stack up after the
session), ``--report-dir DIR``. The ``stack`` fixture brings the stack up once per session and tears it
down at the end, even after a failure or Ctrl-C.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

BACKENDS = ("local",)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("serve-chaos", "Ray Serve chaos harness")
    group.addoption("--backend", default="local", choices=BACKENDS, help="where the stack runs (default: local)")
    group.addoption("--stack-config", default=None, metavar="FILE", help="stack config overriding cluster/local.toml")
    group.addoption("--keep-stack", action="store_true", help="leave the stack up after the session")
    group.addoption("--report-dir", default="reports", metavar="DIR", help="where run reports go (default: reports)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "stack: needs the real local stack (root, namespaces, Ray, Redis)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="the local stack needs root (network and PID namespaces): run as root")
    for item in items:
        if "stack" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def stack_config(pytestconfig: pytest.Config):
    from harness.local.config import load_config

    return load_config(pytestconfig.getoption("--stack-config"))


@pytest.fixture(scope="session")
def report_dir(pytestconfig: pytest.Config) -> Path:
    path = Path(pytestconfig.getoption("--report-dir"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def stack(stack_config, pytestconfig: pytest.Config) -> Iterator:
    """A running local stack shared by the session's scenarios."""
    from harness.local.backend import LocalCluster

    cluster = LocalCluster(stack_config)
    try:
        cluster.up(progress=lambda msg: print(f"[stack {cluster.run_id}] {msg}", flush=True))
        yield cluster
    finally:
        if not pytestconfig.getoption("--keep-stack"):
            cluster.down()
