"""The matrix: the same scenarios across axes, one stack per cell (docs/matrix.md). What a cell is, what each of its
choices sets, the stack config it runs, and the record of a matrix run (``matrix.json``: the one writer and
reader, for the runner and the report).

    axes = parse_axes(["ray=2.60.0,2.59.0", "ingress=proxy,haproxy"])
    cells = product(axes)                      # 4 cells, first axis slowest
    cells[0].id                                # "ray-2.60.0_ingress-proxy"
    plan = plan_cell(cells[0], 1, state_prefix="/tmp/scm-1a2b")
    config = cell_config(plan, base_file)      # the StackConfig the cell runs, validated like any stack config
    write_cell_config(path, config, plan)      # its own TOML: base file + the cell's choices, every key spelled out

The axes:

- ``ray=<version>,...``: the Ray version (each in its own venv: ``harness.venvs``);
- ``gcs=redis|rocksdb|none``: GCS fault tolerance on Redis, on RocksDB in the head's own storage, or none (the
  control);
- ``ingress=proxy|haproxy``: Serve's default proxy, or HAProxy (``RAY_SERVE_ENABLE_HA_PROXY``);
- ``KEY=v1,v2`` where KEY is an environment variable (it starts with a capital letter or ``_``, e.g.
  ``RAY_gcs_rpc_server_reconnect_timeout_s``): that variable on every Ray node;
- ``section.key=v1,v2`` (e.g. ``workers.count=1,2``): that key of the stack config.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import json
import math
import re
import tomllib
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from harness.records import DEFAULT_BUDGETS
from harness.stack.config import StackConfig, load_config
from harness.venvs import VERSION

MATRIX_FILE = "matrix.json"  # in the matrix folder: the record (cells, what each sets, how each ran)
CELL_CONFIG = "stack.toml"  # in a cell's folder: the stack config it ran
CELL_KUBE_CONFIG = "kube.toml"  # in a cell's folder (kind/kube backends): its Ray image
CELL_LOG = "pytest.log"  # in a cell's folder: what its pytest printed
DEFAULT_SUBNET_POOL = "10.220.0.0/16"  # cell i gets the i-th /24 of it: away from the shared stack's and controls'
STATE_ROOT = "/tmp/scm"  # cell i's state folder is /tmp/scm-<matrix token>-<i>: short (Ray's socket paths)
ROCKSDB_DIR = "gcs-rocksdb"  # in the cell's state folder, beside the run folders: a head restart keeps it
HA_PROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"
GCS_STORAGE_ENV = "RAY_gcs_storage"
GCS_STORAGE_PATH_ENV = "RAY_gcs_storage_path"

RAY, GCS, INGRESS = "ray", "gcs", "ingress"
GCS_VALUES = ("redis", "rocksdb", "none")
INGRESS_VALUES = ("proxy", "haproxy")
BUILT_IN = {RAY: "a Ray release, e.g. 2.59.0", GCS: ", ".join(GCS_VALUES), INGRESS: ", ".join(INGRESS_VALUES)}
ENV_KEY = re.compile(r"^[A-Z_][A-Za-z0-9_]*$")
STACK_KEY = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)+$")
# stack keys the matrix itself sets: a cell's own subnet and state folder, and the gcs axis's keys
OWNED_KEYS = {"network.subnet": "each cell gets its own", "network.state_dir": "each cell gets its own",
              "redis.enabled": "use the gcs axis", "gcs.gcs_ft": "use the gcs axis",
              "head.env": "use an environment-variable axis", "workers.env": "use an environment-variable axis"}


class AxisError(ValueError):
    """An --axis, --baseline or --budgets-for that cannot be used; the message says what was expected."""


class AxisKind(StrEnum):
    RAY = "ray"
    GCS = "gcs"
    INGRESS = "ingress"
    ENV = "env"  # an environment variable on every Ray node
    STACK_KEY = "stack key"  # a key of the stack config


def _slug(text: str) -> str:
    """A cell id's part: letters, digits and dots; anything else a dash (so "_" only ever separates choices)."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "-"


