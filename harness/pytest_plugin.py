"""The harness as a pytest plugin (entry point ``serve_chaos``): options and the shared stack fixture.

Options: ``--backend`` (local), ``--stack-config FILE``, ``--keep-stack`` (leave the stack up after the
session), ``--report-dir DIR``. The ``stack`` fixture brings the stack up once per session and tears it
down at the end, even after a failure or Ctrl-C.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

BACKENDS = ("local", "kind", "kube")
SECRETS = pytest.StashKey[list]()
STARTED = pytest.StashKey[float]()


def remember_secret(pytestconfig: pytest.Config, secret) -> None:
    """Secrets of every stack the session made: scrubbed from every test report before a reporter sees it, and
    from every file the session wrote under the report folder, the junit XML file and the Allure results."""
    pytestconfig.stash.setdefault(SECRETS, []).append(secret.reveal())


def session_secrets(config: pytest.Config) -> list[str]:
    return [s for s in config.stash.get(SECRETS, []) if s]


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Each test report with the session's secrets scrubbed (traceback, captured output and log), before the
    terminal, junitxml or allure sees it: trylast makes this the innermost wrapper, the first to get it."""
    report = yield
    if secrets := session_secrets(item.config):
        from harness.report.redact import scrub_test_report

        scrub_test_report(report, secrets)
    return report


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Last: what reporters wrote from raw exceptions (allure's messages) or at the session's end (junit XML),
    and any file written under the report folder during the session, scrubbed."""
    if not (secrets := session_secrets(config)):
        return
    from harness.report.redact import scrub_paths

    written = [config.getoption("--report-dir"), getattr(config.option, "xmlpath", None),
               getattr(config.option, "allure_report_dir", None)]
    started = config.stash.get(STARTED, None)
    scrub_paths([Path(p) for p in written if p], secrets,
                modified_since=started - 2.0 if started is not None else None)  # 2 s: coarse file times


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("serve-chaos", "Ray Serve chaos harness")
    group.addoption("--backend", default="local", choices=BACKENDS, help="where the stack runs (default: local)")
    group.addoption("--stack-config", default=None, metavar="FILE", help="stack config overriding cluster/local.toml")
    group.addoption("--keep-stack", action="store_true", help="leave the stack up after the session")
    group.addoption("--report-dir", default="reports", metavar="DIR", help="where run reports go (default: reports)")
    group.addoption("--budgets", default=None, metavar="FILE", help="scenario budgets (default: scenarios/budgets.toml)")
    group.addoption("--kube-config", default=None, metavar="FILE", help="kind/kube settings overriding cluster/kube/kube.toml")
    group.addoption("--kube-context", default=None, metavar="NAME", help="kube backend: the context (default: current)")
    group.addoption("--schedule-profile", default=None, metavar="NAME",
                    help="random schedules' profile: short or nightly "
                         "(default: $SERVE_CHAOS_SCHEDULE_PROFILE, else short)")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[STARTED] = time.time()
    config.addinivalue_line("markers", "stack: needs the real local stack (root, namespaces, Ray, Redis)")
    config.addinivalue_line("markers", "control: a scenario run against a stack whose property is broken; must fail")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0 or config.getoption("--backend") != "local":
        return
    skip = pytest.mark.skip(reason="the local stack needs root (network and PID namespaces): run as root")
    for item in items:
        if "stack" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def stack_config(pytestconfig: pytest.Config):
    from harness.stack.config import load_config

    return load_config(pytestconfig.getoption("--stack-config"))


@pytest.fixture(scope="session")
def report_dir(pytestconfig: pytest.Config, stack_config) -> Iterator[Path]:
    """This session's report folder: <report-dir>/<date>-<time>-<hex>/. At the end of the session every
    stack's secret is scrubbed from it and its index.html is written (reports/latest points at it)."""
    import secrets
    import time

    path = Path(pytestconfig.getoption("--report-dir")) / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    path.mkdir(parents=True, exist_ok=True)
    yield path
    from harness.report import scrub_tree, write_run_report

    if found := [s for s in pytestconfig.stash.get(SECRETS, []) if s]:
        scrub_tree(path, found)
    if any(path.iterdir()):
        progress_writer(pytestconfig)(f"report: {write_run_report(path, config=run_config(stack_config))}")


@pytest.fixture(autouse=True)
def _scenario_artefacts(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that wrote into the session's report folder: each scenario folder it wrote gets its
    timeline drawn (timeline.html) and its files attached to the Allure test. The report is drawn here, at the
    entry layer, so that the scenario runtime never imports the report."""
    from harness.records import (
        HISTORY,
        SCHEDULE,
        TIMELINE_ERROR,
        VERDICT,
        ScenarioFolder,
    )

    if "report_dir" not in request.fixturenames:
        yield
        return
    report_dir: Path = request.getfixturevalue("report_dir")

    def histories() -> dict[Path, int]:
        return {p: p.stat().st_mtime_ns for p in report_dir.glob(f"*/{HISTORY}")}

    before = histories()
    yield
    from harness.report import attach_timeline

    for history, mtime in sorted(histories().items()):
        if before.get(history) == mtime:
            continue  # another test's
        folder = ScenarioFolder(history.parent)
        try:
            attach_timeline(folder.path)
        except Exception as exc:  # noqa: BLE001 - a report problem must not hide the verdict
            folder.note_missing(TIMELINE_ERROR, f"could not render the timeline: {exc}")
        _allure_attach(folder.file(VERDICT), folder.file(HISTORY), folder.file(SCHEDULE))


def _allure_attach(*paths: Path) -> None:
    try:
        import allure
    except ImportError:  # allure-pytest is a dependency, but the harness runs without it
        return
    for path in paths:
        if path.is_file():
            kind = allure.attachment_type.JSON if path.suffix == ".json" else allure.attachment_type.TEXT
            allure.attach.file(str(path), name=path.name, attachment_type=kind)


def run_config(stack_config) -> dict:
    """The configuration shown in the report: the stack, the budgets, the versions. No secret is in it
    (the password is not part of the stack config; the report redacts secret-looking keys anyway)."""
    import tomllib

    import ray

    import harness
    from harness.records import DEFAULT_BUDGETS

    return {"stack": stack_config.model_dump(mode="json"),
            "budgets": tomllib.loads(DEFAULT_BUDGETS.read_text()),
            "versions": {"ray": ray.__version__, "harness": harness.__version__}}


@pytest.fixture(scope="session")
def stack(stack_config, pytestconfig: pytest.Config) -> Iterator:
    """A running local stack shared by the session's scenarios. A stack already up in the same state folder
    (``python -m harness up``, or a session run with ``--keep-stack``) is used as it is and left up;
    otherwise one is brought up, and torn down at the end unless ``--keep-stack``, even after a failure."""
    from harness.local.backend import LocalCluster, live_runs

    say = progress_writer(pytestconfig)
    backend = pytestconfig.getoption("--backend")
    if backend != "local":
        from harness.kube import make_cluster

        kube = make_cluster(backend, stack_config, kube_config=pytestconfig.getoption("--kube-config"),
                            context=pytestconfig.getoption("--kube-context"))
        remember_secret(pytestconfig, kube.secret)
        try:
            kube.up(progress=lambda msg: say(f"[{backend} {kube.run_id}] {msg}"))
            yield kube
        finally:
            if not pytestconfig.getoption("--keep-stack"):
                kube.down()
        return
    live = [rid for rid, folder in live_runs().items() if folder.parent == Path(stack_config.network.state_dir)]
    if live:
        cluster = LocalCluster.attach(stack_config.network.state_dir, live[0])
        remember_secret(pytestconfig, cluster.secret)
        say(f"[stack {cluster.run_id}] using the stack that is already up; it stays up")
        yield cluster
        return
    cluster = LocalCluster(stack_config)
    remember_secret(pytestconfig, cluster.secret)
    try:
        cluster.up(progress=lambda msg: say(f"[stack {cluster.run_id}] {msg}"))
        yield cluster
    finally:
        if pytestconfig.getoption("--keep-stack"):
            say(f"[stack {cluster.run_id}] left up (--keep-stack); remove it with `python -m harness down`")
        else:
            cluster.down()


def progress_writer(pytestconfig: pytest.Config):
    """One line per call on the terminal, live even while pytest captures output (quiet enough for CI logs)."""
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return lambda msg: print(msg, flush=True)

    def write(msg: str) -> None:
        with capture.global_and_fixture_disabled():  # past pytest's output capture, live
            reporter.ensure_newline()
            reporter.write_line(msg)
            reporter.flush()

    return write


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function):
    """A guide scenario that cannot apply to the app under test is skipped with the reason, never passed."""
    from harness.guide import NotApplicable

    try:
        return (yield)
    except NotApplicable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def scenario(request: pytest.FixtureRequest, report_dir: Path, pytestconfig: pytest.Config) -> Iterator:
    """Factory: ``scenario(cluster, name)`` gives a ScenarioRun whose folder is under the session's report
    folder, whose budget is [name] in the budgets file, on a stack checked healthy (restored if needed).
    Its cleanups (heal faults, stop traffic) run at teardown, even after a failure."""
    from harness.records import load_budget
    from harness.repair import restore
    from harness.scenario import ScenarioRun

    runs: list[ScenarioRun] = []

    def make(cluster, name: str, **kwargs) -> ScenarioRun:
        restore(cluster, progress_writer(pytestconfig))
        folder = report_dir / request.node.name.replace("/", "_").replace("[", "-").replace("]", "")
        run = ScenarioRun(name, cluster, folder, load_budget(name, pytestconfig.getoption("--budgets")),
                          allowed_networks=cluster.allowed_networks(), progress=progress_writer(pytestconfig),
                          **kwargs)
        runs.append(run)
        return run

    yield make
    errors = []
    for run in reversed(runs):
        try:
            run.close()
        except Exception as exc:  # noqa: BLE001 - every run's cleanup runs
            errors.append(str(exc))
    if errors:
        raise RuntimeError("; ".join(errors))


