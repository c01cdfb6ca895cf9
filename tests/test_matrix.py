"""The matrix without a stack: axis parsing (examples and properties), what each choice sets in a cell's stack
config, the Ray-version venv builder (its command lines and stamp, with a fake runner), cell isolation (a cell
that fails, cannot start, times out or raises does not stop the others; every cell's teardown runs), the grid from
run folders written the way scenarios write them, the page in headless Chromium, and the command line."""

from __future__ import annotations

import ipaddress
import itertools
import json
import math
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_report_support import write_scenario

from harness import matrix_cli
from harness.cli import main
from harness.known_issues import KnownIssue, Outcome
from harness.matrix import (
    CELL_CONFIG,
    DEFAULT_SUBNET_POOL,
    MATRIX_FILE,
    Axis,
    AxisError,
    CellPlan,
    CellRun,
    CellStatus,
    MatrixCell,
    MatrixRecord,
    backend_problem,
    budget_changes,
    budgets_of,
    cell_config,
    config_toml,
    find_cell,
    kube_image,
    parse_axes,
    parse_axis,
    parse_budgets_for,
    plan_cell,
    plan_cells,
    product,
    read_record,
    to_toml,
    write_cell_config,
    write_record,
)
from harness.matrix_run import (
    CellNotRunnable,
    CellSetup,
    RunEnd,
    SubprocessCells,
    Teardown,
    run_cell_process,
    run_matrix,
)
from harness.records import DEFAULT_BUDGETS
from harness.report.matrix import build_grid
from harness.report.render import write_matrix_report
from harness.stack.config import ConfigError, load_config
from harness.venvs import (
    CHECK,
    CommandResult,
    RayEnv,
    VenvError,
    ensure_ray_env,
    plan_build,
    planned_env,
    read_stamp,
)

ROOT = Path(__file__).resolve().parents[1]
CONTROLS = ROOT / "cluster" / "controls"


# --- axes -------------------------------------------------------------------------------------------------------

def test_an_axis_is_a_name_and_its_values_and_cells_are_named_by_their_choices():
    axes = parse_axes(["ray=2.60.0,2.59.0", "gcs=redis,rocksdb,none", "ingress=proxy,haproxy"])
    assert axes[0] == Axis("ray", ("2.60.0", "2.59.0"))
    cells = product(axes)
    assert len(cells) == 12
    assert cells[0].id == "ray-2.60.0_gcs-redis_ingress-proxy"  # the first value of every axis: the default baseline
    assert cells[1].id == "ray-2.60.0_gcs-redis_ingress-haproxy"  # the last axis varies fastest
    assert cells[-1].id == "ray-2.59.0_gcs-none_ingress-haproxy"
    assert cells[-1].label == "ray 2.59.0 · gcs none · ingress haproxy"
    assert cells[-1].differs_from(cells[0]) == ("ray", "gcs", "ingress")
    env = parse_axis("RAY_gcs_rpc_server_reconnect_timeout_s=60,30")
    assert [c.id for c in product([env])] == ["RAY-gcs-rpc-server-reconnect-timeout-s-60",
                                              "RAY-gcs-rpc-server-reconnect-timeout-s-30"]
    assert parse_axis(" workers.count = 1, 2 ") == Axis("workers.count", ("1", "2"))


@pytest.mark.parametrize(("specs", "message"), [
    ([], "give at least one --axis"),
    (["ray"], "expected NAME=VALUE"),
    (["=2.60.0"], "no axis name"),
    (["ray="], "axis ray: no values"),
    (["ray=2.60.0,,2.59.0"], "an empty value"),
    (["ray=latest"], "'latest' is not a Ray release"),
    (["gcs=etcd"], r"axis gcs: unknown value 'etcd' \(choose from redis, rocksdb, none\)"),
    (["ingress=nginx"], r"unknown value 'nginx' \(choose from proxy, haproxy\)"),
    (["ray=2.60.0", "ray=2.59.0"], "axis ray given 2 times"),
    (["ray=2.60.0,2.60.0"], "value '2.60.0' twice"),
    (["X=a_b,a-b"], "the same cell id part"),
    (["ingres=proxy"], "axis 'ingres': not an axis"),
    (["foo-bar=1"], "not an axis"),
    (["workers.cont=1"], r"no key 'cont' in workers \(keys: cpus, object_store_mb"),
    (["app.traffic=1"], "app.traffic is a table, not a key"),
    (["head.env=1"], "the matrix sets this key itself"),
    (["network.subnet=10.1.0.0/24"], "the matrix sets this key itself"),
    (["redis.enabled=true"], "use the gcs axis"),
    (["resources.worker1=1"], "resources is a key, not a section"),
    (["ingress=proxy", "RAY_SERVE_ENABLE_HA_PROXY=1"], "the ingress axis sets it"),
    (["gcs=rocksdb", "RAY_gcs_storage=memory"], "the gcs axis sets it"),
])
def test_a_bad_axis_is_an_error_that_says_what_was_expected(specs, message):
    with pytest.raises(AxisError, match=message):
        parse_axes(specs)


def test_the_baseline_is_found_by_id_or_by_choices():
    cells = product(parse_axes(["ray=2.60.0,2.59.0", "ingress=proxy,haproxy"]))
    assert find_cell(cells, "ray-2.59.0_ingress-proxy") == cells[2]
    assert find_cell(cells, "ray=2.59.0,ingress=haproxy") == cells[3]
    with pytest.raises(AxisError, match="picks 2 cells"):
        find_cell(cells, "ray=2.59.0")
    with pytest.raises(AxisError, match=r"no such cell \(cells: ray-2.60.0_ingress-proxy, "):
        find_cell(cells, "ray-2.58.0_ingress-proxy")


ENV_NAMES = st.from_regex(r"[A-Z][A-Z0-9_]{0,8}[A-Z0-9]", fullmatch=True)
STACK_KEYS = ("workers.count", "app.num_replicas", "operator.period_s", "timeouts.deploy_s")


