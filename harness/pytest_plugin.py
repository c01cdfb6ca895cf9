"""The harness as a pytest plugin (entry point ``serve_chaos``): options and the shared stack fixture.

Options, each also settable in the ini file (``[tool.pytest.ini_options]`` of a pyproject.toml) under the name
in brackets; the command line wins, then the ini file, then the default:

    --serve-chaos-backend local|kind|kube     [serve_chaos_backend]
    --serve-chaos-stack-config FILE           [serve_chaos_stack_config]  a stack config over the shipped one
    --serve-chaos-budgets FILE                [serve_chaos_budgets]       scenario budgets
    --serve-chaos-report-dir DIR              [serve_chaos_report_dir]    where run reports go
    --serve-chaos-keep-stack                  [serve_chaos_keep_stack]    leave the stack up after the session
    --serve-chaos-replays N                   [serve_chaos_replays]       run a failed scenario N more times (2)

The old names (``--backend``, ``--stack-config``, ``--budgets``, ``--report-dir``, ``--keep-stack``) are kept as
aliases for one release. Fixtures: ``serve_chaos_stack`` (the stack, up once per session, torn down at the end
even after a failure or Ctrl-C), ``serve_chaos_stack_config``, ``serve_chaos_scenario`` (a factory of scenario
runs), ``serve_chaos_replay`` (a scenario run, and run again when it fails: ``assert_passed`` tells a failure
that came back from a flaky one, which warns and is reported, never passed silently), ``serve_chaos_report_dir``;
the old names ``stack``, ``stack_config``, ``scenario``, ``report_dir`` are
aliases. A test that uses the stack gets the ``stack`` marker by itself (and is skipped, with the reason, when
the local stack cannot run). A test module overrides the stack config or the budgets with module-level
``serve_chaos_stack_config = "path/to/stack.toml"`` / ``serve_chaos_budgets = "path/to/budgets.toml"`` (paths
relative to the module), or by overriding the fixture.
"""

from __future__ import annotations

import os
import time
import warnings
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

    written = [setting(config, "--serve-chaos-report-dir"), getattr(config.option, "xmlpath", None),
               getattr(config.option, "allure_report_dir", None)]
    started = config.stash.get(STARTED, None)
    scrub_paths([Path(p) for p in written if p], secrets,
                modified_since=started - 2.0 if started is not None else None)  # 2 s: coarse file times


# (option, its old alias, ini name, help, default); every option is also an ini setting
OPTIONS = (
    ("--serve-chaos-backend", "--backend", "where the stack runs: local, kind or kube (default: local)", "local"),
    ("--serve-chaos-stack-config", "--stack-config", "a stack config (TOML) over the shipped defaults", None),
    ("--serve-chaos-budgets", "--budgets", "scenario budgets (TOML; default: the shipped budgets.toml)", None),
    ("--serve-chaos-report-dir", "--report-dir", "where run reports go (default: reports)", "reports"),
)
KEEP_STACK = "--serve-chaos-keep-stack"
REPLAY_OPTION = "--serve-chaos-replays"
DEFAULT_REPLAYS = 2  # as the random schedules' short profile: a 1-in-10 outlier fails both replays 1% of the time
PATH_OPTIONS = ("--serve-chaos-stack-config", "--serve-chaos-budgets", "--serve-chaos-report-dir")


def _dest(option: str) -> str:
    return option.lstrip("-").replace("-", "_")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("serve-chaos", "Ray Serve chaos harness")
    for option, alias, text, default in OPTIONS:
        extra = {"choices": BACKENDS} if option == "--serve-chaos-backend" else {"metavar": "PATH"}
        group.addoption(option, alias, dest=_dest(option), default=None, help=f"{text} [ini: {_dest(option)}]",
                        **extra)
        parser.addini(_dest(option), text, default=default)
    group.addoption(KEEP_STACK, "--keep-stack", dest=_dest(KEEP_STACK), action="store_true", default=None,
                    help="leave the stack up after the session [ini: serve_chaos_keep_stack]")
    parser.addini(_dest(KEEP_STACK), "leave the stack up after the session", type="bool", default=False)
    group.addoption(REPLAY_OPTION, "--replays", dest=_dest(REPLAY_OPTION), type=int, default=None, metavar="N",
                    help="a scenario that fails is run N more times on the same stack: failed again = a failure, "
                         "passed every time = flaky (reported, with its figures, never a pass); 0 = no replay "
                         f"[ini: {_dest(REPLAY_OPTION)}; default {DEFAULT_REPLAYS}]")
    parser.addini(_dest(REPLAY_OPTION), "how many times a failed scenario is run again", default=str(DEFAULT_REPLAYS))
    group.addoption("--kube-config", default=None, metavar="FILE", help="kind/kube settings overriding cluster/kube/kube.toml")
    group.addoption("--kube-context", default=None, metavar="NAME", help="kube backend: the context (default: current)")
    group.addoption("--schedule-profile", default=None, metavar="NAME",
                    help="random schedules' profile: short or nightly "
                         "(default: $SERVE_CHAOS_SCHEDULE_PROFILE, else short)")


