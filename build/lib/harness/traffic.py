"""Traffic: open-loop, constant-rate HTTP load on chosen endpoints; every request becomes a record.

The load runs in a child process (``python -m harness.traffic_worker``) built on locust, because
importing locust monkey-patches the whole process with gevent: the harness and pytest never import
it. The child appends every request to the History file as it completes; this side only starts it,
reads progress from that file, and stops it.

    with Traffic([Endpoint("head", "http://127.0.0.1:8000/")], rate_per_endpoint=20, timeout_s=2,
                 duration_s=600, history_path=run_dir / "history.jsonl") as traffic:
        ...                      # inject, confirm, recover
        traffic.counts()         # progress so far
    # leaving the block stops it at once; unless stopped, it ends by itself after duration_s

Safety: traffic goes only to loopback (127.0.0.0/8, ::1, ``localhost``) or to addresses inside
private networks passed explicitly (``allowed_networks`` or the environment variable
``HARNESS_TRAFFIC_ALLOWED_NETWORKS``, comma-separated CIDRs): the bridge subnets of the network
namespaces the harness made itself. Anything else is refused before a single request is sent.
"""

from __future__ import annotations

import dataclasses
import importlib
import ipaddress
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol, runtime_checkable
from urllib.parse import urlsplit

from harness.history import HistoryTail, RequestRecord, TrafficMark, TrafficPhase
from harness.stack.cluster import Endpoint
from harness.stack.config import CheckConfig, ConfigError, RequestConfig
from harness.stack.health import join_path
from harness.waiting import wait_until

ALLOWED_NETWORKS_ENV = "HARNESS_TRAFFIC_ALLOWED_NETWORKS"
STOP_GRACE_S = 10.0  # how long the child may take to stop when asked before it is killed
# The traffic child's niceness: it must not be starved by the stack it measures (a stalled generator is a hole
# in the evidence, judged UNKNOWN). Negative values need root (CAP_SYS_NICE); without it the child runs at 0.
TRAFFIC_NICE = -10
MAX_CONNECTIONS_PER_ENDPOINT = 512

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrafficTargetRefused(ValueError):
    """Traffic was asked to go somewhere other than loopback or an allowed private network."""


class TrafficError(RuntimeError):
    """The traffic child failed to start or ended badly."""


# ---------------------------------------------------------------------------------------------
# Response checks: what a 2xx body must look like. Frozen dataclasses, so the child can rebuild them.


@dataclass(frozen=True)
class BodyJudgement:
    ok: bool
    pid: int | None = None
    detail: str = ""


@runtime_checkable
class ResponseCheck(Protocol):
    """Judges the body of a 2xx response. Implementations are frozen dataclasses importable by path."""

    def judge(self, body: bytes) -> BodyJudgement: ...


@dataclass(frozen=True)
class AnyOk:
    """Any 2xx is a success."""

    def judge(self, body: bytes) -> BodyJudgement:
        return BodyJudgement(True)


@dataclass(frozen=True)
class PidBody:
    """The guide's SleepyPid app: the body is the replica's PID, an integer."""

    def judge(self, body: bytes) -> BodyJudgement:
        try:
            pid = int(body.strip())
        except ValueError:
            return BodyJudgement(False, detail=f"expected a PID, got {body[:40]!r}")
        if pid <= 0:
            return BodyJudgement(False, detail=f"expected a PID, got {pid}")
        return BodyJudgement(True, pid=pid)


@dataclass(frozen=True)
class ExactBody:
    """The body must be exactly this text (surrounding whitespace ignored)."""

    text: str

    def judge(self, body: bytes) -> BodyJudgement:
        if body.strip() == self.text.strip().encode():
            return BodyJudgement(True)
        return BodyJudgement(False, detail=f"expected {self.text[:40]!r}, got {body[:40]!r}")


@dataclass(frozen=True)
class JsonField:
    """The body is JSON with ``field`` (a dotted path) present, equal to ``equals`` (as text) when given."""

    field: str
    equals: str | None = None

    def judge(self, body: bytes) -> BodyJudgement:
        try:
            value: object = json.loads(body)
        except ValueError:
            return BodyJudgement(False, detail=f"expected JSON with {self.field!r}, got {body[:40]!r}")
        for part in self.field.split("."):
            if not isinstance(value, dict) or part not in value:
                return BodyJudgement(False, detail=f"no field {self.field!r} in {body[:60]!r}")
            value = value[part]
        if self.equals is not None and str(value) != self.equals:
            return BodyJudgement(False, detail=f"{self.field} is {str(value)[:40]!r}, expected {self.equals!r}")
        return BodyJudgement(True)