def _values(alphabet: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    return st.lists(alphabet, min_size=1, max_size=3, unique_by=lambda v: re.sub(r"[^A-Za-z0-9.]+", "-", v))


@st.composite
def axes_lists(draw) -> list[Axis]:
    axes = []
    if draw(st.booleans()):
        axes.append(Axis("ray", tuple(draw(_values(st.sampled_from(["2.60.0", "2.59.0", "2.58.1", "2.55.0"]))))))
    if draw(st.booleans()):
        axes.append(Axis("gcs", tuple(draw(_values(st.sampled_from(["redis", "rocksdb", "none"]))))))
    if draw(st.booleans()):
        axes.append(Axis("ingress", tuple(draw(_values(st.sampled_from(["proxy", "haproxy"]))))))
    names = draw(st.lists(ENV_NAMES, max_size=2, unique_by=lambda n: re.sub(r"[^A-Za-z0-9.]+", "-", n)))
    for name in names:
        axes.append(Axis(name, tuple(draw(_values(st.from_regex(r"[a-z0-9][a-z0-9_.]{0,4}", fullmatch=True))))))
    for key in draw(st.lists(st.sampled_from(STACK_KEYS), max_size=1, unique=True)):
        axes.append(Axis(key, tuple(draw(_values(st.sampled_from(["1", "2", "3.5", "7"]))))))
    if not axes:
        axes.append(Axis("ray", ("2.60.0",)))
    return draw(st.permutations(axes))


@settings(max_examples=200, deadline=None)
@given(axes_lists())
def test_the_cells_are_the_product_their_ids_unique_and_stable_and_the_axes_round_trip(axes):
    specs = [a.spec for a in axes]
    parsed = parse_axes(specs)
    assert parsed == tuple(axes)  # round trip: the spec of an axis parses back to it
    cells = product(parsed)
    assert len(cells) == math.prod(len(a.values) for a in axes)
    ids = [c.id for c in cells]
    assert len(set(ids)) == len(ids)  # unique
    assert ids == [c.id for c in product(parse_axes(specs))]  # stable
    for cell in cells:
        assert [c.axis for c in cell.choices] == [a.name for a in axes]
        assert all(cell.value(a.name) in a.values for a in axes)
        assert len(cell.id.split("_")) == len(axes)  # "_" only separates choices
        assert re.fullmatch(r"[A-Za-z0-9.\-_]+", cell.id)
        assert find_cell(cells, cell.id) == cell
    assert {c.choices for c in cells} == set(itertools.product(*(a.choices() for a in axes)))


# --- what a cell's choices set -------------------------------------------------------------------------------------

def plans_of(specs: list[str], folder: Path = Path("/tmp/reports/m")) -> tuple[CellPlan, ...]:
    return plan_cells(product(parse_axes(specs)), folder)


def env_of(config, group: str) -> dict[str, str]:
    return dict(getattr(config, group).env)


def test_every_cell_has_its_own_subnet_and_state_folder_away_from_the_other_stacks():
    plans = plans_of(["ray=2.60.0,2.59.0", "gcs=redis,rocksdb,none", "ingress=proxy,haproxy"])
    configs = [cell_config(p, None) for p in plans]
    subnets = [ipaddress.ip_network(c.network.subnet) for c in configs]
    assert all(not a.overlaps(b) for i, a in enumerate(subnets) for b in subnets[i + 1:])
    assert all(s.subnet_of(ipaddress.ip_network(DEFAULT_SUBNET_POOL)) for s in subnets)
    others = [load_config(None), *(load_config(p) for p in sorted(CONTROLS.glob("*.toml")))]
    assert all(not s.overlaps(ipaddress.ip_network(o.network.subnet)) for s in subnets for o in others)
    states = [c.network.state_dir for c in configs]
    assert len(set(states)) == len(states) and not {o.network.state_dir for o in others} & set(states)
    assert all(len(s) <= c.max_state_dir_len for s, c in zip(states, configs, strict=True))
    again = plans_of(["ray=2.60.0,2.59.0", "gcs=redis,rocksdb,none", "ingress=proxy,haproxy"])
    assert [p.state_dir for p in again] == [p.state_dir for p in plans]  # a dry run shows what the run uses
    elsewhere = plans_of(["ray=2.60.0,2.59.0"], Path("/tmp/reports/other"))
    assert elsewhere[0].state_dir != plans[0].state_dir  # another matrix folder: other state folders


def test_the_gcs_choices_set_redis_or_rocksdb_on_the_head_or_neither():
    redis, rocks, none = (cell_config(p, CONTROLS / "no_gcs_ft.toml") for p in plans_of(["gcs=redis,rocksdb,none"]))
    assert redis.redis.enabled and redis.gcs.gcs_ft and redis.gcs_ft  # even over a base without GCS FT
    assert "RAY_gcs_storage" not in env_of(redis, "head")
    assert not rocks.redis.enabled and not rocks.gcs_ft
    head = env_of(rocks, "head")
    assert head["RAY_gcs_storage"] == "rocksdb"
    assert head["RAY_gcs_storage_path"] == f"{rocks.network.state_dir}/gcs-rocksdb"  # beside the run folders
    assert "RAY_gcs_storage" not in env_of(rocks, "workers")
    assert not none.redis.enabled and not none.gcs_ft and "RAY_gcs_storage" not in env_of(none, "head")
    assert backend_problem(plans_of(["gcs=rocksdb"])[0], "kind").startswith("gcs rocksdb on Kubernetes")
    assert backend_problem(plans_of(["gcs=rocksdb"])[0], "local") == ""


def test_the_ingress_and_environment_axes_set_every_ray_node_and_keep_the_base_env():
    proxy, haproxy = (cell_config(p, None) for p in plans_of(["ingress=proxy,haproxy",
                                                                  "RAY_gcs_rpc_server_reconnect_timeout_s=30"]))
    for group in ("head", "workers"):
        assert env_of(haproxy, group)["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
        assert env_of(proxy, group)["RAY_SERVE_ENABLE_HA_PROXY"] == "0"  # an inherited 1 must not turn it on
        assert env_of(haproxy, group)["RAY_gcs_rpc_server_reconnect_timeout_s"] == "30"
    assert env_of(haproxy, "workers")["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] == "30"  # the base's, kept
    assert plans_of(["ingress=proxy,haproxy"])[1].needs_haproxy
    assert not plans_of(["ingress=proxy,haproxy"])[0].needs_haproxy


def test_a_stack_key_axis_sets_that_key_and_a_bad_value_is_the_stack_configs_error():
    one, two = (cell_config(p, None) for p in plans_of(["workers.count=1,2"]))
    assert (one.workers.count, two.workers.count) == (1, 2)
    assert cell_config(plans_of(["operator.enabled=false"])[0], None).operator.enabled is False
    with pytest.raises(ConfigError, match="workers.count"):
        cell_config(plans_of(["workers.count=many"])[0], None)


@pytest.mark.parametrize("base", [None, CONTROLS / "fragile.toml", CONTROLS / "health_controls.toml",
                                  ROOT / "cluster" / "examples" / "recommender" / "stack-minimal.toml"])
def test_a_cells_own_toml_loads_back_to_the_config_it_was_written_from(tmp_path, base):
    for plan in plans_of(["gcs=redis,rocksdb", "ingress=haproxy", "workers.count=1"], tmp_path):
        config = cell_config(plan, base)
        path = write_cell_config(tmp_path / plan.id / CELL_CONFIG, config, plan, base)
        assert load_config(path).model_dump(exclude={"base_dir"}) == config.model_dump(exclude={"base_dir"})
        text = path.read_text()
        assert text.startswith(f"# Matrix cell {plan.id}:") and "[network]" in text and "[app.traffic.request]" in text
        assert all(f"#   {line}" in text for line in plan.settings())
    assert config_toml(config, plan, base).count("\n[") >= 9  # every section its own table, as the shipped file


TOML_KEYS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=6)
TOML_SCALARS = (st.booleans() | st.integers(-(2 ** 63), 2 ** 63 - 1) | st.floats(allow_nan=False)
                | st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8))
TOML_VALUES = st.recursive(TOML_SCALARS | st.lists(TOML_SCALARS, max_size=3),
                           lambda inner: st.dictionaries(TOML_KEYS, inner, max_size=3), max_leaves=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(TOML_KEYS, TOML_VALUES, max_size=4), st.integers(0, 3))
def test_the_toml_writer_reads_back_to_what_it_wrote(data, depth):
    text = to_toml(data, lambda path: len(path) <= depth)  # tables to a depth, inline below it
    assert tomllib.loads(text) == data


def test_a_kube_cell_runs_its_versions_image_named_like_the_base_one():
    assert kube_image("rayproject/ray:2.60.0", "2.59.0") == "rayproject/ray:2.59.0"
    assert kube_image("registry:5000/ray/ray:2.60.0-py311-cpu", "2.58.1") == "registry:5000/ray/ray:2.58.1-py311-cpu"
    with pytest.raises(AxisError, match="has no Ray version in its tag"):
        kube_image("rayproject/ray:latest", "2.59.0")


# --- budgets per cell ---------------------------------------------------------------------------------------------

def budgets_file(tmp_path: Path, line: str) -> Path:
    """The shipped budgets with head_failure's max_outage_s line replaced by ``line``."""
    text, n = re.subn(r"(?m)(^\[head_failure\][^\[]*?^)max_outage_s = [^\n]*", lambda m: m.group(1) + line,
                      DEFAULT_BUDGETS.read_text(), count=1)
    assert n == 1
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "budgets-2.59.toml"
    path.write_text(text)
    return path


SHIPPED_HEAD_OUTAGE = tomllib.loads(DEFAULT_BUDGETS.read_text())["head_failure"]["max_outage_s"]


def test_a_cells_budget_may_differ_only_where_a_measured_figure_says_why(tmp_path):
    axes = parse_axes(["ray=2.60.0,2.59.0"])
    measured = budgets_file(tmp_path, "max_outage_s = 9.5  # measured worst 7.6 s")
    choice, path = parse_budgets_for(f"ray=2.59.0:{measured}", axes)
    budgets = budget_changes(choice, path)
    changes = [(c.scenario, c.key, c.base, c.value) for c in budgets.changes]
    assert changes == [("head_failure", "max_outage_s", SHIPPED_HEAD_OUTAGE, 9.5)]
    assert budgets.changes[0].why.startswith("measured worst 7.6 s")
    plans = plan_cells(product(axes), tmp_path)
    assert budgets_of(plans[0], [budgets]) is None and budgets_of(plans[1], [budgets]) == budgets
    with pytest.raises(AxisError, match="cell ray-2.59.0 has 2 budgets files"):
        budgets_of(plans[1], [budgets, budgets])
    bare = budgets_file(tmp_path / "bare", "max_outage_s = 9.5  # looser, because")
    with pytest.raises(AxisError, match=r"only where a measured figure says why.*\[head_failure\] max_outage_s = 9.5"):
        budget_changes(choice, bare)
    with pytest.raises(AxisError, match="expected AXIS=VALUE:FILE"):
        parse_budgets_for("ray=2.59.0", axes)
    with pytest.raises(AxisError, match="no axis value ray=2.58.0 in this matrix"):
        parse_budgets_for(f"ray=2.58.0:{path}", axes)


# --- Ray-version venvs --------------------------------------------------------------------------------------------

@dataclass
class FakeRunner:
    """Records every command; answers the check with ``prints`` and fails the steps listed in ``fail``."""

    prints: str = ""
    fail: tuple[str, ...] = ()
    commands: list[tuple[str, ...]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str], *, timeout_s: float) -> CommandResult:
        self.commands.append(tuple(argv))
        if any(f in argv for f in self.fail):
            return CommandResult(1, "ERROR: No matching distribution found for ray[serve]==9.9.9")
        if argv[-1] == CHECK:
            return CommandResult(0, f"some warning\n{self.prints}\n")
        if argv[1:3] == ("-m", "venv"):
            (Path(argv[3]) / "bin").mkdir(parents=True)
            (Path(argv[3]) / "bin" / "python").write_text("")
        return CommandResult(0, "")


