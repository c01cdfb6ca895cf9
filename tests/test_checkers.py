"""Checkers on hand-built histories, and properties that hold for any history."""

from __future__ import annotations

import dataclasses
import functools

import pytest
from history_builders import event, request, steady, traffic_mark
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.checkers.traffic import (
    PidChange,
    availability,
    check_all,
    checker,
    latency,
    longest_outage,
    response_pids,
    standard_checks,
    time_to_recover,
)
from harness.history import ErrorKind, EventKind, History, HistoryWriter
from harness.measures import (
    ACROSS_ENDPOINTS,
    RETRY_3X_EXPONENTIAL,
    outage_windows,
    percentile,
    served,
)
from harness.verdict import GAP_SLACK_INTERVALS, Status, Verdict, combine

INTERVAL = 0.05


# -- availability ------------------------------------------------------------------------------


def test_availability_is_served_over_sent_and_every_endpoint_must_meet_the_budget():
    h = History.of(steady("a", 0, 1, 0.1, failing=(0.0, 0.1)) + steady("b", 0, 1, 0.1))
    verdict = availability(h, min_availability=0.9)
    assert verdict.status is Status.PASS
    assert verdict.figures["availability.a"] == pytest.approx(0.9)
    assert verdict.figures["availability.b"] == 1.0
    assert verdict.figures["availability"] == pytest.approx(0.95)
    assert (verdict.figures["requests"], verdict.figures["failures"]) == (20, 1)
    strict = availability(h, min_availability=0.95)
    assert strict.status is Status.FAIL  # overall 0.95 meets it, endpoint a (0.9) does not
    assert "budget >= 0.95" in strict.reason and "0.9000" in strict.reason


def test_retry_policy_serves_a_failure_when_the_same_endpoint_succeeds_within_the_horizon():
    horizon = RETRY_3X_EXPONENTIAL.horizon_s
    assert horizon == pytest.approx(3.5)
    requests = [
        request(0.0, error=ErrorKind.CONNECTION_REFUSED, latency_s=0.001),
        request(3.0),  # within 0.001 + 3.5 s: the first failure counts as served
        request(4.0, error=ErrorKind.TIMEOUT, latency_s=2.0),
        request(4.5, node="b"),  # another endpoint's success does not count
        request(9.6),  # 4.0 + 2.0 + 3.5 = 9.5 < 9.6: too late for the timeout at 4.0
        request(10.0, error=ErrorKind.HTTP_4XX),  # client errors are not retried
        request(10.1),
    ]
    assert served(requests, RETRY_3X_EXPONENTIAL) == (True, True, False, True, True, False, True)
    assert served(requests) == (False, True, False, True, True, False, True)
    h = History.of(requests)
    verdict = availability(h, min_availability=0.0, retry=RETRY_3X_EXPONENTIAL)
    assert verdict.name == "availability_retry_3x_exponential"
    assert verdict.figures["failures_retry_3x_exponential"] == 2


# -- outages -----------------------------------------------------------------------------------


def test_outage_runs_from_first_failure_to_next_success():
    h = History.of(steady("a", 0, 10, INTERVAL, failing=(3.0, 5.0)))
    (window,) = outage_windows(h)
    assert window.start == pytest.approx(3.0) and window.end == pytest.approx(5.0)
    assert window.failures == 40 and not window.open_ended
    verdict = longest_outage(h, max_outage_s=2.5)
    assert verdict.status is Status.PASS
    assert verdict.figures["longest_outage_s"] == pytest.approx(2.0)
    assert verdict.resolution_s == pytest.approx(INTERVAL)
    failed = longest_outage(h, max_outage_s=1.5)
    assert failed.status is Status.FAIL and "budget <= 1.5s" in failed.reason and "2.000s" in failed.reason


def test_an_outage_still_open_at_the_end_is_flagged_and_never_passes():
    h = History.of(steady("a", 0, 5, 0.5, failing=(3.0, 99.0)))
    (window,) = outage_windows(h)
    assert window.open_ended and window.start == 3.0 and window.end == 4.5
    assert longest_outage(h, max_outage_s=10).status is Status.UNKNOWN
    assert longest_outage(h, max_outage_s=1).status is Status.FAIL