def response_check(spec: CheckConfig) -> ResponseCheck:
    """The body check a stack config's ``[app.traffic.check]`` names."""
    match spec.kind:
        case "any_2xx":
            return AnyOk()
        case "pid":
            return PidBody()
        case "exact":
            return ExactBody(spec.text)
        case "json_field":
            return JsonField(spec.field, spec.equals)
        case "class":
            try:
                return check_from_json({"class": spec.class_path, "fields": {}})
            except (ImportError, AttributeError, TypeError) as exc:
                raise ConfigError(f"key 'app.traffic.check.class_path': {spec.class_path!r} is not a response "
                                  f"check: {type(exc).__name__}: {exc}") from None
    raise ConfigError(f"key 'app.traffic.check.kind': {spec.kind!r}")


def check_name(check: ResponseCheck) -> str:
    fields = ", ".join(f"{k}={v!r}" for k, v in dataclasses.asdict(check).items())
    return f"{type(check).__name__}({fields})"


def check_to_json(check: ResponseCheck) -> dict:
    if not dataclasses.is_dataclass(check):
        raise TypeError(f"a response check must be a dataclass, got {type(check).__name__}")
    return {"class": f"{type(check).__module__}:{type(check).__qualname__}", "fields": dataclasses.asdict(check)}


def check_from_json(obj: dict) -> ResponseCheck:
    module, _, qualname = obj["class"].partition(":")
    cls = importlib.import_module(module)
    for part in qualname.split("."):
        cls = getattr(cls, part)
    check = cls(**obj["fields"])
    if not isinstance(check, ResponseCheck):
        raise TypeError(f"{obj['class']} is not a response check")
    return check


# ---------------------------------------------------------------------------------------------
# Safety: where traffic may go.


def parse_allowed_networks(networks: Iterable[str | IPNetwork] | None = None) -> tuple[IPNetwork, ...]:
    """The private networks traffic may target besides loopback: ``networks``, else the environment."""
    if networks is None:
        networks = [n for n in os.environ.get(ALLOWED_NETWORKS_ENV, "").split(",") if n.strip()]
    parsed = []
    for network in networks:
        try:
            net = ipaddress.ip_network(str(network).strip(), strict=False)
        except ValueError as exc:
            raise TrafficTargetRefused(f"not a network: {network!r} ({exc})") from None
        if not net.is_private or net.prefixlen == 0:
            raise TrafficTargetRefused(
                f"{net} is not a private network: traffic may only go to loopback or to the private "
                "networks of namespaces the harness made itself"
            )
        parsed.append(net)
    return tuple(parsed)


