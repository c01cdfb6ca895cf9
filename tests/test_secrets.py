"""No stack password anywhere a pytest session writes: test reports (terminal, junit XML, Allure) and the files
under the report folder. Unit tests need nothing; the last test runs a real session against a real stack (root)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from test_kube_commands import api, kind_cluster, runner, settings  # noqa: F401 - fixtures

from harness.report.redact import scrub_paths, scrub_test_report
from harness.secrets import REDACTED, Secret

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "pw-" + "7Qx9" * 6  # what a generated one looks like; long enough to be found anywhere


def failing_report(message: str) -> pytest.TestReport:
    """A report as pytest makes it for a failed call: a real traceback (ExceptionChainRepr), captured output."""
    def leaky(password: str) -> None:
        raise AssertionError(message)

    with pytest.raises(AssertionError) as excinfo:
        leaky(PASSWORD)
    return pytest.TestReport("t.py::test_x", ("t.py", 1, "test_x"), {}, "failed", excinfo.getrepr(showlocals=True,
                             funcargs=True), "call", sections=[("Captured stdout call", f"password={PASSWORD}\n"),
                                                               ("Captured log call", f"INFO x: {PASSWORD}")],
                             user_properties=[("redis", f"redis://:{PASSWORD}@10.0.0.2")])


def all_text(report: pytest.TestReport) -> str:
    return "\n".join([report.longreprtext, str(report.longrepr), repr(report.sections), repr(report.user_properties),
                      getattr(report.longrepr, "reprcrash", None).message if getattr(report.longrepr, "reprcrash",
                                                                                      None) else ""])


def test_a_failed_report_is_scrubbed_everywhere_and_keeps_its_structure():
    report = failing_report(f"redis said: WRONGPASS for {PASSWORD}")
    assert PASSWORD in all_text(report)  # the report really held it: this test can fail

    assert scrub_test_report(report, [PASSWORD]) is True
    text = all_text(report)
    assert PASSWORD not in text
    assert report.longrepr.reprcrash.message == f"AssertionError: redis said: WRONGPASS for {REDACTED}"  # the crash line stays
    assert f"password = '{REDACTED}'" in report.longreprtext  # the traceback's arguments and locals
    assert hasattr(report.longrepr, "toterminal") and hasattr(report.longrepr, "chain")  # still pytest's repr
    assert report.capstdout == f"password={REDACTED}\n"
    assert report.caplog == f"INFO x: {REDACTED}"
    assert report.user_properties == [("redis", f"redis://:{REDACTED}@10.0.0.2")]


def test_a_report_without_a_secret_is_left_as_it_was():
    report = failing_report("nothing secret here")
    report.sections, report.user_properties = [("Captured stdout call", "hello\n")], []
    longrepr = report.longrepr
    assert scrub_test_report(report, [PASSWORD[::-1], ""]) is False
    assert report.longrepr is longrepr and report.sections == [("Captured stdout call", "hello\n")]
    assert scrub_test_report(report, []) is False


@pytest.mark.parametrize("longrepr", [
    f"a plain text longrepr with {PASSWORD}",
    ("t.py", 3, f"Skipped: Redis at redis://:{PASSWORD}@x is down"),
])
def test_text_and_skip_longreprs_are_scrubbed_in_their_own_form(longrepr):
    report = pytest.TestReport("t.py::test_x", ("t.py", 1, "test_x"), {}, "skipped", longrepr, "call")
    assert scrub_test_report(report, [PASSWORD])
    assert type(report.longrepr) is type(longrepr)
    assert PASSWORD not in str(report.longrepr) and REDACTED in str(report.longrepr)


def test_scrub_paths_takes_files_and_folders_and_only_what_was_written_since(tmp_path):
    old, new, junit = tmp_path / "reports" / "old.txt", tmp_path / "reports" / "run" / "new.txt", tmp_path / "j.xml"
    for path in (old, new, junit):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"x {PASSWORD} y")
    os.utime(old, (1_000_000_000, 1_000_000_000))  # written long before the session
    result = scrub_paths([tmp_path / "reports", junit, tmp_path / "absent"], [PASSWORD], modified_since=time.time() - 60)
    assert sorted(result.scrubbed) == sorted([new, junit])
    assert new.read_text() == junit.read_text() == f"x {REDACTED} y"
    assert PASSWORD in old.read_text()


def test_a_kube_driver_that_times_out_is_scrubbed(settings, runner, api):  # noqa: F811 - the kube tests' fixtures
    """The kube backend's driver: a timed-out exec (what ClientApi.exec returns on a timeout: rc -1, the output
    so far) reaches the caller with the stack's password scrubbed."""
    pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")
    api.exec_answer = lambda pod, container, argv: (-1, f"driver: {PASSWORD}\n",
                                                    f"err: {PASSWORD}\nexec timed out after 15s")
    cluster = kind_cluster(settings, runner, api, secret=Secret(PASSWORD))
    cluster.use_agent = False  # the one-shot exec (the agent's answers: tests/test_kube_agent.py)
    result = cluster.run_driver("print('x')", timeout_s=15)
    assert (result.returncode, result.stdout, result.stderr) == (
        -1, f"driver: {REDACTED}\n", f"err: {REDACTED}\nexec timed out after 15s")