def test_across_endpoints_an_outage_is_when_every_endpoint_fails():
    h = History.of(
        steady("a", 0, 10, 0.1, failing=(2.0, 6.0)) + steady("b", 0.05, 10, 0.1, failing=(4.0, 8.0))
    )
    windows = outage_windows(h, across_endpoints=True)
    assert {w.scope for w in windows} == {ACROSS_ENDPOINTS}
    across = max(windows, key=lambda w: w.duration_s)
    assert across.start == pytest.approx(4.0) and across.end == pytest.approx(6.0)  # a's first success
    # while only one endpoint fails, each failure is followed one stagger (0.05 s) later by a success
    assert all(w.duration_s == pytest.approx(0.05) for w in windows if w is not across)
    verdict = longest_outage(h, max_outage_s=3.0, across_endpoints=True)
    assert verdict.status is Status.PASS
    assert verdict.figures["longest_outage_s.a"] == pytest.approx(4.0)
    assert verdict.figures["longest_outage_across_endpoints_s"] == pytest.approx(2.0)
    assert longest_outage(h, max_outage_s=3.0).status is Status.FAIL  # per endpoint: 4 s


# -- recovery, latency, identities --------------------------------------------------------------


def test_time_to_recover_pairs_injection_and_recovery_of_the_same_fault_and_target():
    h = History.of([
        event(10.0, EventKind.INJECT), event(12.0, EventKind.TAKEN_EFFECT), event(25.0, EventKind.RECOVERED),
        event(30.0, EventKind.INJECT, "KillProxy", "worker1"), event(33.0, EventKind.RECOVERED, "KillProxy", "worker1"),
    ])
    verdict = time_to_recover(h, max_s=20)
    assert verdict.status is Status.PASS
    assert verdict.figures["time_to_recover_s.KillHead@head"] == pytest.approx(15.0)
    assert verdict.figures["time_to_recover_s"] == pytest.approx(15.0)
    assert time_to_recover(h, max_s=10).status is Status.FAIL
    assert time_to_recover(h, max_s=5, fault="KillProxy").status is Status.PASS


def test_a_fault_that_never_recovered_fails_and_no_fault_is_unknown():
    injected = History.of([event(1.0, EventKind.INJECT), event(2.0, EventKind.RECOVERED, target="elsewhere")])
    verdict = time_to_recover(injected, max_s=60)
    assert verdict.status is Status.FAIL and "no recovery recorded for KillHead@head" in verdict.reason
    assert time_to_recover(History(), max_s=60).status is Status.UNKNOWN


def test_latency_percentiles_by_nearest_rank():
    assert [percentile(range(1, 101), q) for q in (50, 95, 99, 100)] == [50, 95, 99, 100]
    h = History.of([request(i, latency_s=i / 1000) for i in range(1, 101)] + [request(200, error=ErrorKind.TIMEOUT, latency_s=9)])
    verdict = latency(h, max_p99_s=0.1)
    assert verdict.status is Status.PASS
    assert verdict.figures["latency_p50_s"] == pytest.approx(0.05)
    assert verdict.figures["latency_max_s"] == pytest.approx(0.1)  # failures are not latencies
    assert latency(h, max_p99_s=0.05).status is Status.FAIL


def pid_history(pid_after: int) -> History:
    return History.of(
        steady("a", 0, 5, 0.5, pid=100) + steady("b", 0.25, 5, 0.5, pid=200)
        + steady("a", 10, 15, 0.5, pid=pid_after) + steady("b", 10.25, 15, 0.5, pid=200)
        + [event(5.0, EventKind.INJECT, "KillReplica", "a"), event(10.0, EventKind.RECOVERED, "KillReplica", "a")]
    )


def test_response_pids_before_and_after_a_fault():
    same, replaced = pid_history(100), pid_history(101)
    assert response_pids(same, fault="KillReplica", expect=PidChange.UNCHANGED).status is Status.PASS
    assert response_pids(same, fault="KillReplica", expect=PidChange.CHANGED).status is Status.FAIL
    changed = response_pids(replaced, fault="KillReplica", expect=PidChange.CHANGED)
    assert changed.status is Status.PASS and changed.figures["new_pids_after"] == 1 and "[101]" in changed.reason
    assert response_pids(replaced, fault="KillReplica", expect=PidChange.UNCHANGED).status is Status.FAIL
    assert response_pids(same, fault="KillHead", expect=PidChange.UNCHANGED).status is Status.UNKNOWN