def axis_kind(name: str) -> AxisKind:
    if name in BUILT_IN:
        return AxisKind(name)
    if ENV_KEY.match(name):
        return AxisKind.ENV
    if STACK_KEY.match(name):
        return AxisKind.STACK_KEY
    raise AxisError(f"axis {name!r}: not an axis (built-in: {', '.join(BUILT_IN)}; an environment variable starts "
                    f"with a capital letter, e.g. RAY_gcs_rpc_server_reconnect_timeout_s; a stack-config key has a "
                    f"dot, e.g. workers.count)")


@dataclass(frozen=True)
class Choice:
    axis: str
    value: str

    @property
    def slug(self) -> str:
        return f"{_slug(self.axis)}-{_slug(self.value)}"

    @property
    def text(self) -> str:
        return f"{self.axis}={self.value}"


@dataclass(frozen=True)
class Axis:
    name: str
    values: tuple[str, ...]

    @property
    def kind(self) -> AxisKind:
        return axis_kind(self.name)

    @property
    def spec(self) -> str:
        """As given on the command line: ``parse_axis(axis.spec) == axis``."""
        return f"{self.name}={','.join(self.values)}"

    def choices(self) -> tuple[Choice, ...]:
        return tuple(Choice(self.name, v) for v in self.values)


@dataclass(frozen=True)
class Cell:
    """One combination: a value of every axis, in the axes' order."""

    choices: tuple[Choice, ...]

    @property
    def id(self) -> str:
        """Stable and unique in its matrix, a folder name: ``ray-2.60.0_gcs-redis_ingress-proxy``."""
        return "_".join(c.slug for c in self.choices)

    @property
    def label(self) -> str:
        return " · ".join(f"{c.axis} {c.value}" for c in self.choices)

    def value(self, axis: str) -> str | None:
        return next((c.value for c in self.choices if c.axis == axis), None)

    def differs_from(self, other: Cell) -> tuple[str, ...]:
        """The axes whose value is not ``other``'s."""
        return tuple(c.axis for c in self.choices if other.value(c.axis) != c.value)


def _check_value(name: str, kind: AxisKind, value: str) -> None:
    if kind is AxisKind.RAY and not VERSION.match(value):
        raise AxisError(f"axis ray: {value!r} is not a Ray release (expected a version such as 2.59.0)")
    if kind is AxisKind.GCS and value not in GCS_VALUES:
        raise AxisError(f"axis gcs: unknown value {value!r} (choose from {', '.join(GCS_VALUES)})")
    if kind is AxisKind.INGRESS and value not in INGRESS_VALUES:
        raise AxisError(f"axis ingress: unknown value {value!r} (choose from {', '.join(INGRESS_VALUES)})")
    if any(ch in value for ch in "\n\r\x00"):
        raise AxisError(f"axis {name}: value {value!r} has a line break or NUL")


def _check_stack_key(name: str) -> None:
    """``name`` is a key (not a section, not a table of its own) of the stack config, and not one the matrix sets."""
    if name in OWNED_KEYS or name.split(".")[0] == "network":
        why = OWNED_KEYS.get(name, "each cell gets its own")
        raise AxisError(f"axis {name}: the matrix sets this key itself ({why})")
    model: type[BaseModel] = StackConfig
    parts = name.split(".")
    for i, part in enumerate(parts):
        fields = model.model_fields
        where = ".".join(parts[:i]) or "the top level"
        if part not in fields or part == "base_dir":
            known = ", ".join(k for k in fields if k != "base_dir")
            raise AxisError(f"axis {name}: the stack config has no key {part!r} in {where} (keys: {known})")
        annotation = fields[part].annotation
        is_section = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if i < len(parts) - 1:
            if not is_section:
                raise AxisError(f"axis {name}: {'.'.join(parts[:i + 1])} is a key, not a section")
            model = annotation
        elif is_section or typing.get_origin(annotation) is dict:
            raise AxisError(f"axis {name}: {name} is a table, not a key (for environment variables use an "
                            f"environment-variable axis)")


