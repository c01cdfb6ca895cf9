"""One virtual environment per Ray version, built from PyPI by the harness and cached: what a matrix cell with
``ray=<version>`` runs (its Python runs pytest, and the local backend's nodes run its ``ray``).

    env = ensure_ray_env("2.59.0", progress=print)   # <cache>/ray-2.59.0, built once, reused after
    env.python                                        # <cache>/ray-2.59.0/bin/python

The cache is ``$SERVE_CHAOS_VENV_CACHE``, else ``~/.cache/serve-chaos/venvs``. The version this interpreter
already runs needs no environment: it is this interpreter.

What goes in: ``ray[serve]==<version>`` and the project's other dependencies (pyproject.toml's list) at the
versions requirements.lock pins, with the lock's ``ray`` line replaced by the version asked for; then this
checkout, editable and with ``--no-deps``. Why ``--no-deps``: pyproject.toml asks for ``ray>=2.60.0,<2.61``
(the version the known issues and budgets were measured on), so pip would refuse the project beside any
other Ray; its dependencies are already in, and the checkout's code is the code every cell runs.

An environment is complete only when its stamp (``serve-chaos-venv.json``) says so, for the same inputs (the
Ray version, the Python version, pyproject.toml's dependencies and the lock): a build cut short, or one made
from other inputs, is removed and built again. One build per version at a time (a lock file beside it).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from harness.waiting import WaitTimeout, wait_until

REPO = Path(__file__).resolve().parents[1]
CACHE_ENV = "SERVE_CHAOS_VENV_CACHE"
DEFAULT_CACHE = Path("~/.cache/serve-chaos/venvs")
STAMP = "serve-chaos-venv.json"
CONSTRAINTS = "serve-chaos-constraints.txt"  # kept in the venv: what it was built from, to read
VERSION = re.compile(r"^\d+\.\d+\.\d+([.+-]?[0-9A-Za-z.]+)?$")  # as PyPI and ray.__version__ spell Ray's
CHECK = "import ray, harness; print(ray.__version__)"  # the environment imports both, and runs this Ray
STEP_TIMEOUT_S = 1800.0  # one pip step: Ray's wheel is ~70 MB, its dependencies a few hundred more
LOCK_WAIT_S = 2 * 3 * STEP_TIMEOUT_S  # another process building the same version: its whole build, twice


class VenvError(RuntimeError):
    """A Ray version's environment that could not be built or does not work; the message says which step."""


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    output: str  # stdout and stderr together


class Runner(Protocol):
    """Runs one command to its end (the tests pass a fake that records the command lines)."""

    def __call__(self, argv: Sequence[str], *, timeout_s: float) -> CommandResult: ...


def run_command(argv: Sequence[str], *, timeout_s: float) -> CommandResult:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, cwd=REPO)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return CommandResult(-1, f"{out}\ntimed out after {timeout_s:.0f} s")
    except OSError as exc:
        return CommandResult(-1, f"could not run {argv[0]}: {exc}")
    return CommandResult(proc.returncode, proc.stdout + proc.stderr)


@dataclass(frozen=True)
class RayEnv:
    """The interpreter a cell runs for its Ray version, and how it came to be."""

    version: str
    python: Path
    source: str  # "this interpreter" | "cached" | "built"
    seconds: float = 0.0  # how long the build took (for "cached": the recorded build's)
    path: Path | None = None  # the venv (None: this interpreter's own)


@dataclass(frozen=True)
class Stamp:
    """What a complete environment was built from (``serve-chaos-venv.json``)."""

    ray: str
    python: str
    inputs: str  # sha256 of what was installed: the requirements and the constraints
    built_at: str
    seconds: float


@dataclass(frozen=True)
class BuildPlan:
    """Everything a build runs, worked out before anything runs."""

    version: str
    venv: Path
    requirements: tuple[str, ...]
    constraints: str  # the constraints file's text
    inputs: str  # its digest, for the stamp

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def constraints_file(self) -> Path:
        return self.venv / CONSTRAINTS

    def commands(self, base_python: str, repo: Path) -> tuple[tuple[str, ...], ...]:
        py = str(self.python)
        return (
            (base_python, "-m", "venv", str(self.venv)),
            (py, "-m", "pip", "install", "-q", "--upgrade", "pip"),
            (py, "-m", "pip", "install", "-q", "-c", str(self.constraints_file), *self.requirements),
            (py, "-m", "pip", "install", "-q", "--no-deps", "-e", str(repo)),
            (py, "-c", CHECK),
        )


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def current_ray_version() -> str:
    try:
        return importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        return ""


def check_version(version: str) -> str:
    if not VERSION.match(version):
        raise VenvError(f"ray version {version!r}: expected a release as PyPI names it, such as 2.59.0")
    return version


def _requirement_name(line: str) -> str:
    return re.split(r"[\s\[<>=!~;]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")


