"""Traffic against a real HTTP server on 127.0.0.1 whose misbehaviour is the ground truth.

No test sleeps: they wait for observed facts with ``wait_until``; the only pause is the server's own
outage window (``LoopbackServer.outage``), which is the fault itself. All traffic stays on loopback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.checkers.traffic import availability, longest_outage
from harness.history import ErrorKind, History, TrafficPhase
from harness.measures import outage_windows
from harness.stack.cluster import Endpoint
from harness.testing.loopback import LoopbackServer
from harness.traffic import (
    ALLOWED_NETWORKS_ENV,
    TRAFFIC_NICE,
    AnyOk,
    BodyJudgement,
    ExactBody,
    PidBody,
    Traffic,
    TrafficError,
    TrafficPlan,
    TrafficTargetRefused,
    check_from_json,
    check_target,
    check_to_json,
    parse_allowed_networks,
)
from harness.verdict import Status
from harness.waiting import wait_until

RATE = 20.0
INTERVAL = 1.0 / RATE


def traffic_to(server: LoopbackServer, tmp_path: Path, **overrides) -> Traffic:
    options = {"rate_per_endpoint": RATE, "timeout_s": 1.0, "duration_s": 6.0, "history_path": tmp_path / "h.jsonl"}
    options.update(overrides)
    return Traffic([Endpoint("loop", server.url)], **options)


def wait_for_successes(traffic: Traffic, count: int) -> None:
    wait_until(f"{count} successful requests", lambda: traffic.counts().ok >= count, timeout_s=15, interval_s=0.05,
               describe=lambda: f"counts: {traffic.counts()}")


# -- safety, plans, checks (no traffic) --------------------------------------------------------


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/", "http://127.9.9.9/", "http://[::1]:8000/", "http://localhost:8000/"])
def test_loopback_is_always_allowed(url: str):
    check_target(url)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://10.88.0.2:8000/", "neither loopback nor inside an allowed private network"),
        ("http://8.8.8.8/", "neither loopback"),
        ("http://example.com/", "is a name"),
        ("ftp://127.0.0.1/", "only http and https"),
    ],
)
def test_other_hosts_are_refused_with_the_reason(url: str, why: str):
    with pytest.raises(TrafficTargetRefused, match=why):
        check_target(url)


def test_private_networks_passed_explicitly_or_by_environment_are_allowed(monkeypatch: pytest.MonkeyPatch):
    check_target("http://10.88.0.2:8000/", parse_allowed_networks(["10.88.0.0/24"]))
    with pytest.raises(TrafficTargetRefused):
        check_target("http://10.88.1.2:8000/", parse_allowed_networks(["10.88.0.0/24"]))
    monkeypatch.setenv(ALLOWED_NETWORKS_ENV, "10.88.0.0/24, 192.168.7.0/24")
    assert [str(n) for n in parse_allowed_networks()] == ["10.88.0.0/24", "192.168.7.0/24"]
    for public in (["8.8.8.0/24"], ["0.0.0.0/0"], ["not-a-net"]):
        with pytest.raises(TrafficTargetRefused):
            parse_allowed_networks(public)


def test_traffic_refuses_a_public_target_before_starting_anything(tmp_path: Path):
    with pytest.raises(TrafficTargetRefused):
        Traffic([Endpoint("x", "http://1.1.1.1/")], rate_per_endpoint=1, timeout_s=1, duration_s=1,
                history_path=tmp_path / "h.jsonl")
    assert not (tmp_path / "h.jsonl").exists()


def test_plans_validate_and_round_trip():
    plan = TrafficPlan("id", (Endpoint("a", "http://127.0.0.1:1/"),), 10.0, 2.0, 5.0, ExactBody("hi"), "/tmp/h")
    assert TrafficPlan.from_json(plan.to_json()) == plan
    assert plan.interval_s == pytest.approx(0.1) and plan.connections_per_endpoint == 32
    with pytest.raises(ValueError, match="rate_per_endpoint must be positive"):
        TrafficPlan("id", plan.endpoints, 0.0, 2.0, 5.0, AnyOk(), "/tmp/h")


def test_response_checks_judge_bodies_and_survive_the_trip_to_the_child():
    assert PidBody().judge(b"4242\n").pid == 4242
    assert not PidBody().judge(b"<html>").ok and not PidBody().judge(b"-3").ok
    assert AnyOk().judge(b"whatever").ok
    assert ExactBody("pong").judge(b"pong\n").ok and not ExactBody("pong").judge(b"ping").ok
    for check in (PidBody(), AnyOk(), ExactBody("pong")):
        assert check_from_json(check_to_json(check)) == check


# -- against a real server: ground truth -------------------------------------------------------


def test_an_outage_of_d_seconds_is_measured_within_two_request_intervals(tmp_path: Path):
    outage_s = 3.0
    with LoopbackServer() as server, traffic_to(server, tmp_path, duration_s=7.0) as traffic:
        wait_for_successes(traffic, 15)
        truth = server.outage(outage_s)
        traffic.wait()
    history = History.load(tmp_path / "h.jsonl")
    (window,) = outage_windows(history)
    assert truth.duration_s == pytest.approx(outage_s, abs=0.1)
    assert abs(window.duration_s - truth.duration_s) <= 2 * INTERVAL, (window, truth)
    assert abs(window.start - truth.start) <= 2 * INTERVAL and abs(window.end - truth.end) <= 2 * INTERVAL
    failures = Counter(r.error for r in history.requests if not r.ok)
    assert set(failures) <= {ErrorKind.CONNECTION_REFUSED, ErrorKind.RESET}, failures
    assert failures[ErrorKind.CONNECTION_REFUSED] >= outage_s * RATE - 3
    verdict = longest_outage(history, max_outage_s=outage_s - 0.5)
    assert verdict.status is Status.FAIL and verdict.resolution_s == pytest.approx(INTERVAL)


def test_every_tenth_request_answered_503_gives_availability_point_nine(tmp_path: Path):
    with LoopbackServer(fail_every=10) as server, traffic_to(server, tmp_path, rate_per_endpoint=50, duration_s=4.0) as traffic:
        traffic.wait()
    history = History.load(tmp_path / "h.jsonl")
    verdict = availability(history, min_availability=0.85)
    assert verdict.status is Status.PASS
    assert verdict.figures["availability"] == pytest.approx(0.9, abs=0.01)
    assert verdict.figures["requests"] == pytest.approx(200, abs=2)
    errors = Counter(r.error for r in history.requests)
    assert errors[ErrorKind.HTTP_5XX] == server.failed_503 and set(errors) == {ErrorKind.OK, ErrorKind.HTTP_5XX}
    assert {r.status for r in history.requests if not r.ok} == {503}
    assert {r.pid for r in history.requests if r.ok} == {os.getpid()}  # the server thread's PID, parsed


def test_responses_stalled_past_the_client_timeout_count_as_timeouts(tmp_path: Path):
    timeout_s = 0.5
    with LoopbackServer() as server, traffic_to(server, tmp_path, timeout_s=timeout_s, duration_s=4.0) as traffic:
        wait_for_successes(traffic, 10)
        stall = server.stall(window_s=1.0, delay_s=3 * timeout_s)
        traffic.wait()
    history = History.load(tmp_path / "h.jsonl")
    timeouts = [r for r in history.requests if r.error is ErrorKind.TIMEOUT]
    assert len(timeouts) == server.stalled
    assert server.stalled >= RATE * 1.0 - 2  # open loop: sends went on at full rate while nothing answered
    assert all(not r.ok for r in history.requests if stall.start <= r.t_mono < stall.end - 0.01)
    assert {r.error for r in history.requests if not r.ok} == {ErrorKind.TIMEOUT}
    assert all(timeout_s <= r.latency_s < timeout_s + 0.3 for r in timeouts)
    assert history.requests[-1].ok  # the connections recovered after the stall


# -- lifecycle ---------------------------------------------------------------------------------


def test_traffic_stops_by_itself_at_its_duration_on_its_open_loop_schedule(tmp_path: Path):
    with LoopbackServer() as server:
        traffic = traffic_to(server, tmp_path, duration_s=2.0).start()
        counts = traffic.wait()
    history = History.load(tmp_path / "h.jsonl")
    started, finished = history.traffic
    assert (started.phase, finished.phase) == (TrafficPhase.STARTED, TrafficPhase.FINISHED)
    assert counts.total == len(history.requests) == 40
    sends = [r.t_mono for r in history.requests]
    assert sends[-1] < started.t_mono + 2.0 + INTERVAL
    assert all(abs(t - sends[0] - i * INTERVAL) < 0.25 for i, t in enumerate(sends))  # a fixed schedule
    assert "abandoned 0 in flight" in finished.detail


def test_stop_is_immediate_even_with_requests_in_flight(tmp_path: Path):
    with LoopbackServer() as server:
        with traffic_to(server, tmp_path, duration_s=600.0, timeout_s=30.0) as traffic:
            wait_for_successes(traffic, 5)
            server.stall(window_s=600.0, delay_s=600.0)  # nothing answers from now on
            wait_until("requests in flight", lambda: server.stalled >= 3, timeout_s=5, interval_s=0.05)
            began = time.monotonic()
        stop_took = time.monotonic() - began
        assert not traffic.running
    assert stop_took < 3.0
    history = History.load(tmp_path / "h.jsonl")
    (_, stopped) = history.traffic
    assert stopped.phase is TrafficPhase.STOPPED and stopped.abandoned and stopped.abandoned >= 3, stopped
    # the abandoned requests are in the history, at their real send times, with no outcome
    abandoned = [r for r in history.requests if r.error is ErrorKind.ABANDONED]
    assert len(abandoned) == stopped.abandoned and not any(r.observed for r in abandoned)
    assert stopped.sent == stopped.recorded + stopped.abandoned == len(history.requests)
    assert stopped.sending_ended is not None and all(r.t_mono <= stopped.sending_ended for r in history.requests)


def test_finish_drains_requests_in_flight_so_the_history_holds_every_request_sent(tmp_path: Path):
    with LoopbackServer() as server:
        with traffic_to(server, tmp_path, duration_s=600.0, timeout_s=2.0) as traffic:
            wait_for_successes(traffic, 5)
            server.stall(window_s=600.0, delay_s=0.8)  # every answer from now on comes 0.8 s late
            wait_until("requests in flight", lambda: server.stalled >= 3, timeout_s=5, interval_s=0.05)
            traffic.finish()
            assert not traffic.running
    history = History.load(tmp_path / "h.jsonl")
    (_, finished) = history.traffic
    assert finished.phase is TrafficPhase.STOPPED and finished.abandoned == 0, finished
    assert len(history.requests) == finished.sent == finished.recorded and history.requests[-1].ok  # late answers recorded


def _stopped(pid: int) -> bool:
    """The process is in the stopped state (SIGSTOP has landed)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def test_a_stalled_generator_cannot_hide_an_outage(tmp_path: Path):
    """Issue 12's reproduction: the server answers 503 for 2 s in the middle of an 8 s run at 50 req/s while the
    traffic child is SIGSTOPped for exactly those 2 s. No request reached the server while it failed, and the
    backlog was sent after it recovered: ``verdict --max-outage 0.5`` must not pass; it is UNKNOWN (exit 2),
    naming the gap, where it was and how long."""
    path = tmp_path / "h.jsonl"
    with LoopbackServer() as server, traffic_to(server, tmp_path, rate_per_endpoint=50, duration_s=8.0,
                                                timeout_s=2.0) as traffic:
        wait_for_successes(traffic, 100)  # 2 s of a healthy server
        assert traffic.pid is not None
        os.kill(traffic.pid, signal.SIGSTOP)
        try:
            wait_until("SIGSTOP to land on the traffic child", lambda: _stopped(traffic.pid), timeout_s=1.0,
                       interval_s=0.005)
            truth = server.fail_for(2.0)
        finally:
            os.kill(traffic.pid, signal.SIGCONT)
        traffic.wait()
    assert server.failed_503 == 0  # the truth: the outage was real, and no request saw it
    history = History.load(path)
    backlog = [r for r in history.requests if r.lag_s > 0.2]
    assert len(backlog) >= 85  # about 90 requests were due more than 0.2 s before the child went on ...
    assert all(r.t_mono >= truth.end for r in backlog)  # ... and are judged when they were really sent: after

    cli = [sys.executable, "-m", "harness", "verdict", str(path), "--max-outage", "0.5"]
    text = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert text.returncode == 2, text.stdout + text.stderr
    assert text.stdout.startswith("UNKNOWN"), text.stdout
    assert "no request was observed for 2." in text.stdout and "longer than the 0.5s the budget can tolerate" in text.stdout
    as_json = subprocess.run([*cli, "--json"], capture_output=True, text=True, timeout=60)
    assert as_json.returncode == 2
    out = json.loads(as_json.stdout)
    resolution = out["resolution"]
    assert out["status"] == "unknown" and resolution["planned_interval_s"] == pytest.approx(0.02)
    assert resolution["max_gap_s"] == pytest.approx(truth.duration_s, abs=0.1)
    origin = history.origin
    assert resolution["gap"]["from_s"] <= truth.start - origin + 0.05 and resolution["gap"]["to_s"] >= truth.end - origin
    assert resolution["max_lag_s"] == pytest.approx(truth.duration_s, abs=0.1)
    statuses = {v["name"]: v["status"] for v in out["verdicts"]}
    assert statuses == {"availability": "unknown", "availability_retry_3x_exponential": "unknown",
                        "longest_outage": "unknown"}, out["verdicts"]