def check_target(url: str, networks: Sequence[IPNetwork] = ()) -> None:
    """Raise TrafficTargetRefused unless ``url`` is http(s) on loopback or inside ``networks``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise TrafficTargetRefused(f"{url}: only http and https URLs are supported")
    host = parts.hostname
    if host is None:
        raise TrafficTargetRefused(f"{url}: no host")
    if host == "localhost":
        return
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise TrafficTargetRefused(
            f"{url}: host {host!r} is a name; traffic goes only to loopback addresses, localhost, or "
            "addresses inside allowed private networks, given as IP addresses (names are not resolved)"
        ) from None
    if address.is_loopback or any(address in net for net in networks):
        return
    allowed = ", ".join(str(n) for n in networks) or "none"
    raise TrafficTargetRefused(
        f"{url}: {address} is neither loopback nor inside an allowed private network "
        f"(allowed networks: {allowed}; pass allowed_networks or set {ALLOWED_NETWORKS_ENV})"
    )


# ---------------------------------------------------------------------------------------------
# The plan the child runs.


@dataclass(frozen=True)
class TrafficPlan:
    traffic_id: str
    endpoints: tuple[Endpoint, ...]
    rate_per_endpoint: float  # requests per second to each endpoint
    timeout_s: float  # client timeout for the connect and for each socket read, as in ``requests``
    duration_s: float  # traffic stops by itself after this long
    check: ResponseCheck
    history_path: str
    allowed_networks: tuple[str, ...] = ()
    request: RequestConfig = RequestConfig()  # method, path (appended to each endpoint's URL), body, headers

    def url(self, endpoint: Endpoint) -> str:
        return join_path(endpoint.url, self.request.path)

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("traffic needs at least one endpoint")
        for name in ("rate_per_endpoint", "timeout_s", "duration_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        networks = parse_allowed_networks(self.allowed_networks)
        for endpoint in self.endpoints:
            check_target(endpoint.url, networks)

    @property
    def interval_s(self) -> float:
        return 1.0 / self.rate_per_endpoint

    @property
    def connections_per_endpoint(self) -> int:
        """Enough connections for every request that may be outstanding (rate x timeout), capped.

        Beyond the cap a request waits for a free connection; its latency includes that wait.
        """
        return min(MAX_CONNECTIONS_PER_ENDPOINT, max(4, int(self.rate_per_endpoint * self.timeout_s * 1.5) + 2))

    def mark(self, phase: TrafficPhase, detail: str = "") -> TrafficMark:
        return TrafficMark(
            time.monotonic(), time.time(), self.traffic_id, phase, self.endpoints, self.rate_per_endpoint,
            self.timeout_s, self.duration_s, check_name(self.check), detail,
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "traffic_id": self.traffic_id,
                "endpoints": [dataclasses.asdict(e) for e in self.endpoints],
                "rate_per_endpoint": self.rate_per_endpoint,
                "timeout_s": self.timeout_s,
                "duration_s": self.duration_s,
                "check": check_to_json(self.check),
                "history_path": self.history_path,
                "allowed_networks": list(self.allowed_networks),
                "request": self.request.model_dump(),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> TrafficPlan:
        obj = json.loads(text)
        return cls(
            traffic_id=obj["traffic_id"],
            endpoints=tuple(Endpoint(**e) for e in obj["endpoints"]),
            rate_per_endpoint=float(obj["rate_per_endpoint"]),
            timeout_s=float(obj["timeout_s"]),
            duration_s=float(obj["duration_s"]),
            check=check_from_json(obj["check"]),
            history_path=obj["history_path"],
            allowed_networks=tuple(obj["allowed_networks"]),
            request=RequestConfig(**obj.get("request", {})),
        )


@dataclass(frozen=True)
class TrafficCounts:
    ok: int
    failed: int

    @property
    def total(self) -> int:
        return self.ok + self.failed


def _raise_priority(pid: int) -> int:
    """Give our own traffic child precedence over the stack under test; returns the niceness it runs at.

    The child leads a session of its own (so that Ctrl-C reaches only the harness). With the kernel's
    autogroup scheduling (``/proc/sys/kernel/sched_autogroup_enabled``) every session is a group that gets its
    share whatever its members' niceness, and a process's niceness counts only inside its group: the group's
    own niceness is set too (``/proc/<pid>/autogroup``), or the child still stalls for up to a second when the
    Ray nodes' sessions are busy."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, TRAFFIC_NICE)
    except OSError:  # not root: it runs at the default priority, and a stall shows as a gap
        pass
    autogroup = Path(f"/proc/{pid}/autogroup")
    try:
        if autogroup.exists():
            autogroup.write_text(str(TRAFFIC_NICE))
    except OSError:  # not root, or no autogroup scheduling
        pass
    try:
        return os.getpriority(os.PRIO_PROCESS, pid)
    except OSError:
        return 0


def _child_environment() -> dict[str, str]:
    """This environment, with the harness importable in the child even when it is not installed."""
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


# ---------------------------------------------------------------------------------------------
# The handle scenarios hold.