# -- composition and safety ---------------------------------------------------------------------


def test_a_checker_that_raises_is_unknown_never_pass():
    @checker
    def broken(history: History) -> Verdict:
        raise ZeroDivisionError("no luck")

    @checker
    def sloppy(history: History) -> Verdict:
        return True  # type: ignore[return-value]

    assert broken(History()).status is Status.UNKNOWN and "ZeroDivisionError: no luck" in broken(History()).reason
    assert sloppy(History()).status is Status.UNKNOWN
    combined = check_all(History.of([request(0.0)]), lambda h: 1 / 0, functools.partial(availability, min_availability=1))
    assert combined.status is Status.UNKNOWN and len(combined.parts) == 2


@pytest.mark.parametrize(
    "check",
    [
        functools.partial(availability, min_availability=0.0),
        functools.partial(availability, min_availability=0.0, retry=RETRY_3X_EXPONENTIAL),
        functools.partial(longest_outage, max_outage_s=1e9),
        functools.partial(latency, max_p99_s=1e9),
        functools.partial(time_to_recover, max_s=1e9),
        functools.partial(response_pids, fault="KillHead", expect=PidChange.UNCHANGED),
    ],
)
def test_an_empty_history_is_unknown_even_with_the_loosest_budget(check):
    verdict = check(History())
    assert verdict.status is Status.UNKNOWN and "nothing observed" in verdict.reason


def test_combine_fail_beats_unknown_beats_pass():
    def v(status: Status, **figures: float) -> Verdict:
        return Verdict(str(status), status, "", figures)

    assert combine("x", [v(Status.PASS), v(Status.UNKNOWN), v(Status.FAIL)]).status is Status.FAIL
    assert combine("x", [v(Status.PASS), v(Status.UNKNOWN)]).status is Status.UNKNOWN
    assert combine("x", [v(Status.PASS), v(Status.PASS)]).status is Status.PASS
    assert combine("x", []).status is Status.UNKNOWN
    clash = combine("x", [v(Status.PASS, n=1), v(Status.FAIL, n=2)])
    assert dict(clash.figures) == {"n": 1, "fail.n": 2}


def test_verdict_figures_cannot_be_changed():
    verdict = Verdict("v", Status.PASS, "", {"a": 1.0})
    with pytest.raises(TypeError):
        verdict.figures["a"] = 2.0  # type: ignore[index]


# -- properties ---------------------------------------------------------------------------------

OUTCOMES = st.sampled_from([ErrorKind.OK, ErrorKind.OK, ErrorKind.OK, ErrorKind.CONNECTION_REFUSED, ErrorKind.TIMEOUT, ErrorKind.HTTP_5XX])


@st.composite
def histories(draw) -> History:
    records = []
    for node in draw(st.lists(st.sampled_from("abc"), min_size=1, max_size=3, unique=True)):
        t = draw(st.floats(0, 1))
        for outcome in draw(st.lists(OUTCOMES, min_size=0, max_size=40)):
            t += draw(st.floats(0.001, 2.0))
            records.append(request(t, node=node, error=outcome, latency_s=draw(st.floats(0, 2))))
    return History.of(records)


@settings(max_examples=300, deadline=None)
@given(histories())
def test_availability_lies_in_zero_one_and_retries_never_lower_it(h: History):
    raw = availability(h, min_availability=0.5)
    if not h.requests:
        assert raw.status is Status.UNKNOWN
        return
    retried = availability(h, min_availability=0.5, retry=RETRY_3X_EXPONENTIAL)
    assert 0.0 <= raw.figures["availability"] <= retried.figures["availability_retry_3x_exponential"] <= 1.0
    per_endpoint = [(len(h.select([e.node]).requests), raw.figures[f"availability.{e.node}"]) for e in h.endpoints()]
    overall = sum(n * a for n, a in per_endpoint) / sum(n for n, _ in per_endpoint)
    assert overall == pytest.approx(raw.figures["availability"])  # merging endpoints weighs by requests