@dataclass(frozen=True)
class CheckTheChildCannotImport:
    def judge(self, body: bytes) -> BodyJudgement:
        return BodyJudgement(True)


def test_a_child_that_cannot_start_is_reported_with_its_error(tmp_path: Path):
    with LoopbackServer() as server:
        traffic = traffic_to(server, tmp_path, check=CheckTheChildCannotImport())
        with pytest.raises(TrafficError, match="not started"):
            traffic.stop()
        with pytest.raises(TrafficError, match="exited with 1 before starting(.|\n)*ModuleNotFoundError"):
            traffic.start()
        assert not traffic.running


def test_the_traffic_child_has_precedence_over_the_stack_it_measures(tmp_path: Path):
    with LoopbackServer() as server, traffic_to(server, tmp_path, duration_s=1.0) as traffic:
        assert traffic.pid is not None
        expected = TRAFFIC_NICE if os.geteuid() == 0 else os.getpriority(os.PRIO_PROCESS, 0)
        assert traffic.nice == expected == os.getpriority(os.PRIO_PROCESS, traffic.pid)
        autogroup = Path(f"/proc/{traffic.pid}/autogroup")  # the session's group, when the kernel groups by session
        if os.geteuid() == 0 and autogroup.exists():
            assert autogroup.read_text().split()[-1] == str(TRAFFIC_NICE), autogroup.read_text()
        traffic.wait()


def test_the_harness_process_never_imports_locust(tmp_path: Path):
    with LoopbackServer() as server, traffic_to(server, tmp_path, duration_s=1.0) as traffic:
        traffic.wait()
    assert "locust" not in sys.modules and "harness.traffic_worker" not in sys.modules