def setting(config: pytest.Config, option: str):
    """An option's value: the command line, else the ini file, else its default (``option`` as spelled on the
    command line, new or old name)."""
    names = {alias: new for new, alias, *_ in OPTIONS} | {"--keep-stack": KEEP_STACK, "--replays": REPLAY_OPTION}
    option = names.get(option, option)
    value = config.getoption(_dest(option))
    if value is None:
        value = config.getini(_dest(option))
        if value and option in PATH_OPTIONS and config.inipath is not None:  # relative to the ini file
            value = str((config.inipath.parent / value).resolve())
    return value


def module_setting(request: pytest.FixtureRequest, name: str, option: str) -> str | None:
    """A test module's own ``serve_chaos_<name>`` (a path relative to the module), else the session's."""
    module = getattr(request, "module", None)
    value = getattr(module, f"serve_chaos_{name}", None) if module is not None else None
    if value:
        return str((Path(module.__file__).parent / value).resolve())
    return setting(request.config, option) or None


def pytest_configure(config: pytest.Config) -> None:
    config.stash[STARTED] = time.time()
    config.addinivalue_line("markers", "stack: needs the real local stack (root, namespaces, Ray, Redis)")
    config.addinivalue_line("markers", "control: a scenario run against a stack whose property is broken; must fail")


STACK_FIXTURES = {"stack", "serve_chaos_stack"}


SHARED_NAMES = pytest.StashKey[set]()


def run_folder_name(node: pytest.Item) -> str:
    """A test's scenario folder: its name, prefixed with its module's when another module has a test of that
    name (so that no two tests share a folder)."""
    name = node.name.replace("/", "_").replace("[", "-").replace("]", "")
    if node.name in node.config.stash.get(SHARED_NAMES, set()):
        name = f"{Path(str(node.fspath)).stem}-{name}"
    return name


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that uses the stack gets the ``stack`` marker; without root the local stack cannot run, and such a
    test is skipped with that reason (never an error)."""
    modules: dict[str, set[str]] = {}
    for item in items:
        modules.setdefault(item.name, set()).add(str(item.fspath))
    config.stash[SHARED_NAMES] = {name for name, paths in modules.items() if len(paths) > 1}
    for item in items:
        if STACK_FIXTURES & set(getattr(item, "fixturenames", ())) and "stack" not in item.keywords:
            item.add_marker(pytest.mark.stack)
    if os.geteuid() == 0 or setting(config, "--serve-chaos-backend") != "local":
        return
    skip = pytest.mark.skip(reason="the local stack needs root (network and PID namespaces): run as root")
    for item in items:
        if "stack" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def serve_chaos_stack_config(pytestconfig: pytest.Config):
    """The stack configuration: the shipped defaults under the session's --serve-chaos-stack-config."""
    from harness.stack.config import load_config

    return load_config(setting(pytestconfig, "--serve-chaos-stack-config") or None)


@pytest.fixture(scope="session")
def stack_config(serve_chaos_stack_config):
    """Alias of ``serve_chaos_stack_config`` (kept for one release)."""
    return serve_chaos_stack_config


@pytest.fixture(scope="session")
def serve_chaos_report_dir(pytestconfig: pytest.Config, stack_config) -> Iterator[Path]:
    """This session's report folder: <report-dir>/<date>-<time>-<hex>/. At the end of the session every
    stack's secret is scrubbed from it and its index.html is written (reports/latest points at it)."""
    import secrets
    import time

    path = Path(setting(pytestconfig, "--serve-chaos-report-dir")) / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
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
def report_dir(serve_chaos_report_dir: Path) -> Path:
    """Alias of ``serve_chaos_report_dir`` (kept for one release)."""
    return serve_chaos_report_dir