@settings(max_examples=300, deadline=None)
@given(histories())
def test_outage_windows_are_ordered_disjoint_and_cover_every_failure(h: History):
    for endpoint in h.endpoints():
        requests = h.select([endpoint.node]).requests
        windows = [w for w in outage_windows(h) if w.scope == endpoint.node]
        assert all(w.start <= w.end for w in windows)
        assert all(a.end <= b.start for a, b in zip(windows, windows[1:]))
        for r in requests:
            inside = [w for w in windows if w.start <= r.t_mono < w.end or (w.open_ended and r.t_mono == w.end)]
            assert len(inside) == (0 if r.ok else 1)
        assert sum(w.failures for w in windows) == sum(not r.ok for r in requests)


@settings(max_examples=300, deadline=None)
@given(histories())
def test_an_outage_across_endpoints_starts_inside_an_endpoint_outage_that_lasts_as_long(h: History):
    """Merging endpoints never makes an outage longer than one endpoint's own (closed or still open)."""
    per_endpoint = outage_windows(h)
    for across in outage_windows(h, across_endpoints=True):
        assert any(
            w.start <= across.start and (w.open_ended or across.end <= w.end) for w in per_endpoint
        )


@settings(max_examples=100, deadline=None)
@given(histories(), st.integers(min_value=0))
def test_a_history_cut_at_any_point_still_yields_a_verdict(tmp_path_factory, h: History, cut: int):
    path = tmp_path_factory.mktemp("cut") / "h.jsonl"
    with HistoryWriter(path) as writer:
        writer.append(traffic_mark(0.0, ["a"], 20.0), *h.requests)
    data = path.read_bytes()
    path.write_bytes(data[: cut % (len(data) + 1)])
    loaded = History.load(path)
    verdict = check_all(loaded, *standard_checks(min_availability=0.9, max_outage_s=1.0))
    assert verdict.status in set(Status)
    assert all("checker raised" not in part.reason for part in verdict.parts)
    if not loaded.requests:
        assert verdict.status is Status.UNKNOWN


def test_resolution_is_stated_with_the_figures():
    h = History.of(steady("a", 0, 2, 0.05) + [traffic_mark(0, ["a"], 20.0)])
    verdict = check_all(h, *standard_checks(min_availability=1.0, max_outage_s=0.0))
    assert verdict.status is Status.PASS
    assert verdict.resolution_s == pytest.approx(0.05)
    assert all("resolution: planned interval 0.05s, observed largest gap 0.050s on a" in part.reason
               for part in verdict.parts)
    assert verdict.resolution is not None and verdict.resolution.max_gap_s == pytest.approx(0.05)


# -- the resolution actually observed: holes in the sends ------------------------------------------------


def _with_hole(hole: tuple[float, float], *, failing: tuple[float, float] | None = None) -> History:
    """20 req/s on 'a' for 10 s, with no request sent inside ``hole`` (a stalled generator)."""
    sends = [r for r in steady("a", 0, 10, 0.05, failing=failing) if not hole[0] <= r.t_mono < hole[1]]
    return History.of([traffic_mark(0, ["a"], 20.0), *sends])


def test_a_hole_in_the_sends_makes_a_passing_verdict_unknown_naming_the_gap():
    h = _with_hole((3.0, 5.0))
    for check in standard_checks(min_availability=0.99, max_outage_s=0.5):
        verdict = check(h)
        assert verdict.status is Status.UNKNOWN, verdict.reason
        assert "no request was observed for 2.050s on a (+2.95s to +5.00s)" in verdict.reason
        assert verdict.resolution is not None and verdict.resolution.max_gap_s == pytest.approx(2.05)


def test_a_gap_within_the_outage_budget_or_the_stated_slack_is_tolerated():
    assert longest_outage(_with_hole((3.0, 5.0)), max_outage_s=2.5).status is Status.PASS  # shorter than the budget
    small = _with_hole((3.0, 3.0 + (GAP_SLACK_INTERVALS - 2) * 0.05))  # within the slack: still the resolution
    assert check_all(small, *standard_checks(min_availability=1.0, max_outage_s=0.0)).status is Status.PASS
    big = _with_hole((3.0, 3.0 + (GAP_SLACK_INTERVALS + 0.5) * 0.05))
    assert longest_outage(big, max_outage_s=0.0).status is Status.UNKNOWN


