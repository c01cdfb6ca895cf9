"""The harness as a user installs it: `pip install` of this repository into a fresh virtual environment outside
the checkout, then a user's own repository (examples/user-repo: a pyproject with the plugin's settings, a stack
config, a budgets file, one guide scenario and one scenario of its own) runs its tests against the default app
on a real stack. Nothing of the checkout is on the path: the defaults come from the installed package's data."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from harness.stack.config import REPO_ROOT

pytestmark = pytest.mark.stack
USER_REPO = REPO_ROOT / "examples" / "user-repo"


CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}  # no checkout on the path


def fresh_venv(where: Path) -> Path:
    """A new venv whose only harness is the one pip installs into it. Its third-party dependencies (Ray, locust,
    ...) are this environment's, on the path through a .pth line: the .pth files of that folder (this
    checkout's editable install among them) are not run, so the checkout stays out of reach."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=120, env=CLEAN_ENV)
    python = where / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True, timeout=60, env=CLEAN_ENV).stdout.strip()
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(purelib) / "zz_dependencies.pth").write_text("\n".join(deps) + "\n")
    for script in ("ray", "serve"):  # the dependencies' console scripts, as their install would have put them
        source = Path(sys.executable).with_name(script)
        if source.exists():
            (where / "bin" / script).symlink_to(source)
    return python


LEFT_OUT = shutil.ignore_patterns(".git", ".venv", "reports", "build", "*.egg-info", "__pycache__", ".allure",
                                  ".hypothesis", ".pytest_cache", ".grimp_cache", ".import_linter_cache")


def test_a_users_repository_runs_the_harness_from_a_fresh_install(tmp_path):
    python = fresh_venv(tmp_path / "venv")
    source = tmp_path / "source"  # a copy: pip builds in the tree it installs, and the checkout stays clean
    shutil.copytree(REPO_ROOT, source, symlinks=True, ignore=LEFT_OUT)
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(source)],
                             capture_output=True, text=True, timeout=600, cwd=tmp_path, env=CLEAN_ENV)
    assert install.returncode == 0, install.stdout + install.stderr
    where = subprocess.run([str(python), "-c", "import harness, harness.stack.config as c; "
                                               "print(harness.__file__); print(c.DEFAULT_CONFIG)"],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path, env=CLEAN_ENV)
    assert where.returncode == 0, where.stderr
    module, default_config = where.stdout.split()
    assert not module.startswith(str(REPO_ROOT)) and "site-packages" in module, module
    assert Path(default_config).is_file() and "site-packages" in default_config, default_config
    script = tmp_path / "venv" / "bin" / "serve-chaos"
    version = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120, env=CLEAN_ENV)
    assert version.returncode == 0 and version.stdout.startswith("serve-chaos "), version.stdout + version.stderr

    repo = tmp_path / "user-repo"
    shutil.copytree(USER_REPO, repo)
    run = subprocess.run([str(python), "-m", "pytest", "-p", "no:cacheprovider", "-rA"], capture_output=True,
                         text=True, timeout=1200, cwd=repo, env=CLEAN_ENV)
    print(run.stdout[-4000:])
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "2 passed" in run.stdout, run.stdout[-2000:]
    assert list((repo / "reports").glob("2*/index.html")), "the user's report was not written"
    assert list((repo / "reports").glob("2*/test_proxy_restart/verdict.json"))