@pytest.fixture(scope="session")
def serve_chaos_stack(serve_chaos_stack_config, pytestconfig: pytest.Config) -> Iterator:
    """A running local stack shared by the session's scenarios. A stack already up in the same state folder
    (``serve-chaos up``, or a session run with ``--serve-chaos-keep-stack``) is used as it is and left up,
    if its configuration is this session's (else a usage error names the keys that differ); otherwise one is
    brought up, and torn down at the end unless kept, even after a failure."""
    from harness.local.backend import LocalCluster, live_runs

    stack_config = serve_chaos_stack_config

    say = progress_writer(pytestconfig)
    backend = setting(pytestconfig, "--serve-chaos-backend")
    if backend != "local":
        from harness.kube import make_cluster

        kube = make_cluster(backend, stack_config, kube_config=pytestconfig.getoption("--kube-config"),
                            context=pytestconfig.getoption("--kube-context"))
        remember_secret(pytestconfig, kube.secret)
        try:
            kube.up(progress=lambda msg: say(f"[{backend} {kube.run_id}] {msg}"))
            yield kube
        finally:
            if not setting(pytestconfig, KEEP_STACK):
                kube.down()
        return
    live = [rid for rid, folder in live_runs().items() if folder.parent == Path(stack_config.network.state_dir)]
    if live:
        cluster = LocalCluster.attach(stack_config.network.state_dir, live[0])
        if differs := config_difference(cluster.config, stack_config):
            raise pytest.UsageError(
                f"a stack ({cluster.run_id}) is already up in {stack_config.network.state_dir} with another "
                f"configuration ({differs}); remove it (`serve-chaos down`) or give this session another "
                f"network.state_dir")
        remember_secret(pytestconfig, cluster.secret)
        say(f"[stack {cluster.run_id}] using the stack that is already up (same configuration); it stays up")
        yield cluster
        return
    yield from local_stack(stack_config, pytestconfig, "stack", keep=bool(setting(pytestconfig, KEEP_STACK)))


def config_difference(running, wanted) -> str:
    """Which keys of two stack configurations differ ("" when they are the same)."""
    a, b = running.model_dump(exclude={"base_dir"}), wanted.model_dump(exclude={"base_dir"})
    keys: list[str] = []
    for section in sorted(set(a) | set(b)):
        x, y = a.get(section), b.get(section)
        if isinstance(x, dict) and isinstance(y, dict):
            keys += [f"{section}.{k}" for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)]
        elif x != y:
            keys.append(section)
    return ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")


def local_stack(config, pytestconfig: pytest.Config, label: str, *, keep: bool = False) -> Iterator:
    """A local stack of ``config``, brought up and yielded, torn down afterwards even after a failure (unless
    ``keep``): what the session's stack uses, and what a module that runs its own stack (another app, a control)
    yields from its own fixture."""
    from harness.local.backend import LocalCluster

    say = progress_writer(pytestconfig)
    cluster = LocalCluster(config)
    remember_secret(pytestconfig, cluster.secret)
    try:
        cluster.up(progress=lambda msg: say(f"[{label} {cluster.run_id}] {msg}"))
        yield cluster
    finally:
        if keep:
            say(f"[{label} {cluster.run_id}] left up (--serve-chaos-keep-stack); remove it with "
                f"`serve-chaos down`")
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


@pytest.fixture(scope="session")
def stack(serve_chaos_stack):
    """Alias of ``serve_chaos_stack`` (kept for one release)."""
    return serve_chaos_stack