def parse_axis(spec: str) -> Axis:
    """``name=v1,v2`` into an Axis; an AxisError says what is wrong with it."""
    name, sep, values = spec.partition("=")
    name = name.strip()
    if not sep:
        raise AxisError(f"--axis {spec!r}: expected NAME=VALUE[,VALUE...], e.g. ray=2.60.0,2.59.0")
    if not name:
        raise AxisError(f"--axis {spec!r}: no axis name before '='")
    kind = axis_kind(name)
    if kind is AxisKind.STACK_KEY:
        _check_stack_key(name)
    items = tuple(v.strip() for v in values.split(","))
    if not values.strip():
        raise AxisError(f"axis {name}: no values (expected {name}=VALUE[,VALUE...])")
    if "" in items:
        raise AxisError(f"axis {name}: an empty value in {values!r}")
    for value in items:
        _check_value(name, kind, value)
    seen: dict[str, str] = {}
    for value in items:
        slug = _slug(value)
        if slug in seen:
            what = "twice" if seen[slug] == value else f"and {seen[slug]!r} (the same cell id part, {slug!r})"
            raise AxisError(f"axis {name}: value {value!r} {what}")
        seen[slug] = value
    return Axis(name, items)


# environment variables a built-in axis sets, so that no axis of its own may set them as well
BUILT_IN_ENV = {INGRESS: (HA_PROXY_ENV,), GCS: (GCS_STORAGE_ENV, GCS_STORAGE_PATH_ENV)}


def parse_axes(specs: Sequence[str]) -> tuple[Axis, ...]:
    if not specs:
        raise AxisError("give at least one --axis, e.g. --axis ray=2.60.0,2.59.0")
    axes = tuple(parse_axis(s) for s in specs)
    names = [a.name for a in axes]
    for name in dict.fromkeys(names):
        if names.count(name) > 1:
            raise AxisError(f"axis {name} given {names.count(name)} times: give each axis once, with all its values")
    slugs = [_slug(n) for n in names]
    for a, b in itertools.combinations(range(len(axes)), 2):
        if slugs[a] == slugs[b]:
            raise AxisError(f"axes {names[a]} and {names[b]} give the same cell id part ({slugs[a]!r})")
    for axis, variables in BUILT_IN_ENV.items():
        if axis in names:
            for variable in variables:
                if variable in names:
                    raise AxisError(f"axis {variable}: the {axis} axis sets it (give one of the two)")
    return axes


def product(axes: Sequence[Axis]) -> tuple[Cell, ...]:
    """Every combination, the first axis varying slowest (the order the cells run in)."""
    return tuple(Cell(tuple(combo)) for combo in itertools.product(*(a.choices() for a in axes)))


def find_cell(cells: Sequence[Cell], wanted: str) -> Cell:
    """A cell by its id, or by its choices (``ray=2.60.0,ingress=proxy``: they must pick exactly one)."""
    for cell in cells:
        if cell.id == wanted:
            return cell
    if "=" in wanted:
        picks = [tuple(p.strip().partition("=")[::2]) for p in wanted.split(",")]
        found = [c for c in cells if all(c.value(axis) == value for axis, value in picks)]
        if len(found) == 1:
            return found[0]
        if found:
            raise AxisError(f"--baseline {wanted!r} picks {len(found)} cells: {', '.join(c.id for c in found)}")
    raise AxisError(f"--baseline {wanted!r}: no such cell (cells: {', '.join(c.id for c in cells)})")


# --- what a cell's choices set ------------------------------------------------------------------------------

Scalar = str | int | float | bool


def stack_value(text: str) -> Scalar:
    """A stack-key axis's value as TOML reads it (``2`` an integer, ``true`` a boolean), else as text."""
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    return value if isinstance(value, (str, int, float, bool)) else text