class Traffic:
    """Open-loop traffic in a child process; a context manager that stops it on exit."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        rate_per_endpoint: float,
        timeout_s: float,
        duration_s: float,
        history_path: str | Path,
        check: ResponseCheck = PidBody(),
        request: RequestConfig = RequestConfig(),
        allowed_networks: Iterable[str] | None = None,
        ready_timeout_s: float = 60.0,
    ) -> None:
        networks = parse_allowed_networks(allowed_networks)
        self.plan = TrafficPlan(
            traffic_id=uuid.uuid4().hex[:12],
            endpoints=tuple(endpoints),
            rate_per_endpoint=rate_per_endpoint,
            timeout_s=timeout_s,
            duration_s=duration_s,
            check=check,
            history_path=str(Path(history_path).resolve()),
            allowed_networks=tuple(str(n) for n in networks),
            request=request,
        )
        self.ready_timeout_s = ready_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._tail: HistoryTail | None = None
        self._ok = 0
        self._failed = 0
        self._by_node: dict[str, TrafficCounts] = {}
        self._phases: list[TrafficPhase] = []
        self.started_mono: float | None = None
        self.nice: int | None = None  # the child's niceness once started

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Traffic:
        """Start the child and return once it has recorded that traffic started."""
        if self._process is not None:
            raise TrafficError("traffic already started")
        Path(self.plan.history_path).parent.mkdir(parents=True, exist_ok=True)
        Path(self.plan.history_path).touch()
        self._tail = HistoryTail(self.plan.history_path, from_end=True)
        self._stderr = tempfile.TemporaryFile(prefix="traffic-", suffix=".log")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "harness.traffic_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            env=_child_environment(),
            start_new_session=True,  # Ctrl-C reaches the harness, which stops the child itself
        )
        self.nice = _raise_priority(self._process.pid)
        assert self._process.stdin is not None
        self._process.stdin.write(self.plan.to_json().encode() + b"\n")
        self._process.stdin.flush()
        try:
            wait_until(
                f"traffic {self.plan.traffic_id} to start",
                self._started_or_exited,
                timeout_s=self.ready_timeout_s,
                interval_s=0.05,
                describe=self._stderr_tail,
            )
        except BaseException:
            self._terminate()
            raise
        if TrafficPhase.STARTED not in self._phases:
            raise TrafficError(
                f"traffic child exited with {self._process.returncode} before starting:\n{self._stderr_tail()}"
            )
        return self

    def finish(self) -> TrafficCounts:
        """Stop sending, let the requests in flight end (at most one client timeout), and return the final
        counts: the history then holds every request sent. Falls back to ``stop()`` if the child is gone."""
        process = self._require_process()
        if process.poll() is None and process.stdin is not None and not process.stdin.closed:
            try:
                process.stdin.write(b"finish\n")
                process.stdin.flush()
                process.wait(timeout=self.plan.timeout_s + STOP_GRACE_S + 1.0)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                pass
        return self.stop()

    def stop(self) -> TrafficCounts:
        """Stop at once (requests in flight are abandoned) and return the final counts."""
        process = self._process
        if process is None:
            raise TrafficError("traffic was not started")
        if process.stdin is not None and not process.stdin.closed:
            try:
                process.stdin.close()  # the child's signal to stop
            except BrokenPipeError:
                pass
        try:
            process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self._terminate()
            raise TrafficError(f"traffic child {process.pid} did not stop within {STOP_GRACE_S}s; killed it")
        self._check_exit()
        return self.counts()

    def wait(self, timeout_s: float | None = None) -> TrafficCounts:
        """Wait for the traffic to end by itself (its duration), then return the final counts."""
        process = self._require_process()
        if timeout_s is None:
            elapsed = time.monotonic() - (self.started_mono or time.monotonic())
            timeout_s = max(0.0, self.plan.duration_s - elapsed) + self.plan.timeout_s + STOP_GRACE_S
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            raise TrafficError(f"traffic did not end within {timeout_s:.0f}s; stopped it") from None
        self._check_exit()
        return self.counts()

    def poll(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the traffic to end by itself; True once it has ended."""
        try:
            self._require_process().wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True

    @property
    def pid(self) -> int | None:
        """The child's PID (for resource measurements), None before start."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def counts(self, nodes: Iterable[str] | None = None) -> TrafficCounts:
        """Requests recorded in the history since this traffic started (read from the file), of every endpoint
        or of the endpoints of ``nodes``.

        Exact when one traffic writes to a history file, which is how scenarios use it.
        """
        self._read_new()
        if nodes is None:
            return TrafficCounts(self._ok, self._failed)
        chosen = [self._by_node.get(n, TrafficCounts(0, 0)) for n in nodes]
        return TrafficCounts(sum(c.ok for c in chosen), sum(c.failed for c in chosen))

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._process is None:
            return
        if exc is None:
            self.stop()
        else:  # do not hide the error that brought us here
            try:
                self.stop()
            except TrafficError as stop_error:
                print(f"while handling {exc_type}: {stop_error}", file=sys.stderr)

    # -- internals ------------------------------------------------------------------------------

    def _require_process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise TrafficError("traffic was not started")
        return self._process

    def _read_new(self) -> None:
        if self._tail is None:
            return
        for record in self._tail.read_new():
            if isinstance(record, RequestRecord):
                was = self._by_node.get(record.node, TrafficCounts(0, 0))
                if record.ok:
                    self._ok += 1
                    self._by_node[record.node] = TrafficCounts(was.ok + 1, was.failed)
                else:
                    self._failed += 1
                    self._by_node[record.node] = TrafficCounts(was.ok, was.failed + 1)
            elif isinstance(record, TrafficMark) and record.traffic_id == self.plan.traffic_id:
                self._phases.append(record.phase)
                if record.phase is TrafficPhase.STARTED:
                    self.started_mono = record.t_mono

    def _started_or_exited(self) -> bool:
        self._read_new()
        return TrafficPhase.STARTED in self._phases or self._require_process().poll() is not None

    def _check_exit(self) -> None:
        process = self._require_process()
        if process.returncode != 0:
            raise TrafficError(f"traffic child exited with {process.returncode}:\n{self._stderr_tail()}")

    def _terminate(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()  # our own child, by its PID
            process.wait(timeout=STOP_GRACE_S)

    def _stderr_tail(self, limit: int = 4000) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - limit))
        return self._stderr.read().decode(errors="replace")