INNER_TEST = '''
import logging, os, sys
from pathlib import Path
import pytest
from harness.pytest_plugin import remember_secret
from harness.secrets import Secret

PASSWORD = {password!r}

@pytest.fixture(scope="module")
def password(pytestconfig, request):
{obtain}

def test_leaks_it_everywhere(password, pytestconfig, record_property):
    print(f"stdout: the redis password is {{password}}")
    sys.stderr.write(f"stderr: requirepass {{password}}\\n")
    logging.getLogger("inner").warning("log: AUTH %s", password)
    record_property("redis_url", f"redis://:{{password}}@10.0.0.2:6379")
    reports = Path(pytestconfig.getoption("--report-dir"))
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "notes.txt").write_text(f"file: {{password}}")
    assert password == "not it", f"assertion: {{password}}"

def test_skips_with_it(password):
    pytest.skip(f"skip reason: {{password}}")
'''


def run_session(tmp_path: Path, obtain: str, password: str, *extra: str, timeout: float = 120,
                env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], list[Path]]:
    """A pytest session of INNER_TEST (``obtain``: the body of its ``password`` fixture) with --junitxml,
    --alluredir and --report-dir under tmp_path; its output and every file it wrote there."""
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "test_inner.py").write_text(INNER_TEST.format(password=password,
                                                           obtain=textwrap.indent(textwrap.dedent(obtain), "    ")))
    out = tmp_path / "out"
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-o", "log_level=INFO", "-o", "junit_logging=all",
         f"--junitxml={out / 'junit.xml'}", f"--alluredir={out / 'allure-results'}",
         f"--report-dir={out / 'reports'}", *extra, str(inner / "test_inner.py")],
        capture_output=True, text=True, timeout=timeout, cwd=inner, env=env)
    return res, sorted(p for p in out.rglob("*") if p.is_file())


def assert_nowhere(password: str, res: subprocess.CompletedProcess[str], files: list[Path]) -> None:
    console = res.stdout + res.stderr
    # the session really printed it, and it was redacted where it was: this check can fail
    for where in ("stdout: the redis password is ***", "stderr: requirepass ***", "log: AUTH ***",
                  "assertion: ***", "skip reason: ***"):
        assert where in console, f"{where!r} not on the console:\n{console[-3000:]}"
    assert password not in console, console[-3000:]
    names = {p.name for p in files}
    assert {"junit.xml", "notes.txt"} <= names and any(n.endswith("-result.json") for n in names), names
    leaking = [str(p) for p in files if password.encode() in p.read_bytes()]
    assert leaking == [], f"the password is in {leaking}"
    junit = next(p for p in files if p.name == "junit.xml").read_text()
    assert "assertion: ***" in junit and "stdout: the redis password is ***" in junit, junit[-2000:]
    assert "file: ***" == next(p for p in files if p.name == "notes.txt").read_text()


REMEMBERED = """\
    remember_secret(pytestconfig, Secret(PASSWORD))  # what the stack fixture does with a stack's secret
    return PASSWORD
"""


