"""The traffic child process: ``python -m harness.traffic_worker``, started by ``harness.traffic.Traffic``.

It reads a TrafficPlan (one JSON line) on stdin, then sends open-loop requests with locust's
``FastHttpSession``: request i to an endpoint is due at start + offset + i / rate and is sent in its
own greenlet, so a slow or stalled response never delays the next send. Locust's ``request`` event is
the one place every request is seen; its listener classifies the outcome and appends a RequestRecord
to the History at once.

It stops by itself at the plan's duration, or when the parent writes "finish" (``finish()``), waiting at
most one client timeout for the requests still in flight; and at once when stdin closes (the parent's
``stop()``, or the parent's death) or on SIGTERM. A request still in flight then is abandoned: it is recorded
with its real send time and the outcome ``abandoned`` (no outcome was observed), and counted in the final
mark, which also says when the sending ended.

This module imports locust, which monkey-patches the process with gevent: never import it from the
harness or from tests.
"""

from gevent import monkey

monkey.patch_all()

import dataclasses  # noqa: E402 - after the monkey patch, on purpose
import errno  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import gevent.pool  # noqa: E402
import gevent.socket  # noqa: E402
from geventhttpclient.response import HTTPConnectionClosed  # noqa: E402
from locust.contrib.fasthttp import FastHttpSession  # noqa: E402
from locust.env import Environment  # noqa: E402

from harness.history import ErrorKind, HistoryWriter, RequestRecord, TrafficPhase  # noqa: E402
from harness.stack.cluster import Endpoint  # noqa: E402
from harness.traffic import ResponseCheck, TrafficPlan  # noqa: E402

DRAIN_MARGIN_S = 0.5  # beyond the client timeout, how long the end waits for requests in flight


@dataclass(frozen=True)
class Outcome:
    error: ErrorKind
    status: int | None
    pid: int | None = None
    detail: str = ""


def _root_cause(exc: BaseException) -> BaseException:
    """geventhttpclient wraps transient errors in RetriesExceeded(original=...): unwrap them."""
    while getattr(exc, "original", None) is not None:
        exc = exc.original  # type: ignore[attr-defined]
    return exc


def _error_kind(exc: BaseException) -> ErrorKind:
    if isinstance(exc, ConnectionRefusedError):
        return ErrorKind.CONNECTION_REFUSED
    if isinstance(exc, (TimeoutError, gevent.Timeout)):
        return ErrorKind.TIMEOUT
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, HTTPConnectionClosed)):
        return ErrorKind.RESET
    if isinstance(exc, OSError) and exc.errno == errno.ETIMEDOUT:
        return ErrorKind.TIMEOUT
    return ErrorKind.OTHER


def classify(response: object, exception: BaseException | None, check: ResponseCheck) -> Outcome:
    """The outcome of one request, from what locust's request event carries."""
    if exception is not None:
        root = _root_cause(exception)
        code = getattr(root, "code", None) or getattr(response, "status_code", 0) or None
        if isinstance(code, int) and code >= 500:
            return Outcome(ErrorKind.HTTP_5XX, code)
        if isinstance(code, int) and code >= 400:
            return Outcome(ErrorKind.HTTP_4XX, code)
        return Outcome(_error_kind(root), code, detail=f"{type(root).__name__}: {root}"[:200])
    status = int(getattr(response, "status_code", 0)) or None
    if status is None or not 200 <= status < 300:
        return Outcome(ErrorKind.OTHER, status, detail=f"unexpected status {status}")
    judgement = check.judge(getattr(response, "content", None) or b"")
    if not judgement.ok:
        return Outcome(ErrorKind.WRONG_BODY, status, judgement.pid, judgement.detail)
    return Outcome(ErrorKind.OK, status, judgement.pid)


class Recorder:
    """Listens to locust's request event and appends one RequestRecord per request; knows which are in flight."""

    def __init__(self, check: ResponseCheck, writer: HistoryWriter) -> None:
        self.check = check
        self.writer = writer
        self.sent = 0
        self.recorded = 0
        self.abandoned = 0
        self.in_flight: dict[int, dict] = {}  # id(context) -> context, from send until recorded

    def sending(self, context: dict) -> None:
        self.in_flight[id(context)] = context

    def on_request(self, response: object, exception: BaseException | None, context: dict, response_time: float, **_: object) -> None:
        endpoint = context.get("endpoint")
        if not isinstance(endpoint, Endpoint):
            return  # not one of ours
        if self.in_flight.pop(id(context), None) is None:
            return  # already recorded as abandoned
        outcome = classify(response, exception, self.check)
        self.writer.append(
            RequestRecord(
                t_mono=context["t_mono"],
                t_wall=context["t_wall"],
                node=endpoint.node,
                endpoint=endpoint.url,
                latency_s=response_time / 1000.0,
                status=outcome.status,
                error=outcome.error,
                pid=outcome.pid,
                lag_s=context["lag_s"],
                detail=outcome.detail,
            )
        )
        self.recorded += 1

    def abandon_in_flight(self) -> int:
        """Record every request still in flight as abandoned (its send time is real; its outcome unknown)."""
        now = time.monotonic()
        records = []
        for context in sorted(self.in_flight.values(), key=lambda c: c["t_mono"]):
            endpoint = context["endpoint"]
            records.append(RequestRecord(
                t_mono=context["t_mono"], t_wall=context["t_wall"], node=endpoint.node, endpoint=endpoint.url,
                latency_s=now - context["t_mono"], status=None, error=ErrorKind.ABANDONED, lag_s=context["lag_s"],
                detail="in flight when traffic stopped"))
        self.in_flight.clear()
        if records:
            self.writer.append(*records)
        self.abandoned += len(records)
        return len(records)