@pytest.fixture
def serve_chaos_scenario(request: pytest.FixtureRequest, report_dir: Path, pytestconfig: pytest.Config) -> Iterator:
    """Factory: ``scenario(cluster, name)`` gives a ScenarioRun whose folder is under the session's report
    folder, whose budget is [name] in the budgets file, on a stack checked healthy (restored if needed).
    Its cleanups (heal faults, stop traffic) run at teardown, even after a failure."""
    from harness.records import load_budget
    from harness.repair import restore
    from harness.scenario import ScenarioRun

    runs: list[ScenarioRun] = []

    def make(cluster, name: str, *, replay: int = 0, **kwargs) -> ScenarioRun:
        """``replay``: the how-manieth run again of a failed scenario (its folder is ``<test>-replay<N>``)."""
        restore(cluster, progress_writer(pytestconfig))
        folder = report_dir / (run_folder_name(request.node) + (f"-replay{replay}" if replay else ""))
        run = ScenarioRun(name, cluster, folder, load_budget(name, module_setting(request, "budgets", "--budgets")),
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




@pytest.fixture
def serve_chaos_replay(serve_chaos_scenario, request: pytest.FixtureRequest, pytestconfig: pytest.Config):
    """``replay(cluster, name, run_it, **kwargs)`` runs ``run_it(scenario(cluster, name, **kwargs))``; when the
    result is a failure (outcome FAILED: a scenario that should pass failed, or a known issue's scenario failed
    otherwise than the issue says; never an UNKNOWN or a control), it runs it again ``--serve-chaos-replays`` times (each in a
    folder of its own) and returns the ``Judged``; the failed run's folder gets ``replays.json``, which the report
    shows. ``assert_passed`` then passes it, fails it, or warns that it is flaky."""
    from harness.known_issues import Outcome
    from harness.records import Judged, ScenarioFolder

    def replay(cluster, name: str, run_it, **kwargs) -> Judged:
        run = serve_chaos_scenario(cluster, name, **kwargs)
        first = run_it(run)
        if first.outcome is not Outcome.FAILED:  # a pass, an UNKNOWN, a control, a known issue as it says
            return Judged(first)
        count = int(setting(pytestconfig, REPLAY_OPTION))
        say = progress_writer(pytestconfig)
        again, folders = [], []
        for n in range(1, count + 1):
            say(f"[{name}] failed: replay {n} of {count} on the same stack, to tell a flaky failure from a real one")
            replayed = serve_chaos_scenario(cluster, name, replay=n, **kwargs)
            again.append(run_it(replayed))
            folders.append(replayed.out_dir.name)
        judged = Judged(first, tuple(again), tuple(folders))
        if judged.replays is not None:
            ScenarioFolder(run.out_dir).write_replays(judged)
            say(f"[{name}] replays: {judged.replays.text()}")
            request.node.user_properties.append(("serve_chaos_replays", judged.replays.text()))  # JUnit
        return judged

    return replay


class FlakyVerdict(UserWarning):
    """A scenario failed and passed every replay: the failure is reported as found, not as a pass."""


def assert_passed(judged) -> None:
    """Pass a ``Judged`` that went as expected; fail one whose failure came back (or was never replayed, or could
    not be judged); a flaky one (failed, then passed every replay) warns with its figures instead."""
    if judged.passed:
        return
    assert judged.flaky, judged.explain()
    warnings.warn(FlakyVerdict(f"flaky: {judged.explain()}"), stacklevel=2)


def assert_known_issue(judged, check: str) -> None:
    """On a Ray version the issue was seen on, the scenario fails on exactly the check that shows the defect (a
    FAIL carrying the issue's figure), and passes every other: an UNKNOWN or another failure is not the known
    issue, and a pass is an unexpected pass (the defect may be fixed: drop the expectation). On another version
    it runs as a plain scenario and must pass. Another failure that no replay repeats is flaky (a warning)."""
    from harness.known_issues import Outcome
    from harness.verdict import Status, explain

    if judged.flaky:
        assert_passed(judged)
        return
    result = judged.first
    failed = sorted(v.name for v in result.verdict.parts if v.status is not Status.PASS)
    issue = result.known_issue
    assert issue is not None, f"{result.scenario} was run without a known issue to expect"
    if not issue.applies_to(result.ray_version):
        assert result.outcome is Outcome.PASSED, f"{result.scenario}: {result.known_issue_note}; {explain(result.verdict)}"
        return
    assert result.outcome is Outcome.EXPECTED_FAILURE and failed == [check], (
        f"{result.scenario}: {result.outcome}: expected to fail on {check} alone ({issue.label}), but failed on "
        f"{failed}: {explain(result.verdict)}" if failed else
        f"{result.scenario}: {check} passed: {result.known_issue_note}")


@pytest.fixture
def scenario(serve_chaos_scenario):
    """Alias of ``serve_chaos_scenario`` (kept for one release)."""
    return serve_chaos_scenario