def test_a_venv_plan_pins_the_lock_with_its_ray_line_replaced():
    plan = plan_build("2.59.0", Path("/cache"), (ROOT / "pyproject.toml").read_text(),
                      (ROOT / "requirements.lock").read_text())
    assert plan.venv == Path("/cache/ray-2.59.0")
    assert "ray[serve]==2.59.0" in plan.requirements
    assert not any(r.startswith("ray[serve]>=") for r in plan.requirements)
    assert "locust>=2.40,<3" in plan.requirements  # the project's own ranges, pinned by the constraints
    lines = plan.constraints.splitlines()
    assert "ray==2.59.0" in lines and "ray==2.60.0" not in lines and "locust==2.47.0" in lines
    other = plan_build("2.58.1", Path("/cache"), (ROOT / "pyproject.toml").read_text(),
                       (ROOT / "requirements.lock").read_text())
    assert other.inputs != plan.inputs
    with pytest.raises(VenvError, match="expected a release"):
        plan_build("2.59", Path("/cache"), "", "")


def test_the_builder_runs_its_steps_stamps_the_venv_and_reuses_it(tmp_path):
    runner, said = FakeRunner(prints="2.59.0"), []
    env = ensure_ray_env("2.59.0", cache=tmp_path, runner=runner, base_python="/usr/bin/python3", repo=ROOT,
                         progress=said.append, installed="2.60.0")
    venv = tmp_path / "ray-2.59.0"
    assert env.source == "built" and env.python == venv / "bin" / "python"
    py = str(venv / "bin" / "python")
    assert runner.commands == [
        ("/usr/bin/python3", "-m", "venv", str(venv)),
        (py, "-m", "pip", "install", "-q", "--upgrade", "pip"),
        (py, "-m", "pip", "install", "-q", "-c", str(venv / "serve-chaos-constraints.txt"),
         *plan_build("2.59.0", tmp_path, (ROOT / "pyproject.toml").read_text(),
                     (ROOT / "requirements.lock").read_text()).requirements),
        (py, "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT)),
        (py, "-c", CHECK),
    ]
    assert "ray==2.59.0" in (venv / "serve-chaos-constraints.txt").read_text().splitlines()
    assert read_stamp(venv).ray == "2.59.0" and any("built in" in s for s in said)
    assert "cached" in planned_env("2.59.0", cache=tmp_path, repo=ROOT, installed="2.60.0")

    again = FakeRunner(prints="2.59.0")
    reused = ensure_ray_env("2.59.0", cache=tmp_path, runner=again, repo=ROOT, installed="2.60.0")
    assert reused.source == "cached" and again.commands == []

    stamp = json.loads((venv / "serve-chaos-venv.json").read_text())
    (venv / "serve-chaos-venv.json").write_text(json.dumps({**stamp, "inputs": "another lock"}))
    rebuilt = FakeRunner(prints="2.59.0")
    assert ensure_ray_env("2.59.0", cache=tmp_path, runner=rebuilt, repo=ROOT, installed="2.60.0").source == "built"
    assert len(rebuilt.commands) == 5  # other inputs: built again from nothing

    (venv / "serve-chaos-venv.json").write_text("{cut sh")
    damaged = FakeRunner(prints="2.59.0")
    ensure_ray_env("2.59.0", cache=tmp_path, runner=damaged, repo=ROOT, installed="2.60.0")
    assert len(damaged.commands) == 5


def test_the_interpreters_own_ray_needs_no_venv(tmp_path):
    runner = FakeRunner()
    env = ensure_ray_env("2.60.0", cache=tmp_path, runner=runner, repo=ROOT, installed="2.60.0")
    assert env.source == "this interpreter" and env.python == Path(sys.executable) and runner.commands == []
    assert "this interpreter" in planned_env("2.60.0", installed="2.60.0")
    assert "to build from PyPI" in planned_env("2.58.1", cache=tmp_path, repo=ROOT, installed="2.60.0")


def test_a_build_that_fails_says_which_step_and_leaves_no_stamp(tmp_path):
    runner = FakeRunner(fail=("ray[serve]==9.9.9",))
    with pytest.raises(VenvError, match=r"(?s)ray 9.9.9: installing ray\[serve\]==9.9.9 .* failed \(exit 1\).*"
                                        r"No matching distribution"):
        ensure_ray_env("9.9.9", cache=tmp_path, runner=runner, repo=ROOT, installed="2.60.0")
    assert read_stamp(tmp_path / "ray-9.9.9") is None
    with pytest.raises(VenvError, match="runs Ray '2.60.0', not 2.59.0"):
        ensure_ray_env("2.59.0", cache=tmp_path, runner=FakeRunner(prints="2.60.0"), repo=ROOT, installed="2.60.0")
    assert read_stamp(tmp_path / "ray-2.59.0") is None


# --- cell isolation ------------------------------------------------------------------------------------------------

@dataclass
class FakeCells:
    """Cells by script: what each one's prepare, run and teardown do."""

    folder: Path
    script: dict[str, str]  # cell id -> "ok" | "fail" | "not runnable" | "timeout" | "raise" | "interrupt"
    teardown_raises: tuple[str, ...] = ()
    calls: list[tuple[str, str]] = field(default_factory=list)

    def prepare(self, plan: CellPlan) -> CellSetup:
        self.calls.append(("prepare", plan.id))
        if self.script[plan.id] == "not runnable":
            raise CellNotRunnable("Ray 9.9.9 cannot run here: no such release")
        folder = self.folder / plan.id
        return CellSetup(Path(sys.executable), "2.60.0", ("pytest", plan.id), ("down", plan.id), folder,
                         folder / "pytest.log")

    def run(self, setup: CellSetup, timeout_s: float) -> RunEnd:
        cell = setup.folder.name
        self.calls.append(("run", cell))
        what = self.script[cell]
        if what == "raise":
            raise RuntimeError("the runner broke")
        if what == "interrupt":
            raise KeyboardInterrupt
        run_dir = setup.folder / "20261202-100000-abcd"
        write_scenario(run_dir, "replica_failure", outage=(5.0, 12.0) if what == "fail" else (5.0, 5.5))
        return {"ok": RunEnd(0), "fail": RunEnd(1), "timeout": RunEnd(None, timed_out=True)}[what]

    def teardown(self, plan: CellPlan, setup: CellSetup | None) -> Teardown:
        self.calls.append(("teardown", plan.id))
        if plan.id in self.teardown_raises:
            raise OSError("ip netns: permission denied")
        return Teardown(True, "nothing was left")


def matrix_record(plans: Sequence[CellPlan], baseline: str | None = None) -> MatrixRecord:
    cells = tuple(MatrixCell(p.id, p.index, p.cell.choices, p.settings(), f"{p.id}/{CELL_CONFIG}") for p in plans)
    axes = parse_axes([f"RAY_X={','.join(p.cell.choices[0].value for p in plans)}"])
    return MatrixRecord(axes, cells, baseline or plans[0].id, ("scenarios/test_guide.py",), (), "local",
                        "cluster/local.toml", "2026-12-02 10:00:00 UTC")


def test_a_failing_cell_does_not_stop_the_others_and_every_cells_teardown_runs(tmp_path):
    script = {"RAY-X-a": "ok", "RAY-X-b": "not runnable", "RAY-X-c": "fail", "RAY-X-d": "timeout",
              "RAY-X-e": "raise", "RAY-X-f": "ok"}
    plans = plans_of([f"RAY_X={','.join('abcdef')}"], tmp_path)
    cells = FakeCells(tmp_path, script, teardown_raises=("RAY-X-f",))
    said: list[str] = []
    record = run_matrix(matrix_record(plans), plans, cells, timeout_s=5, folder=tmp_path, progress=said.append)
    assert [c for c in cells.calls if c[0] == "teardown"] == [("teardown", p.id) for p in plans]  # every one
    statuses = {r.cell_id: (r.status, r.exit_code) for r in record.runs}
    assert statuses == {"RAY-X-a": (CellStatus.AS_EXPECTED, 0), "RAY-X-b": (CellStatus.NOT_RUN, None),
                        "RAY-X-c": (CellStatus.FAILED, 1), "RAY-X-d": (CellStatus.TIMED_OUT, None),
                        "RAY-X-e": (CellStatus.FAILED, None), "RAY-X-f": (CellStatus.AS_EXPECTED, 0)}
    runs = {r.cell_id: r for r in record.runs}
    assert runs["RAY-X-b"].reason == "Ray 9.9.9 cannot run here: no such release" and runs["RAY-X-b"].run_dir == ""
    assert runs["RAY-X-c"].reason.startswith("pytest exited 1: scenarios failed")
    assert runs["RAY-X-e"].reason == "RuntimeError: the runner broke"
    assert runs["RAY-X-a"].run_dir == "RAY-X-a/20261202-100000-abcd" and runs["RAY-X-a"].as_expected
    assert not runs["RAY-X-f"].as_expected and "raised OSError: ip netns" in runs["RAY-X-f"].teardown
    assert not record.as_expected
    assert read_record(tmp_path).runs == record.runs  # matrix.json has every cell
    ends = [s for s in said if " end: " in s]
    assert len(ends) == 6 and "[cell 4/6 RAY-X-d] end: timed out" in ends[3] and "exit code -" in ends[3]


def test_ctrl_c_stops_the_matrix_after_the_cells_teardown_and_records_it(tmp_path):
    plans = plans_of(["RAY_X=a,b,c"], tmp_path)
    cells = FakeCells(tmp_path, {"RAY-X-a": "ok", "RAY-X-b": "interrupt", "RAY-X-c": "ok"})
    with pytest.raises(KeyboardInterrupt):
        run_matrix(matrix_record(plans), plans, cells, timeout_s=5, folder=tmp_path, progress=lambda _: None)
    assert ("teardown", "RAY-X-b") in cells.calls and ("prepare", "RAY-X-c") not in cells.calls
    record = read_record(tmp_path)
    assert [(r.cell_id, r.status) for r in record.runs] == [("RAY-X-a", CellStatus.AS_EXPECTED),
                                                           ("RAY-X-b", CellStatus.INTERRUPTED)]


def test_a_real_cell_process_is_timed_out_and_killed_with_its_group(tmp_path):
    code = "import sys; print('collected 3 items', flush=True); sys.exit(3)"
    seen: list[str] = []
    assert run_cell_process([sys.executable, "-c", code], tmp_path / "a.log", 30, prefix="[a]",
                            echo=seen.append) == RunEnd(3)
    assert (tmp_path / "a.log").read_text() == "collected 3 items\n" and seen == ["[a] collected 3 items"]
    # a cell that ignores SIGINT, with a child of its own: SIGKILL to its group after the grace
    stuck = ("import signal, subprocess, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
             "child = subprocess.Popen([sys.executable, '-c', 'import signal; signal.pause()']); "
             "print(child.pid, flush=True); signal.pause()")
    end = run_cell_process([sys.executable, "-c", stuck], tmp_path / "b.log", 1.5, prefix="[b]", echo=seen.append,
                           grace_s=1.0)
    assert end == RunEnd(None, timed_out=True)
    child = int((tmp_path / "b.log").read_text().split()[0])
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
    assert any("timed out after 2 s" in s for s in seen)


def test_a_subprocess_cell_runs_its_own_interpreter_config_and_folder_and_refuses_what_it_lacks(tmp_path,
                                                                                                 monkeypatch):
    plans = plans_of(["ray=2.60.0,9.9.9", "ingress=proxy,haproxy"], tmp_path)
    cells = SubprocessCells(tmp_path, ("scenarios/test_guide.py",), ("-k", "head"), echo=lambda _: None,
                            budgets=(("ray-2.60.0_ingress-proxy", "/b.toml"),),
                            ask=lambda python, snippet: (False, "no haproxy binary for Ray 2.60.0"))

    def ensure(version: str, progress) -> RayEnv:
        if version != "2.60.0":
            raise VenvError(f"ray {version}: no such release on PyPI")
        return RayEnv(version, Path(sys.executable), "this interpreter")

    monkeypatch.setattr("harness.matrix_run.ensure_ray_env", ensure)
    setup = cells.prepare(plans[0])
    folder = tmp_path / plans[0].id
    assert setup.argv[:3] == (sys.executable, "-m", "pytest")
    assert setup.argv[3:] == ("scenarios/test_guide.py", "-q", "-p", "no:cacheprovider", "--serve-chaos-backend",
                              "local", "--serve-chaos-stack-config", str(folder / CELL_CONFIG),
                              "--serve-chaos-report-dir", str(folder), f"--junitxml={folder / 'junit.xml'}",
                              "--serve-chaos-budgets", "/b.toml", "-k", "head")
    assert setup.teardown_argv == (sys.executable, "-m", "harness", "down", "--backend", "local", "--stack-config",
                                   str(folder / CELL_CONFIG), "--json")
    with pytest.raises(CellNotRunnable, match="ingress haproxy: no haproxy binary for Ray 2.60.0"):
        cells.prepare(plans[1])
    with pytest.raises(CellNotRunnable, match="Ray 9.9.9 cannot run here: ray 9.9.9: no such release"):
        cells.prepare(plans[2])


def test_a_kube_cell_gets_its_versions_image_over_the_users_kube_settings(tmp_path, monkeypatch):
    plans = plans_of(["ray=2.59.0"], tmp_path)
    user = tmp_path / "my-kube.toml"
    user.write_text('[kube]\nallowed_contexts = ["kind-mine"]\nray_image = "rayproject/ray:2.60.0-py311"\n')
    monkeypatch.setattr("harness.matrix_run.ensure_ray_env",
                        lambda version, progress: RayEnv(version, Path(sys.executable), "cached"))
    cells = SubprocessCells(tmp_path, ("scenarios/test_guide.py",), (), backend="kind",
                            kube_ray_image="rayproject/ray:2.60.0-py311", base_kube_config=str(user),
                            echo=lambda _: None)
    (tmp_path / plans[0].id).mkdir()
    setup = cells.prepare(plans[0])
    kube = tmp_path / plans[0].id / "kube.toml"
    assert tomllib.loads(kube.read_text()) == {"kube": {"allowed_contexts": ["kind-mine"],
                                                        "ray_image": "rayproject/ray:2.59.0-py311"}}
    assert setup.argv[7:9] == ("--serve-chaos-backend", "kind")
    assert setup.argv[setup.argv.index("--kube-config") + 1] == str(kube)
    assert setup.teardown_argv[-3:] == ("--kube-config", str(kube), "--json")
    with pytest.raises(CellNotRunnable, match="gcs rocksdb on Kubernetes"):
        cells.prepare(plans_of(["gcs=rocksdb"], tmp_path)[0])


def test_the_teardown_check_reports_what_it_removed_and_a_failure(tmp_path):
    plan = plan_cell(product(parse_axes(["gcs=rocksdb"]))[0], 1, state_prefix=str(tmp_path / "scm"))
    rocks = Path(plan.rocksdb_dir)
    rocks.mkdir(parents=True, exist_ok=True)
    answers: list[subprocess.CompletedProcess] = [
        subprocess.CompletedProcess([], 0, '{"backend": "local", "removed": ["sc12ab34"], "seconds": 0.4}\n', ""),
        subprocess.CompletedProcess([], 0, '{"backend": "local", "removed": [], "seconds": 0.1}\n', ""),
        subprocess.CompletedProcess([], 3, "", "error: could not delete netns sc12ab34-head\n"),
    ]
    seen: list[tuple[str, ...]] = []

    def command(argv, timeout_s):
        seen.append(tuple(argv))
        return answers.pop(0)

    cells = SubprocessCells(tmp_path, ("scenarios/test_guide.py",), (), echo=lambda _: None, command=command)
    assert cells.teardown(plan, None) == Teardown(True, "removed what was left: sc12ab34")
    assert seen[0][:4] == (sys.executable, "-m", "harness", "down") and str(tmp_path / plan.id / CELL_CONFIG) in seen[0]
    assert not rocks.exists()  # the cell's RocksDB goes with its stack
    assert cells.teardown(plan, None) == Teardown(True, "nothing was left")
    failed = cells.teardown(plan, None)
    assert not failed.ok and "exited 3: error: could not delete netns" in failed.text


# --- the grid ------------------------------------------------------------------------------------------------------

ISSUE = KnownIssue("ray-project/ray#63784", "stale proxies", ("2.60.0",), "failures")


def cell_run(status: CellStatus, cell_id: str, run_dir: str = "", code: int | None = 0, reason: str = "",
             ray: str = "2.60.0") -> CellRun:
    return CellRun(cell_id, status, code, 100.0, reason, run_dir, sys.executable, ray, "nothing was left", True)


def synthetic_matrix(folder: Path) -> MatrixRecord:
    """Three cells: the baseline (Ray 2.60.0), Ray 2.59.0 (head_failure regressed, the known issue not pinned
    there, replica_failure better), and one whose venv could not be built."""
    plans = plans_of(["ray=2.60.0,2.59.0,9.9.9"], folder)
    base, old, broken = (p.id for p in plans)
    a, b = folder / base / "20261202-100000-aaaa", folder / old / "20261202-110000-bbbb"
    write_scenario(a, "head_failure", outage=(5.0, 5.5))
    write_scenario(b, "head_failure", outage=(5.0, 12.0), ray_version="2.59.0")  # fails: a 7 s outage
    write_scenario(a, "replica_failure", outage=(5.0, 5.5))
    write_scenario(b, "replica_failure", outage=(5.0, 5.2), ray_version="2.59.0")  # better beyond a request
    write_scenario(a, "controller_failure", outage=(5.0, 6.0), known_issue=ISSUE)  # shows, as pinned
    write_scenario(b, "controller_failure", outage=(5.0, 6.0), known_issue=ISSUE, ray_version="2.59.0")
    write_scenario(a, "proxy_failure")
    write_scenario(b, "proxy_failure", ray_version="2.59.0")
    for plan in plans:
        write_cell_config(folder / plan.id / CELL_CONFIG, cell_config(plan, None), plan, None)
        (folder / plan.id / "pytest.log").write_text("collected 4 items\n")
    record = matrix_record(plans)
    record = MatrixRecord(parse_axes(["ray=2.60.0,2.59.0,9.9.9"]), record.cells, base, record.scenarios, ("-k", "x"),
                          "local", record.base_config, record.started, (
                              cell_run(CellStatus.AS_EXPECTED, base, a.relative_to(folder).as_posix()),
                              cell_run(CellStatus.FAILED, old, b.relative_to(folder).as_posix(), 1,
                                       "pytest exited 1: scenarios failed (see its run report)", "2.59.0"),
                              cell_run(CellStatus.NOT_RUN, broken, "", None,
                                       "Ray 9.9.9 cannot run here: ray 9.9.9: no such release on PyPI", "")))
    write_record(folder, record)
    return record


def test_the_grid_shows_every_scenario_in_every_cell_and_what_differs_from_the_baseline(tmp_path):
    record = synthetic_matrix(tmp_path)
    page, grid = write_matrix_report(tmp_path)
    base, old, broken = (c.id for c in record.cells)
    assert [r.folder for r in grid.rows] == ["test_controller_failure", "test_head_failure", "test_proxy_failure",
                                             "test_replica_failure"]
    rows = {r.scenario: {e.cell_id: e for e in r.entries} for r in grid.rows}
    assert rows["head_failure"][old].differs == ("outcome", "availability worse", "availability with retries worse",
                                                 "longest outage worse")
    assert rows["head_failure"][base].differs == ()  # the baseline is what the others are compared with
    # better beyond what the figures tell apart (with retries both served everything: the same)
    assert rows["replica_failure"][old].differs == ("availability better", "longest outage better")
    assert rows["proxy_failure"][old].differs == ()
    assert rows["head_failure"][broken].summary is None and rows["head_failure"][broken].differs == ()
    # the known issue: shown as pinned on 2.60.0; on 2.59.0 the cell says it was not confirmed there
    assert rows["controller_failure"][base].outcome is Outcome.EXPECTED_FAILURE
    assert rows["controller_failure"][old].outcome is Outcome.FAILED
    assert "not confirmed on Ray 2.59.0" in rows["controller_failure"][old].note
    assert "outcome" in rows["controller_failure"][old].differs
    columns = {c.id: c for c in grid.columns}
    assert columns[old].differing_axes == ("ray",) and columns[base].baseline
    assert [d.folder for d in columns[old].comparison.regressed] == ["test_head_failure"]  # report --compare's
    assert columns[broken].problems == ("no run folder: Ray 9.9.9 cannot run here: ray 9.9.9: no such release on PyPI",)

    html = page.read_text()
    assert html.count('class="entry differs"') == 3 and html.count('class="entry"') == 9
    assert "known issue ray-project/ray#63784 (seen on Ray 2.60.0) not confirmed on Ray 2.59.0" in html
    assert "shown on Ray 2.60.0, as expected" in html
    assert "Ray 9.9.9 cannot run here" in html and "1 of 3 cells as expected" in html
    assert '<span class="axis-diff">ray 2.59.0</span>' in html
    # the comparison is the page `report --compare BASELINE CELL` writes, beside the grid
    compare = tmp_path / f"compare-{old}.html"
    assert compare.is_file() and "1 of 4 scenarios regressed" in compare.read_text()
    assert not (tmp_path / f"compare-{broken}.html").exists()
    for href in re.findall(r'href="([^"#]+)"', html):
        assert (tmp_path / href).exists(), href  # every link is relative and leads to a file of the matrix
    assert f'href="{old}/20261202-110000-bbbb/index.html"' in html and f'href="compare-{old}.html"' in html
    saved = json.loads((tmp_path / "grid.json").read_text())
    assert saved["baseline"] == base and saved["cells"][1]["regressed"] == ["test_head_failure"]
    assert saved["rows"][1]["cells"][old]["differs"][0] == "outcome"


def test_a_known_issue_that_does_not_show_in_a_cell_says_so(tmp_path):
    plans = plans_of(["ingress=proxy,haproxy"], tmp_path)
    for plan, outage in zip(plans, [(5.0, 6.0), None], strict=True):
        write_scenario(tmp_path / plan.id / "20261202-100000-abcd", "controller_failure", outage=outage,
                       known_issue=ISSUE)
    record = matrix_record(plans)
    record = MatrixRecord(parse_axes(["ingress=proxy,haproxy"]), record.cells, record.baseline, record.scenarios, (),
                          "local", "", "", tuple(cell_run(CellStatus.AS_EXPECTED if p.index == 1 else CellStatus.FAILED,
                                                          p.id, f"{p.id}/20261202-100000-abcd") for p in plans))
    write_record(tmp_path, record)
    grid = build_grid(tmp_path)
    haproxy = grid.columns[1]
    assert haproxy.known_issue_notes == (
        "controller_failure: known issue ray-project/ray#63784 did not show on Ray 2.60.0 (unexpected pass): "
        "it may be fixed; drop the expectation",)
    entry = grid.rows[0].entries[1]
    assert entry.outcome is Outcome.UNEXPECTED_PASS and entry.differs[0] == "outcome"
    assert grid.columns[0].known_issue_notes[0].endswith("shown on Ray 2.60.0, as expected")


def test_the_matrix_page_renders_offline_and_requests_nothing(tmp_path):
    from test_report_browser import CHROMIUM, PNG, external_refs, load_offline

    if not CHROMIUM.exists():
        pytest.skip("needs a headless browser: install Debian's chromium package (apt-get install chromium)")
    synthetic_matrix(tmp_path / "m")
    page, _ = write_matrix_report(tmp_path / "m")
    load = load_offline(page, tmp_path / "browser", height=1400)
    assert load.page_requests == () and external_refs(load.dom) == []
    assert load.dom.count('class="entry differs"') == 3 and "Scenarios × cells" in load.dom
    data = load.screenshot.read_bytes()
    assert data.startswith(PNG) and len(data) > 30_000, "the screenshot is missing or blank"


# --- the command line ----------------------------------------------------------------------------------------------

def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", "matrix", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def test_the_dry_run_prints_every_cell_and_what_it_sets_and_writes_nothing(tmp_path):
    folder = tmp_path / "m"
    res = cli("--axis", "ray=2.60.0,9.9.9", "--axis", "gcs=redis,rocksdb", "--axis", "ingress=haproxy",
              "--baseline", "ray=9.9.9,gcs=redis", "--report-dir", str(folder), "--dry-run", "--", "-k", "head")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert out.startswith("4 cells; baseline ray-9.9.9_gcs-redis_ingress-haproxy; scenarios scenarios/test_guide.py")
    assert "cell 3/4 ray-9.9.9_gcs-redis_ingress-haproxy (baseline)" in out
    cells = re.findall(r"^cell (\d)/4 (\S+)", out, re.MULTILINE)
    assert [c[1] for c in cells] == [c.id for c in product(parse_axes(["ray=2.60.0,9.9.9", "gcs=redis,rocksdb",
                                                                       "ingress=haproxy"]))]
    assert out.count("RAY_SERVE_ENABLE_HA_PROXY=1") == 4 and out.count("needs: an haproxy binary") == 4
    assert "RAY_gcs_storage=rocksdb" in out and "network.subnet = 10.220.4.0/24" in out
    assert f"{sys.executable} (this interpreter: Ray" in out and "ray-9.9.9/bin/python (to build from PyPI" in out
    assert out.count("-k head") == 4
    assert not folder.exists()  # a dry run writes nothing


@pytest.mark.parametrize(("args", "message"), [
    (["--axis", "gcs=etcd"], "axis gcs: unknown value 'etcd'"),
    (["--axis", "ray=2.60.0", "--baseline", "ray-2.59.0"], "--baseline 'ray-2.59.0': no such cell"),
    (["--axis", "workers.count=many"], "cell workers.count-many: stack config: key 'workers.count'"),
    (["--axis", "ray=2.60.0"], "--report-only needs --report-dir"),
])
def test_a_usage_error_exits_2_with_the_reason(args, message):
    res = cli(*args, *(["--report-only"] if "--report-only needs" in message else ["--dry-run"]))
    assert res.returncode == 2 and message in res.stderr, res.stderr


def test_report_only_writes_the_grid_of_a_matrix_that_ran_and_exits_1_on_a_cell_not_as_expected(tmp_path):
    synthetic_matrix(tmp_path)
    res = cli("--report-only", "--report-dir", str(tmp_path))
    assert res.returncode == 1, res.stderr
    assert "matrix: 1 of 3 cells as expected" in res.stdout and f"report: {tmp_path / 'index.html'}" in res.stdout
    assert "ray-9.9.9: not run: Ray 9.9.9 cannot run here" in res.stdout
    assert cli("--report-only", "--report-dir", str(tmp_path / "none")).returncode == 2


def test_the_matrix_command_runs_every_cell_writes_its_config_and_the_grid(tmp_path, monkeypatch, capsys):
    """The whole command with the cells' subprocesses replaced by a script: each cell gets its stack config and
    folder, one cell fails, the others run, the report is written, the exit code is 1."""
    made: list[FakeCells] = []

    def fake_cells(folder, scenarios, pytest_args, **kwargs):
        made.append(FakeCells(folder, {"ray-2.60.0_gcs-redis": "ok", "ray-2.60.0_gcs-none": "fail"}))
        assert pytest_args == ("-k", "replica") and kwargs["backend"] == "local"
        return made[0]

    monkeypatch.setattr(matrix_cli, "SubprocessCells", fake_cells)
    folder = tmp_path / "m"
    code = main(["matrix", "--axis", "ray=2.60.0", "--axis", "gcs=redis,none", "--report-dir", str(folder),
                 "--", "-k", "replica"])
    assert code == 1
    record = read_record(folder)
    assert [(r.cell_id, r.status) for r in record.runs] == [("ray-2.60.0_gcs-redis", CellStatus.AS_EXPECTED),
                                                           ("ray-2.60.0_gcs-none", CellStatus.FAILED)]
    none = load_config(folder / "ray-2.60.0_gcs-none" / CELL_CONFIG)
    assert not none.redis.enabled and none.network.state_dir != load_config(
        folder / "ray-2.60.0_gcs-redis" / CELL_CONFIG).network.state_dir
    assert (folder / "index.html").is_file() and (folder / "compare-ray-2.60.0_gcs-none.html").is_file()
    out = capsys.readouterr().out
    assert "[cell 1/2 ray-2.60.0_gcs-redis] start" in out and "[cell 2/2 ray-2.60.0_gcs-none] end: failed" in out
    assert main(["matrix", "--axis", "ray=2.60.0", "--report-dir", str(folder)]) == 2  # the folder holds a matrix
    assert (folder / MATRIX_FILE).is_file() and os.path.getsize(folder / MATRIX_FILE) > 0
