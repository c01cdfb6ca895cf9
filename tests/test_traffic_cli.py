"""``python -m harness traffic`` and ``python -m harness verdict``: figures, JSON and exit codes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from history_builders import steady, traffic_mark

from harness import traffic_cli
from harness.history import HistoryWriter
from harness.testing.loopback import LoopbackServer


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    traffic_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def write(path: Path, records: list) -> Path:
    with HistoryWriter(path) as writer:
        writer.append(*records)
    return path


@pytest.fixture
def two_second_outage(tmp_path: Path) -> Path:
    return write(tmp_path / "h.jsonl", [traffic_mark(0, ["a"], 20.0), *steady("a", 0, 10, 0.05, failing=(3.0, 5.0))])


def test_verdict_prints_the_figures_as_json_and_exits_by_status(two_second_outage: Path, capsys: pytest.CaptureFixture):
    assert run("verdict", str(two_second_outage), "--min-availability", "0.75", "--max-outage", "2.5", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "pass"
    assert (out["requests"], out["failures"]) == (200, 40)
    assert out["availability"] == pytest.approx(0.8)
    assert out["availability_retry_3x_exponential"] == pytest.approx(1.0)
    assert out["longest_outage_s"] == pytest.approx(2.0)
    assert out["resolution_s"] == pytest.approx(0.05)
    assert [v["name"] for v in out["verdicts"]] == ["availability", "availability_retry_3x_exponential", "longest_outage"]
    assert run("verdict", str(two_second_outage), "--min-availability", "0.75", "--max-outage", "1.5") == 1
    assert "FAIL: 200 requests, 40 failed" in capsys.readouterr().out


def test_default_budgets_ask_for_zero_failures(two_second_outage: Path, tmp_path: Path):
    assert run("verdict", str(two_second_outage)) == 1
    clean = write(tmp_path / "clean.jsonl", steady("a", 0, 2, 0.05))
    assert run("verdict", str(clean)) == 0


def test_verdict_on_nothing_or_garbage_is_unknown(tmp_path: Path, capsys: pytest.CaptureFixture):
    (tmp_path / "empty.jsonl").write_text("")
    assert run("verdict", str(tmp_path / "empty.jsonl"), "--json") == 2
    assert json.loads(capsys.readouterr().out)["status"] == "unknown"
    (tmp_path / "bad.jsonl").write_text("not json\n{}\n")
    assert run("verdict", str(tmp_path / "bad.jsonl")) == 2
    assert "cannot read history" in capsys.readouterr().err
    assert run("verdict", str(tmp_path / "absent.jsonl")) == 2


def test_verdict_on_a_truncated_history_says_so(two_second_outage: Path, capsys: pytest.CaptureFixture):
    data = two_second_outage.read_bytes()
    two_second_outage.write_bytes(data[: len(data) - 7])
    assert run("verdict", str(two_second_outage), "--min-availability", "0.75", "--max-outage", "2.5", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["truncated"] is True and out["requests"] == 199


def test_traffic_command_records_a_history_the_verdict_command_passes(tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "run.jsonl"
    with LoopbackServer() as server:
        code = run("traffic", "--url", f"loop={server.url}", "--rate", "20", "--duration", "1.5", "--out", str(out))
    assert code == 0
    assert "traffic done: 30 ok, 0 failed" in capsys.readouterr().err
    assert run("verdict", str(out), "--json") == 0
    assert json.loads(capsys.readouterr().out)["requests"] == 30


def test_traffic_command_refuses_targets_off_loopback(tmp_path: Path, capsys: pytest.CaptureFixture):
    assert run("traffic", "--url", "http://93.184.216.34/", "--rate", "1", "--duration", "1", "--out", str(tmp_path / "x")) == 2
    assert "refused" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_endpoint_names_default_to_host_and_port():
    assert traffic_cli.parse_endpoint("http://127.0.0.1:8000/").node == "127.0.0.1:8000"
    assert traffic_cli.parse_endpoint("head=http://127.0.0.1:8000/").node == "head"