@dataclass(frozen=True)
class CellPlan:
    """What a cell's choices set, worked out before anything runs."""

    cell: Cell
    index: int  # 1-based: the cell's subnet and state folder
    ray_version: str | None  # None: no ray axis (the matrix's own interpreter)
    gcs: str  # redis | rocksdb | none; "" without a gcs axis (the base config's)
    ingress: str  # proxy | haproxy; "" without an ingress axis (the base config's)
    subnet: str
    state_dir: str
    env: tuple[tuple[str, str], ...]  # on every Ray node
    head_env: tuple[tuple[str, str], ...]  # on the head only
    keys: tuple[tuple[str, Scalar], ...]  # stack-config keys

    @property
    def id(self) -> str:
        return self.cell.id

    @property
    def needs_haproxy(self) -> bool:
        return self.ingress == "haproxy"

    @property
    def rocksdb_dir(self) -> str:
        return f"{self.state_dir}/{ROCKSDB_DIR}" if self.gcs == "rocksdb" else ""

    def settings(self) -> tuple[str, ...]:
        """What this cell sets, one line each, as the dry run and the report show it."""
        lines = [f"ray {self.ray_version}" if self.ray_version else "ray: the matrix's own interpreter's",
                 f"network.subnet = {self.subnet}, network.state_dir = {self.state_dir} (this cell's own stack)"]
        lines += {"redis": ["gcs redis: redis.enabled = true, gcs.gcs_ft = true (GCS fault tolerance on Redis)"],
                  "rocksdb": ["gcs rocksdb: redis.enabled = false, gcs.gcs_ft = false; the head's GCS keeps its "
                              f"tables in RocksDB at {self.rocksdb_dir} (kept across a head restart)"],
                  "none": ["gcs none: redis.enabled = false, gcs.gcs_ft = false (no GCS fault tolerance: the control)"],
                  "": []}[self.gcs]
        if self.ingress:
            lines.append("ingress haproxy: HAProxy in front of every node (needs an haproxy binary)"
                         if self.needs_haproxy else "ingress proxy: Serve's default proxy")
        if self.env:
            lines.append("every Ray node: " + ", ".join(f"{k}={v}" for k, v in self.env))
        if self.head_env:
            lines.append("the head: " + ", ".join(f"{k}={v}" for k, v in self.head_env))
        lines += [f"{key} = {json.dumps(value)}" for key, value in self.keys]
        return tuple(lines)


def matrix_token(report_dir: Path) -> str:
    """4 hex digits from the matrix folder: two matrices at once get other state folders, a dry run and the run
    of the same folder the same ones."""
    return hashlib.sha1(str(Path(report_dir).resolve()).encode()).hexdigest()[:4]


def cell_subnet(pool: str, index: int) -> str:
    net = ipaddress.ip_network(pool, strict=True)
    if net.version != 4 or not net.is_private or net.prefixlen > 23:
        raise AxisError(f"--subnet-pool {pool}: expected a private IPv4 network of at least two /24s, "
                        f"e.g. {DEFAULT_SUBNET_POOL}")
    subnets = net.subnets(new_prefix=24)
    count = 2 ** (24 - net.prefixlen)
    if index >= count:
        raise AxisError(f"--subnet-pool {pool} has {count - 1} /24s for cells; this matrix needs more")
    return str(next(itertools.islice(subnets, index, None)))


def plan_cell(cell: Cell, index: int, *, state_prefix: str, subnet_pool: str = DEFAULT_SUBNET_POOL) -> CellPlan:
    """What ``cell`` sets: its Ray version, its stack's own subnet and state folder, Redis or RocksDB or neither,
    the ingress, and every environment variable and stack key its axes name."""
    env: dict[str, str] = {}
    head_env: dict[str, str] = {}
    keys: list[tuple[str, Scalar]] = []
    state_dir = f"{state_prefix}-{index:02d}"
    for choice in cell.choices:
        kind = axis_kind(choice.axis)
        if kind is AxisKind.INGRESS:
            # "0" for the default proxy too: a variable inherited from the shell must not turn HAProxy on
            env[HA_PROXY_ENV] = "1" if choice.value == "haproxy" else "0"
        elif kind is AxisKind.GCS and choice.value == "rocksdb":
            head_env.update({GCS_STORAGE_ENV: "rocksdb", GCS_STORAGE_PATH_ENV: f"{state_dir}/{ROCKSDB_DIR}"})
        elif kind is AxisKind.ENV:
            env[choice.axis] = choice.value
        elif kind is AxisKind.STACK_KEY:
            keys.append((choice.axis, stack_value(choice.value)))
    return CellPlan(cell, index, cell.value(RAY), cell.value(GCS) or "", cell.value(INGRESS) or "",
                    cell_subnet(subnet_pool, index), state_dir, tuple(env.items()), tuple(head_env.items()),
                    tuple(keys))