def test_a_session_that_leaks_a_remembered_secret_writes_it_nowhere(tmp_path):
    """What a session remembered is scrubbed from the console, the junit XML file, the Allure results (whose
    messages come from the raw exception) and the files written under the report folder."""
    res, files = run_session(tmp_path, REMEMBERED, PASSWORD)
    assert res.returncode == 1 and "1 failed, 1 skipped" in res.stdout, res.stdout[-3000:] + res.stderr
    assert_nowhere(PASSWORD, res, files)


def test_a_secret_the_session_never_remembered_is_not_hidden(tmp_path):
    """The control: without remember_secret the same session shows the password, so the check above can fail."""
    res, files = run_session(tmp_path, "return PASSWORD", PASSWORD)
    assert res.returncode == 1 and "1 failed, 1 skipped" in res.stdout, res.stdout[-3000:] + res.stderr
    assert PASSWORD in res.stdout
    for written in ("junit.xml", "-result.json", "notes.txt"):
        assert any(PASSWORD.encode() in p.read_bytes() for p in files if p.name.endswith(written)), written


# --- against a real stack ------------------------------------------------------------------------------

STACK_TOML = """
[network]
subnet = "10.213.11.0/24"  # beside the shared stack's (10.213.7.0/24) and the controls' (.8, .9)
state_dir = "{state_dir}"
"""

FROM_THE_STACK = """\
    stack = request.getfixturevalue("stack")
    driver = ("import os, sys, time\\n"
              "print('driver: ' + os.environ['SERVE_CHAOS_REDIS_PASSWORD'], flush=True)\\n"
              "sys.stderr.write('driver err: ' + os.environ['SERVE_CHAOS_REDIS_PASSWORD'] + '\\\\n')\\n"
              "sys.stderr.flush()\\n"
              "time.sleep(600)\\n")
    result = stack.run_driver(driver, timeout_s=15)  # prints the password, then times out
    print("driver result:", result.returncode, result.stdout.strip(), "|", result.stderr.strip())
    assert result.returncode == -1 and "driver: ***" in result.stdout and "driver err: ***" in result.stderr, result
    assert stack.secret.reveal() not in result.stdout + result.stderr, "run_driver leaked the password"
    assert stack.secret.reveal() == os.environ["SERVE_CHAOS_REDIS_PASSWORD"]
    return stack.secret.reveal()
"""


@pytest.mark.stack
def test_a_real_session_on_a_real_stack_leaves_its_password_in_no_report_and_no_console(tmp_path):
    """A real pytest session uses the `stack` fixture (one stack up and down), reads the stack's password,
    runs a driver that prints it and times out, prints, logs and asserts with it: the password is in no
    file under the report folder, nor the junit XML file, the Allure results, the console output."""
    password = Secret.generate().reveal()
    state_dir = Path(tempfile.mkdtemp(prefix="sct-", dir="/tmp"))  # short: Ray's socket paths
    config = tmp_path / "stack.toml"
    config.write_text(STACK_TOML.format(state_dir=state_dir))
    try:
        res, files = run_session(tmp_path, FROM_THE_STACK, password, f"--stack-config={config}", timeout=600,
                                 env={**os.environ, "SERVE_CHAOS_REDIS_PASSWORD": password})
    finally:
        down = subprocess.run([sys.executable, "-m", "harness", "down", "--stack-config", str(config)], cwd=REPO,
                              capture_output=True, text=True, timeout=300)
        shutil.rmtree(state_dir, ignore_errors=True)
    assert down.returncode == 0, down.stdout + down.stderr
    run_id = re.search(r"\[stack (sc[0-9a-f]{6})\] ", res.stdout)
    assert run_id, f"the session brought no stack up:\n{res.stdout[-5000:]}{res.stderr[-3000:]}"
    assert run_id.group(1) not in down.stdout, f"the session left its stack up: {down.stdout}"
    assert res.returncode == 1 and "1 failed, 1 skipped" in res.stdout, res.stdout[-5000:] + res.stderr[-3000:]
    assert "driver result: -1 driver: *** | driver timed out after 15s" in res.stdout, res.stdout[-5000:]
    assert_nowhere(password, res, files)
