"""History: records round-trip through JSON Lines, appends are whole lines, a cut file still loads."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from history_builders import event, request, steady, traffic_mark
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.history import (
    ErrorKind,
    EventKind,
    History,
    HistoryError,
    HistoryTail,
    HistoryWriter,
    RequestRecord,
    TrafficPhase,
    decode,
    encode,
)


def sample_records() -> list:
    return [
        traffic_mark(0.0, ["a", "b"], 20.0),
        request(0.1, pid=41),
        request(0.15, node="b", error=ErrorKind.TIMEOUT, latency_s=2.0),
        event(0.2, EventKind.INJECT),
        request(0.3, error=ErrorKind.HTTP_5XX),
        event(0.4, EventKind.NOTE, name="harness", target=""),
        traffic_mark(1.0, ["a", "b"], 20.0, TrafficPhase.FINISHED),
    ]


def write_history(path: Path, records: list) -> bytes:
    with HistoryWriter(path) as writer:
        for record in records:
            writer.append(record)
    return path.read_bytes()


def test_every_record_kind_round_trips_through_json():
    for record in sample_records():
        line = encode(record)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert decode(json.loads(line)) == record


def test_load_sorts_each_kind_by_monotonic_time(tmp_path: Path):
    records = sample_records()
    write_history(tmp_path / "h.jsonl", list(reversed(records)))
    loaded = History.load(tmp_path / "h.jsonl")
    assert loaded == History.of(records)
    assert [r.t_mono for r in loaded.requests] == [0.1, 0.15, 0.3]
    assert [e.kind for e in loaded.events] == [EventKind.INJECT, EventKind.NOTE]
    assert [m.phase for m in loaded.traffic] == [TrafficPhase.STARTED, TrafficPhase.FINISHED]
    assert not loaded.truncated


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(min_value=0, max_value=10_000))
def test_a_history_cut_at_any_byte_still_loads_what_was_whole(tmp_path_factory, cut: int):
    path = tmp_path_factory.mktemp("cut") / "h.jsonl"
    data = write_history(path, sample_records())
    cut = cut % (len(data) + 1)
    path.write_bytes(data[:cut])
    loaded = History.load(path)
    kept, line_start = [], 0
    for line in data.split(b"\n")[:-1]:  # a record whose text is whole is kept, newline or not
        if line_start + len(line) <= cut:
            kept.append(decode(json.loads(line)))
        line_start += len(line) + 1
    assert loaded == History.of(kept, truncated=loaded.truncated)
    line_begin = data.rfind(b"\n", 0, cut) + 1  # where the line the cut falls in begins
    line_end = data.find(b"\n", line_begin)
    assert loaded.truncated == (line_begin < cut < line_end)


def test_a_damaged_line_in_the_middle_is_an_error_naming_the_line(tmp_path: Path):
    path = tmp_path / "h.jsonl"
    lines = write_history(path, sample_records()).split(b"\n")
    lines[2] = lines[2][:20]
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(HistoryError, match="line 3"):
        History.load(path)


def test_a_missing_file_is_a_history_error(tmp_path: Path):
    with pytest.raises(HistoryError, match="cannot read history"):
        History.load(tmp_path / "absent.jsonl")


def test_writers_sharing_a_file_never_interleave_inside_a_line(tmp_path: Path):
    path = tmp_path / "h.jsonl"
    per_writer = 2000

    def write(node: str) -> None:
        with HistoryWriter(path) as writer:
            for i in range(per_writer):
                writer.append(request(i * 0.001, node=node, pid=i + 1))

    threads = [threading.Thread(target=write, args=(n,)) for n in ("a", "b", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    loaded = History.load(path)
    assert len(loaded.requests) == 3 * per_writer
    assert {r.node for r in loaded.requests} == {"a", "b", "c"}


def test_writer_stamps_fault_events_with_both_clocks(tmp_path: Path):
    with HistoryWriter(tmp_path / "h.jsonl") as writer:
        injected = writer.event(EventKind.INJECT, "KillProxy", "worker1", "ray.kill")
        writer.note("head is down")
    loaded = History.load(tmp_path / "h.jsonl")
    assert loaded.events[0] == injected
    assert loaded.events[1].kind is EventKind.NOTE and loaded.events[1].detail == "head is down"
    assert injected.t_wall > 1e9 and injected.t_mono > 0


def test_tail_returns_only_new_whole_records(tmp_path: Path):
    path = tmp_path / "h.jsonl"
    tail = HistoryTail(path)
    assert tail.read_new() == []
    first, second = request(1.0), request(2.0)
    with path.open("ab") as f:
        f.write(encode(first) + encode(second)[:10])
    assert tail.read_new() == [first]
    with path.open("ab") as f:
        f.write(encode(second)[10:])
    assert tail.read_new() == [second]
    assert tail.read_new() == []


def test_select_between_and_endpoints():
    h = History.of(steady("a", 0, 1, 0.1) + steady("b", 0.05, 1, 0.1) + [event(0.5, EventKind.INJECT)])
    assert [e.node for e in h.endpoints()] == ["a", "b"]
    assert {r.node for r in h.select(["b"]).requests} == {"b"}
    assert h.select(["http://127.0.0.1:8000/a"]).requests == h.select(["a"]).requests
    window = h.between(0.5, 0.8)
    assert all(0.5 <= r.t_mono < 0.8 for r in window.requests) and len(window.requests) == 6
    assert len(window.events) == 1


def test_request_interval_comes_from_the_plan_else_from_the_sends():
    sends = steady("a", 0, 2, 0.05)
    assert History.of(sends).request_interval() == pytest.approx(0.05)
    assert History.of([*sends, traffic_mark(0, ["a"], 10.0)]).request_interval() == pytest.approx(0.1)
    assert History.of([request(0.0)]).request_interval() is None


def test_unknown_record_type_is_refused():
    with pytest.raises(HistoryError, match="unknown record type"):
        decode({"type": "gossip"})
    assert isinstance(decode(json.loads(encode(request(1.0)))), RequestRecord)