def plan_cells(cells: Sequence[Cell], report_dir: Path, subnet_pool: str = DEFAULT_SUBNET_POOL) -> tuple[CellPlan, ...]:
    prefix = f"{STATE_ROOT}-{matrix_token(report_dir)}"
    return tuple(plan_cell(c, i, state_prefix=prefix, subnet_pool=subnet_pool) for i, c in enumerate(cells, 1))


def _nested(key: str, value: object) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], more: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in more.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) else value
    return out


def cell_config(plan: CellPlan, base_file: str | Path | None) -> StackConfig:
    """The stack config the cell runs: the base file over the shipped defaults, then the cell's choices. A
    ConfigError (naming the key) when they do not make a stack."""
    base = load_config(base_file)
    overrides: dict[str, Any] = {"network": {"subnet": plan.subnet, "state_dir": plan.state_dir}}
    if plan.gcs:
        on = plan.gcs == "redis"
        overrides = _merge(overrides, {"redis": {"enabled": on}, "gcs": {"gcs_ft": on}})
    # a group's env replaces the base's as a whole (stack.config's merge): carry the base's over
    overrides["head"] = {"env": {**base.head.env, **dict(plan.env), **dict(plan.head_env)}}
    overrides["workers"] = {"env": {**base.workers.env, **dict(plan.env)}}
    for key, value in plan.keys:
        overrides = _merge(overrides, _nested(key, value))
    return load_config(base_file, overrides)


# --- a cell's own TOML ---------------------------------------------------------------------------------------

def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_string(key)


def _toml_string(text: str) -> str:
    # JSON's escapes are TOML's basic-string escapes; TOML also wants DEL escaped. Non-ASCII as it is: JSON would
    # write a character beyond the BMP as two surrogate escapes, which TOML refuses (not scalar values)
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        pairs = (f"{_toml_key(str(k))} = {toml_value(v)}" for k, v in value.items() if v is not None)
        return "{" + ", ".join(pairs) + "}"
    raise TypeError(f"no TOML for {type(value).__name__}")


def to_toml(data: Mapping[str, Any], table: Callable[[tuple[str, ...]], bool] = lambda path: True) -> str:
    """A TOML document of nested tables, plain values and lists; ``table(path)`` says which mappings get a
    ``[header]`` of their own (the others are written inline). tomllib reads it back to ``data`` (None values left
    out: TOML has no null)."""
    out: list[str] = []

    def write(path: tuple[str, ...], obj: Mapping[str, Any]) -> None:
        items = [(str(k), v) for k, v in obj.items() if v is not None]
        own = {k for k, v in items if isinstance(v, Mapping) and table((*path, k))}
        if path:
            out.append(f"\n[{'.'.join(_toml_key(p) for p in path)}]")
        out.extend(f"{_toml_key(k)} = {toml_value(v)}" for k, v in items if k not in own)
        for key, value in items:
            if key in own:
                write((*path, key), value)

    write((), data)
    return "\n".join(out).lstrip("\n") + "\n"