def test_an_observed_failure_still_fails_whatever_the_gaps():
    h = _with_hole((3.0, 5.0), failing=(6.0, 7.0))
    assert longest_outage(h, max_outage_s=0.5).status is Status.FAIL
    assert availability(h, min_availability=0.99).status is Status.FAIL


def test_availability_counts_what_it_did_not_see_against_itself():
    # 200 requests, 2 s of holes (40 planned sends missing): 0.80 in the worst case
    h = _with_hole((3.0, 5.0))
    assert availability(h, min_availability=0.75).status is Status.PASS
    unknown = availability(h, min_availability=0.85)
    assert unknown.status is Status.UNKNOWN and "gives a 0.80" in unknown.reason, unknown.reason
    assert unknown.figures["availability_worst_case"] == pytest.approx(160 / 201, abs=0.01)


def test_abandoned_requests_have_no_outcome_and_decide_only_when_they_could():
    records = steady("a", 0, 5, 0.05)
    abandoned = [dataclasses.replace(r, error=ErrorKind.ABANDONED, status=None) for r in records[-5:]]
    h = History.of([traffic_mark(0, ["a"], 20.0), *records[:-5], *abandoned])
    verdict = availability(h, min_availability=1.0)
    assert verdict.status is Status.UNKNOWN and "5 request(s) were abandoned with no outcome" in verdict.reason
    assert verdict.figures["abandoned"] == 5 and verdict.figures["availability"] == 1.0
    assert availability(h, min_availability=0.95).status is Status.PASS  # even if all 5 failed: 95/100
    failing = History.of([*h.requests[:50], *(dataclasses.replace(r, error=ErrorKind.TIMEOUT, status=None)
                                             for r in h.requests[50:60]), *h.requests[60:]])
    assert availability(failing, min_availability=0.95).status is Status.FAIL  # 10 failed even if 5 served
    assert longest_outage(h, max_outage_s=0.0).figures["outage_windows"] == 0  # not failures either


def test_the_window_edges_count_a_hole_after_the_injection_or_before_the_end():
    h = History.of([traffic_mark(0, ["a"], 20.0), *steady("a", 0, 10, 0.05)])
    late = dataclasses.replace(h, requests=tuple(r for r in h.requests if not 4.0 <= r.t_mono < 6.0))
    window = late.between(4.0, 10.0)  # the injection was at 4.0; the first send after it at 6.0
    verdict = longest_outage(window, max_outage_s=1.0)
    assert verdict.status is Status.UNKNOWN and "(+4.00s to +6.00s)" in verdict.reason, verdict.reason
    stopped = dataclasses.replace(h, requests=tuple(r for r in h.requests if r.t_mono < 8.0))
    assert longest_outage(stopped.between(1.0, 10.0), max_outage_s=1.0).status is Status.UNKNOWN  # nothing after 8 s


def test_sends_show_the_resolution_when_the_judged_requests_are_a_selection():
    h = _with_hole((3.0, 5.0))
    chosen = dataclasses.replace(h, requests=tuple(r for r in h.requests if r.t_mono < 3.0 or r.t_mono >= 5.0))
    full = History.of([traffic_mark(0, ["a"], 20.0), *steady("a", 0, 10, 0.05)])
    assert longest_outage(chosen, max_outage_s=0.5, sends=full).status is Status.PASS


@settings(max_examples=60, deadline=None)
@given(st.floats(min_value=1.0, max_value=8.0), st.floats(min_value=0.3, max_value=1.5))
def test_no_history_with_a_hole_longer_than_its_budget_passes(start: float, length: float):
    h = _with_hole((start, start + length))
    assert longest_outage(h, max_outage_s=length / 2).status is Status.UNKNOWN
    assert availability(h, min_availability=1.0, outage_budget_s=length / 2).status is Status.UNKNOWN