def _send(session: FastHttpSession, plan: TrafficPlan, endpoint: Endpoint, due: float, recorder: Recorder) -> None:
    now = time.monotonic()
    context = {"endpoint": endpoint, "t_mono": now, "t_wall": time.time(), "lag_s": now - due}
    recorder.sending(context)
    request = plan.request
    session.request(request.method, plan.url(endpoint), data=request.body, headers=request.headers or None,
                    context=context)  # the request event records it


def _schedule(
    plan: TrafficPlan,
    endpoint: Endpoint,
    session: FastHttpSession,
    first_due: float,
    end: float,
    sending_over: gevent.event.Event,
    in_flight: gevent.pool.Group,
    recorder: Recorder,
) -> None:
    """Open loop: request i is due at first_due + i * interval, whatever the earlier ones are doing."""
    interval = plan.interval_s
    i = 0
    while (due := first_due + i * interval) < end:
        if sending_over.wait(max(0.0, due - time.monotonic())):
            return
        in_flight.spawn(_send, session, plan, endpoint, due, recorder)
        recorder.sent += 1
        i += 1


def run(plan: TrafficPlan, writer: HistoryWriter, stop: gevent.event.Event,
        finish: gevent.event.Event | None = None) -> None:
    """Send until the duration ends or ``finish`` is set (then drain what is in flight, up to one client
    timeout), or until ``stop`` is set (then abandon what is in flight)."""
    finish = finish or gevent.event.Event()
    sending_over = gevent.event.Event()
    gevent.spawn(lambda: (gevent.wait([stop, finish], count=1), sending_over.set()))
    environment = Environment()
    recorder = Recorder(plan.check, writer)
    environment.events.request.add_listener(recorder.on_request)
    sessions = [
        FastHttpSession(
            None,
            environment.events.request,
            None,
            max_retries=0,  # every attempt is a request of its own: the history sees each one
            max_redirects=0,  # a redirect could lead anywhere: never followed
            connection_timeout=plan.timeout_s,
            network_timeout=plan.timeout_s,
            concurrency=plan.connections_per_endpoint,
        )
        for _ in plan.endpoints
    ]
    for session in sessions:
        session.client.cookiejar = None  # every request stands alone: no cookie carries state between them
    in_flight = gevent.pool.Group()
    writer.append(plan.mark(TrafficPhase.STARTED))
    start = time.monotonic()
    end = start + plan.duration_s
    stagger = plan.interval_s / len(plan.endpoints)  # spread the endpoints' sends over one interval
    schedulers = [
        gevent.spawn(_schedule, plan, endpoint, session, start + k * stagger, end, sending_over, in_flight, recorder)
        for k, (endpoint, session) in enumerate(zip(plan.endpoints, sessions))
    ]
    gevent.joinall(schedulers)
    sending_ended = time.monotonic()
    if not stop.is_set():
        drained = gevent.spawn(in_flight.join)
        gevent.wait([stop, drained], count=1, timeout=plan.timeout_s + DRAIN_MARGIN_S)
        drained.kill(block=False)
    abandoned = recorder.abandon_in_flight()  # recorded first: a late event for them is ignored
    in_flight.kill(block=True, timeout=1.0)
    for session in sessions:
        session.client.close()
    phase = TrafficPhase.STOPPED if stop.is_set() or finish.is_set() else TrafficPhase.FINISHED
    writer.append(dataclasses.replace(
        plan.mark(phase, f"sent {recorder.sent}, recorded {recorder.recorded}, abandoned {abandoned} in flight"),
        sent=recorder.sent, recorded=recorder.recorded, abandoned=abandoned, sending_ended=sending_ended))


def _watch_parent(stop: gevent.event.Event, finish: gevent.event.Event) -> None:
    """Stdin closes when the parent calls stop() or dies: either way, stop. A line "finish" (the parent's
    finish()) ends the sending and drains the requests in flight."""
    fd = sys.stdin.fileno()
    while True:
        gevent.socket.wait_read(fd)
        data = os.read(fd, 4096)
        if not data:
            stop.set()
            return
        if b"finish" in data:
            finish.set()


def main() -> int:
    line = os.read(sys.stdin.fileno(), 1 << 20)
    while not line.endswith(b"\n"):
        more = os.read(sys.stdin.fileno(), 1 << 20)
        if not more:
            print("traffic worker: no plan on stdin", file=sys.stderr)
            return 2
        line += more
    plan = TrafficPlan.from_json(line.decode())  # validates the targets again, on this side
    stop = gevent.event.Event()
    finish = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    watcher = gevent.spawn(_watch_parent, stop, finish)
    with HistoryWriter(plan.history_path) as writer:
        run(plan, writer, stop, finish)
    watcher.kill(block=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