def _sections(model: type[BaseModel], path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """The paths of a model's sections (its fields that are models themselves): [tables] in its TOML file."""
    found = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found |= {(*path, name)} | _sections(annotation, (*path, name))
    return found


STACK_SECTIONS = _sections(StackConfig)  # [network], [app.traffic.request], ...; env, headers, resources inline


def config_toml(config: StackConfig, plan: CellPlan, base_file: str | Path | None) -> str:
    header = [f"# Matrix cell {plan.id}: {base_file or 'the shipped cluster/local.toml'} with this cell's choices,",
              "# every key spelled out (written by `serve-chaos matrix`; docs/matrix.md). What the cell sets:",
              *(f"#   {line}" for line in plan.settings())]
    body = to_toml(config.model_dump(mode="json", exclude={"base_dir"}, exclude_none=True), STACK_SECTIONS.__contains__)
    return "\n".join(header) + "\n\n" + body


def write_cell_config(path: Path, config: StackConfig, plan: CellPlan, base_file: str | Path | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_toml(config, plan, base_file))
    return path


IMAGE_TAG = re.compile(r"^(?P<repo>.+):(?P<version>\d+\.\d+\.\d+)(?P<suffix>[-.][0-9A-Za-z.-]+)?$")


def kube_image(ray_image: str, version: str) -> str:
    """The image of Ray ``version`` named like the base settings' (``rayproject/ray:2.60.0-py311`` →
    ``rayproject/ray:2.59.0-py311``)."""
    match = IMAGE_TAG.match(ray_image)
    if match is None:
        raise AxisError(f"kube settings' ray_image {ray_image!r} has no Ray version in its tag: cannot name the image "
                        f"of Ray {version}")
    return f"{match['repo']}:{version}{match['suffix'] or ''}"


def kube_overlay(ray_image: str, version: str, base: Mapping[str, Any] | None = None) -> str:
    """A cell's kube settings: the user's (``--kube-config``, read as TOML) with Ray ``version``'s image."""
    data = _merge(dict(base or {}), {"kube": {"ray_image": kube_image(ray_image, version)}})
    return f"# Matrix cell: Ray {version}'s image (written by `serve-chaos matrix`)\n" + to_toml(data)


def backend_problem(plan: CellPlan, backend: str) -> str:
    """Why this cell cannot run on ``backend`` ("" when it can)."""
    if backend != "local" and plan.gcs == "rocksdb":
        return ("gcs rocksdb on Kubernetes needs the head's RocksDB on a volume that outlives the pod, which the "
                "harness's RayService does not mount: not supported on the kind/kube backends")
    return ""


# --- budgets that differ per cell -----------------------------------------------------------------------------

@dataclass(frozen=True)
class BudgetChange:
    """A budget a cell's budgets file sets otherwise than the base one, and the measurement written beside it."""

    scenario: str
    key: str
    base: Scalar | None
    value: Scalar
    why: str  # the comment beside it: the measured figure that says why


@dataclass(frozen=True)
class CellBudgets:
    choice: Choice  # the cells with this choice run with this budgets file
    path: str
    changes: tuple[BudgetChange, ...]


MEASURED = re.compile(r"measured.*\d|\d.*measured", re.IGNORECASE)


def _comments(text: str) -> dict[tuple[str, str], str]:
    """(table, key) → the comment beside it: on its line, and on the comment-only lines that follow it."""
    found: dict[tuple[str, str], str] = {}
    table, last = "", None
    for raw in text.splitlines():
        line = raw.strip()
        if header := re.match(r"^\[([^\]]+)\]", line):
            table, last = header.group(1).strip(), None
        elif key := re.match(r"^([A-Za-z0-9_-]+)\s*=", line):
            last = (table, key.group(1))
            found[last] = raw.partition("#")[2].strip() if "#" in raw else ""
        elif line.startswith("#") and last is not None and raw[:1].isspace():
            found[last] = f"{found[last]} {line.lstrip('#').strip()}".strip()
        elif not line.startswith("#"):
            last = None
    return found


def budget_changes(choice: Choice, path: Path, base: Path = DEFAULT_BUDGETS) -> CellBudgets:
    """The budgets of ``path`` that differ from ``base``'s, each with the measured figure beside it; an AxisError
    names a budget that differs with no measurement written beside it."""
    try:
        text = path.read_text()
        cell = tomllib.loads(text)
        shipped = tomllib.loads(base.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise AxisError(f"--budgets-for {choice.text}: {path}: {exc}") from None
    comments = _comments(text)
    changes, unexplained = [], []
    for table, values in cell.items():
        if not isinstance(values, dict):
            raise AxisError(f"--budgets-for {choice.text}: {path}: {table!r} is not a [table] of budgets")
        for key, value in values.items():
            before = shipped.get(table, {}).get(key)
            if before == value:
                continue
            why = comments.get((table, key), "")
            if not MEASURED.search(why):
                unexplained.append(f"[{table}] {key} = {value!r} (base: {before!r})")
            changes.append(BudgetChange(table, key, before, value, why))
    if unexplained:
        raise AxisError(f"--budgets-for {choice.text}: {path}: a budget may differ per cell only where a measured "
                        f"figure says why, written beside it (e.g. `max_outage_s = 2.0  # measured worst 1.6 s on "
                        f"Ray 2.59.0`); without one: {'; '.join(unexplained)}")
    return CellBudgets(choice, str(path), tuple(changes))


def parse_budgets_for(spec: str, axes: Sequence[Axis]) -> tuple[Choice, Path]:
    """``AXIS=VALUE:FILE``: the cells with that choice run with that budgets file."""
    choice_text, sep, file = spec.partition(":")
    axis, eq, value = choice_text.partition("=")
    if not sep or not eq or not file:
        raise AxisError(f"--budgets-for {spec!r}: expected AXIS=VALUE:FILE, e.g. ray=2.59.0:budgets-2.59.toml")
    found = next((a for a in axes if a.name == axis), None)
    if found is None or value not in found.values:
        raise AxisError(f"--budgets-for {spec!r}: no axis value {axis}={value} in this matrix "
                        f"(axes: {', '.join(a.spec for a in axes)})")
    return Choice(axis, value), Path(file)


def budgets_of(plan: CellPlan, budgets: Iterable[CellBudgets]) -> CellBudgets | None:
    mine = [b for b in budgets if plan.cell.value(b.choice.axis) == b.choice.value]
    if len(mine) > 1:
        raise AxisError(f"cell {plan.id} has {len(mine)} budgets files ({', '.join(b.choice.text for b in mine)}): "
                        "give one per cell")
    return mine[0] if mine else None


# --- the record of a matrix run (matrix.json) -------------------------------------------------------------------

class CellStatus(StrEnum):
    AS_EXPECTED = "as expected"  # pytest exited 0: every scenario passed, or failed only as a pinned known issue
    FAILED = "failed"  # pytest ran and did not exit 0
    NOT_RUN = "not run"  # it could not start: its Ray's venv, a prerequisite, its backend
    TIMED_OUT = "timed out"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class MatrixCell:
    """A cell as the record keeps it: its choices, what they set, where its files are."""

    id: str
    index: int
    choices: tuple[Choice, ...]
    settings: tuple[str, ...]
    stack_config: str  # relative to the matrix folder
    budgets: CellBudgets | None = None

    @property
    def cell(self) -> Cell:
        return Cell(self.choices)


@dataclass(frozen=True)
class CellRun:
    """How a cell ran."""

    cell_id: str
    status: CellStatus
    exit_code: int | None  # pytest's (None: it did not run, or was killed)
    seconds: float
    reason: str  # why it is not as expected ("" when it is)
    run_dir: str  # its pytest session's run folder, relative to the matrix folder ("" when none was written)
    python: str  # the interpreter it ran
    ray_version: str  # the Ray that interpreter has ("" when unknown)
    teardown: str  # what the teardown check after it found or did
    teardown_ok: bool

    @property
    def as_expected(self) -> bool:
        return self.status is CellStatus.AS_EXPECTED and self.teardown_ok


@dataclass(frozen=True)
class MatrixRecord:
    axes: tuple[Axis, ...]
    cells: tuple[MatrixCell, ...]
    baseline: str  # a cell id
    scenarios: tuple[str, ...]
    pytest_args: tuple[str, ...]
    backend: str
    base_config: str
    started: str
    runs: tuple[CellRun, ...] = ()  # in cell order, as far as the matrix got

    def run(self, cell_id: str) -> CellRun | None:
        return next((r for r in self.runs if r.cell_id == cell_id), None)

    def cell(self, cell_id: str) -> MatrixCell:
        return next(c for c in self.cells if c.id == cell_id)

    @property
    def as_expected(self) -> bool:
        return len(self.runs) == len(self.cells) and all(r.as_expected for r in self.runs)

    def to_json(self) -> dict:
        def choices(cs: Iterable[Choice]) -> list[dict]:
            return [{"axis": c.axis, "value": c.value} for c in cs]

        def budgets(b: CellBudgets | None) -> dict | None:
            return None if b is None else {
                "choice": {"axis": b.choice.axis, "value": b.choice.value}, "path": b.path,
                "changes": [{"scenario": c.scenario, "key": c.key, "base": c.base, "value": c.value, "why": c.why}
                            for c in b.changes]}

        return {
            "axes": [{"name": a.name, "values": list(a.values), "kind": str(a.kind)} for a in self.axes],
            "cells": [{"id": c.id, "index": c.index, "choices": choices(c.choices), "settings": list(c.settings),
                       "stack_config": c.stack_config, "budgets": budgets(c.budgets)} for c in self.cells],
            "baseline": self.baseline, "scenarios": list(self.scenarios), "pytest_args": list(self.pytest_args),
            "backend": self.backend, "base_config": self.base_config, "started": self.started,
            "runs": [{"cell_id": r.cell_id, "status": str(r.status), "exit_code": r.exit_code,
                      "seconds": round(r.seconds, 3), "reason": r.reason, "run_dir": r.run_dir, "python": r.python,
                      "ray_version": r.ray_version, "teardown": r.teardown, "teardown_ok": r.teardown_ok,
                      "as_expected": r.as_expected} for r in self.runs],
        }


class MatrixFileError(ValueError):
    """A matrix.json that cannot be read."""


def _choices(objs: Iterable[Mapping]) -> tuple[Choice, ...]:
    return tuple(Choice(str(o["axis"]), str(o["value"])) for o in objs)


def record_from_json(obj: Mapping) -> MatrixRecord:
    def budgets(b: Mapping | None) -> CellBudgets | None:
        if not b:
            return None
        return CellBudgets(Choice(str(b["choice"]["axis"]), str(b["choice"]["value"])), str(b["path"]),
                           tuple(BudgetChange(str(c["scenario"]), str(c["key"]), c.get("base"), c["value"],
                                              str(c.get("why", ""))) for c in b.get("changes") or ()))

    return MatrixRecord(
        axes=tuple(Axis(str(a["name"]), tuple(str(v) for v in a["values"])) for a in obj["axes"]),
        cells=tuple(MatrixCell(str(c["id"]), int(c["index"]), _choices(c["choices"]),
                               tuple(str(s) for s in c.get("settings") or ()), str(c.get("stack_config", "")),
                               budgets(c.get("budgets"))) for c in obj["cells"]),
        baseline=str(obj["baseline"]), scenarios=tuple(str(s) for s in obj.get("scenarios") or ()),
        pytest_args=tuple(str(s) for s in obj.get("pytest_args") or ()), backend=str(obj.get("backend", "local")),
        base_config=str(obj.get("base_config", "")), started=str(obj.get("started", "")),
        runs=tuple(CellRun(str(r["cell_id"]), CellStatus(r["status"]),
                           None if r.get("exit_code") is None else int(r["exit_code"]), float(r.get("seconds", 0.0)),
                           str(r.get("reason", "")), str(r.get("run_dir", "")), str(r.get("python", "")),
                           str(r.get("ray_version", "")), str(r.get("teardown", "")), bool(r.get("teardown_ok")))
                   for r in obj.get("runs") or ()),
    )


def write_record(folder: Path, record: MatrixRecord) -> Path:
    """Atomically, after every cell: a matrix stopped midway still has the record of the cells that ran."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MATRIX_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record.to_json(), indent=2) + "\n")
    tmp.replace(path)
    return path


def read_record(folder: Path) -> MatrixRecord:
    try:
        return record_from_json(json.loads((Path(folder) / MATRIX_FILE).read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MatrixFileError(f"{Path(folder) / MATRIX_FILE}: {type(exc).__name__}: {exc}") from None


def cell_run_dir(cell_dir: Path) -> Path | None:
    """The run folder a cell's pytest session wrote in the cell's own folder (its only folder; the newest if a
    session was run there again by hand), or None."""
    if not cell_dir.is_dir():
        return None
    runs = sorted(p for p in cell_dir.iterdir() if p.is_dir() and not p.is_symlink())
    return runs[-1] if runs else None