def plan_build(version: str, cache: Path, pyproject_text: str, lock_text: str) -> BuildPlan:
    """The requirements (pyproject.toml's dependencies, Ray's replaced by ``ray[serve]==version``) and the
    constraints (requirements.lock, its ``ray`` line replaced) of ``version``'s environment."""
    check_version(version)
    deps = tomllib.loads(pyproject_text)["project"]["dependencies"]
    if not any(_requirement_name(d) == "ray" for d in deps):
        raise VenvError("pyproject.toml's dependencies name no ray requirement to replace")
    requirements = tuple(f"ray[serve]=={version}" if _requirement_name(d) == "ray" else d for d in deps)
    lines = [line.strip() for line in lock_text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    constraints = [f"ray=={version}" if _requirement_name(line) == "ray" else line for line in lines]
    if f"ray=={version}" not in constraints:
        constraints.insert(0, f"ray=={version}")
    text = ("# requirements.lock with its ray line replaced: what this environment was built with\n"
            + "\n".join(constraints) + "\n")
    inputs = hashlib.sha256(json.dumps([version, platform.python_version(), requirements, text]).encode()).hexdigest()
    return BuildPlan(version, cache / f"ray-{version}", requirements, text, inputs)


def read_stamp(venv: Path) -> Stamp | None:
    try:
        obj = json.loads((venv / STAMP).read_text())
        return Stamp(str(obj["ray"]), str(obj["python"]), str(obj["inputs"]), str(obj["built_at"]),
                     float(obj["seconds"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no stamp, or a damaged one: not complete


def stamp_is_current(plan: BuildPlan) -> bool:
    stamp = read_stamp(plan.venv)
    return (stamp is not None and stamp.ray == plan.version and stamp.inputs == plan.inputs
            and plan.python.exists())


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def build(plan: BuildPlan, *, runner: Runner = run_command, base_python: str = sys.executable, repo: Path = REPO,
          progress: Callable[[str], None] = lambda _: None) -> RayEnv:
    """Build ``plan``'s environment from nothing (whatever was there is removed first) and stamp it."""
    def say(msg: str) -> None:
        progress(f"[venv ray-{plan.version}] {msg}")

    started = time.monotonic()
    if plan.venv.exists():
        say(f"removing an incomplete or outdated environment at {plan.venv}")
        shutil.rmtree(plan.venv)
    plan.venv.parent.mkdir(parents=True, exist_ok=True)
    steps = plan.commands(base_python, repo)
    labels = ("creating the venv", "upgrading pip",
              f"installing ray[serve]=={plan.version} and the harness's dependencies (requirements.lock's versions)",
              "installing this checkout (editable, --no-deps: pyproject.toml's Ray range is 2.60's)",
              "checking that it imports ray and harness")
    for i, (label, argv) in enumerate(zip(labels, steps, strict=True)):
        say(f"{label} ({time.monotonic() - started:.0f} s)")
        if i == 1:  # the venv exists from here on: the constraints go in it, beside what they built
            plan.constraints_file.write_text(plan.constraints)
        result = runner(argv, timeout_s=STEP_TIMEOUT_S)
        if result.returncode != 0:
            raise VenvError(f"ray {plan.version}: {label} failed (exit {result.returncode}): "
                            f"{' '.join(argv)}\n{_tail(result.output)}")
        if argv[-1] == CHECK and result.output.strip().splitlines()[-1:] != [plan.version]:
            raise VenvError(f"ray {plan.version}: the environment runs Ray {_tail(result.output, 1)!r}, "
                            f"not {plan.version}")
    seconds = time.monotonic() - started
    stamp = Stamp(plan.version, platform.python_version(), plan.inputs, time.strftime("%Y-%m-%dT%H:%M:%S%z"), seconds)
    (plan.venv / STAMP).write_text(json.dumps(asdict(stamp), indent=2) + "\n")
    say(f"built in {seconds:.0f} s: {plan.python}")
    return RayEnv(plan.version, plan.python, "built", seconds, plan.venv)


def _locked(path: Path) -> int:
    """An exclusive lock on ``path`` (another build of the same version waits for it, within a deadline)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    def take() -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    try:
        wait_until(f"the build lock {path} (another process builds this version)", take, timeout_s=LOCK_WAIT_S,
                   interval_s=2.0)
    except WaitTimeout:
        os.close(fd)
        raise
    return fd


def planned_env(version: str, *, cache: Path | None = None, repo: Path = REPO, installed: str | None = None) -> str:
    """What ``ensure_ray_env`` would use for ``version``, in words, without building anything (the dry run)."""
    check_version(version)
    if version == (current_ray_version() if installed is None else installed):
        return f"{sys.executable} (this interpreter: Ray {version})"
    plan = plan_build(version, cache or cache_dir(), (repo / "pyproject.toml").read_text(),
                      (repo / "requirements.lock").read_text())
    if stamp_is_current(plan):
        stamp = read_stamp(plan.venv)
        return f"{plan.python} (cached, built {stamp.built_at if stamp else '?'})"
    # measured: Ray 2.59.0's took 48 s and 558 MB here (2026-12-02)
    return f"{plan.python} (to build from PyPI: ray[serve]=={version}; about a minute and 560 MB)"


def ensure_ray_env(version: str, *, cache: Path | None = None, runner: Runner = run_command,
                   base_python: str = sys.executable, repo: Path = REPO,
                   progress: Callable[[str], None] = lambda _: None, installed: str | None = None) -> RayEnv:
    """The environment that runs Ray ``version``: this interpreter when it runs that version, else the cached
    venv when its stamp is current, else one built now. A VenvError says which step failed and how."""
    check_version(version)
    if version == (current_ray_version() if installed is None else installed):
        return RayEnv(version, Path(sys.executable), "this interpreter")
    cache = cache or cache_dir()
    plan = plan_build(version, cache, (repo / "pyproject.toml").read_text(), (repo / "requirements.lock").read_text())
    if stamp_is_current(plan):
        stamp = read_stamp(plan.venv)
        progress(f"[venv ray-{version}] reusing {plan.venv} (built {stamp.built_at if stamp else '?'})")
        return RayEnv(version, plan.python, "cached", stamp.seconds if stamp else 0.0, plan.venv)
    try:
        fd = _locked(cache / f"ray-{version}.lock")
    except WaitTimeout as exc:
        raise VenvError(f"ray {version}: {exc}") from None
    try:
        if stamp_is_current(plan):  # built by the process that held the lock
            return RayEnv(version, plan.python, "cached", 0.0, plan.venv)
        return build(plan, runner=runner, base_python=base_python, repo=repo, progress=progress)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
