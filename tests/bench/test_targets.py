"""Issue 18's targets, judged from one run's figures (bench/targets.py, bench/gateway_bench.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from bench.durable_commit import describe, measure_commits
from bench.gateway_bench import judge_run
from bench.targets import (
    CPU_FLOOR_MULTIPLE,
    HOLD_INCOMPLETE,
    MET,
    MISSED,
    NO_COMMIT,
    NO_FLOOR,
    NOT_JUDGED,
    P50_MARGIN_MS,
    P99_LIMIT_MS,
    RPS_LIMIT,
    RSS_LIMIT_MB,
    Floor,
    Gateway,
    Verdict,
    judge,
    table_lines,
)

# Issue 18's own table: the floor and Garrison as measured when the issue was filed.
FLOOR = Floor(added_p50_c1=0.50, cpu_c1=0.4, cpu_c32=0.14, cpu_stream=0.18)
COMMIT_P50 = 0.29
TODAY = Gateway(
    added_p50_c1=1.46,
    added_p99_c1=2.7,
    cpu_c1=1.1,
    cpu_c32=0.34,
    cpu_stream=0.42,
    rps_c32=2355.0,
    rss_hold_mb=111.0,
    hold_complete=True,
)


def by_key(verdicts: list[Verdict]) -> dict[str, Verdict]:
    return {v.key: v for v in verdicts}


def test_the_limits_are_computed_from_the_floor_and_the_commit_of_the_run() -> None:
    v = by_key(judge(TODAY, FLOOR, COMMIT_P50))
    assert v["cpu_c32"].limit == pytest.approx(1.5 * 0.14)
    assert v["cpu_stream_c32"].limit == pytest.approx(1.5 * 0.18)
    assert v["cpu_c1"].limit == pytest.approx(1.5 * 0.4)
    assert v["added_p50_c1"].limit == pytest.approx(0.50 + 0.29 + 0.25)
    assert (v["added_p99_c1"].limit, v["rps_c32"].limit, v["rss_hold"].limit) == (
        3.0,
        2000.0,
        150.0,
    )
    assert (CPU_FLOOR_MULTIPLE, P50_MARGIN_MS, P99_LIMIT_MS, RPS_LIMIT, RSS_LIMIT_MB) == (
        1.5,
        0.25,
        3.0,
        2000.0,
        150.0,
    )


def test_the_issue_s_own_figures_miss_the_cpu_and_p50_targets_and_meet_the_rest() -> None:
    v = by_key(judge(TODAY, FLOOR, COMMIT_P50))
    assert {k: x.verdict for k, x in v.items()} == {
        "cpu_c32": MISSED,
        "cpu_stream_c32": MISSED,
        "added_p50_c1": MISSED,
        "added_p99_c1": MET,
        "cpu_c1": MISSED,
        "rps_c32": MET,
        "rss_hold": MET,
    }
    assert v["cpu_c32"].ratio == pytest.approx(0.34 / 0.21)
    assert v["rps_c32"].ratio == pytest.approx(2355 / 2000)


def test_a_figure_equal_to_its_limit_meets_it_and_one_just_past_misses_it() -> None:
    at = Gateway(
        added_p50_c1=0.50 + 0.29 + 0.25,
        added_p99_c1=3.0,
        cpu_c1=0.6,
        cpu_c32=0.21,
        cpu_stream=0.27,
        rps_c32=2000.0,
        rss_hold_mb=150.0,
        hold_complete=True,
    )
    assert {v.verdict for v in judge(at, FLOOR, COMMIT_P50)} == {MET}
    past = Gateway(
        added_p50_c1=at.added_p50_c1 + 0.01,
        added_p99_c1=3.01,
        cpu_c1=0.61,
        cpu_c32=0.22,
        cpu_stream=0.28,
        rps_c32=1999.0,
        rss_hold_mb=150.1,
        hold_complete=True,
    )
    assert {v.verdict for v in judge(past, FLOOR, COMMIT_P50)} == {MISSED}


def test_a_faster_floor_tightens_the_relative_limits_only() -> None:
    fast = Floor(added_p50_c1=0.3, cpu_c1=0.2, cpu_c32=0.1, cpu_stream=0.1)
    slow, quick = by_key(judge(TODAY, FLOOR, COMMIT_P50)), by_key(judge(TODAY, fast, 0.1))
    for key in ("cpu_c32", "cpu_stream_c32", "cpu_c1", "added_p50_c1"):
        assert quick[key].limit < slow[key].limit
    for key in ("added_p99_c1", "rps_c32", "rss_hold"):
        assert quick[key].limit == slow[key].limit


def test_without_a_bare_forwarder_the_relative_targets_are_not_judged() -> None:
    v = by_key(judge(TODAY, None, COMMIT_P50))
    for key in ("cpu_c32", "cpu_stream_c32", "cpu_c1", "added_p50_c1"):
        assert (v[key].verdict, v[key].reason) == (NOT_JUDGED, NO_FLOOR)
        assert math.isnan(v[key].limit) and math.isnan(v[key].ratio)
        assert v[key].measured == getattr(TODAY, key.replace("_stream_c32", "_stream"))
    assert [v[k].verdict for k in ("added_p99_c1", "rps_c32", "rss_hold")] == [MET, MET, MET]
    lines = "\n".join(table_lines(list(v.values())))
    assert lines.count("not judged (no bare forwarder in this run)") == 4


def test_without_a_durable_commit_the_p50_target_is_not_judged() -> None:
    v = by_key(judge(TODAY, FLOOR, None))
    assert (v["added_p50_c1"].verdict, v["added_p50_c1"].reason) == (NOT_JUDGED, NO_COMMIT)
    assert v["cpu_c1"].verdict == MISSED


def test_memory_is_not_judged_unless_every_stream_was_open_at_once() -> None:
    partial = Gateway(**{**TODAY.__dict__, "hold_complete": False})
    v = by_key(judge(partial, FLOOR, COMMIT_P50))["rss_hold"]
    assert (v.verdict, v.reason, v.limit) == (NOT_JUDGED, HOLD_INCOMPLETE, 150.0)
    assert math.isnan(v.ratio)


def test_the_json_form_has_no_nan_and_round_trips() -> None:
    verdicts = judge(TODAY, None, None)
    text = json.dumps([v.to_json() for v in verdicts], allow_nan=False)
    first = json.loads(text)[0]
    assert (first["key"], first["limit"], first["ratio"], first["comparison"]) == (
        "cpu_c32",
        None,
        None,
        "≤",
    )


def test_the_table_shows_limit_measured_ratio_and_verdict() -> None:
    lines = table_lines(judge(TODAY, FLOOR, COMMIT_P50))
    cpu = next(
        line for line in lines if line.startswith("gateway CPU per non-streaming call, c=32")
    )
    assert "≤ 0.210" in cpu and "1.5 × bare 0.140 ms" in cpu and "0.340" in cpu
    assert "1.62" in cpu and cpu.endswith("MISSED")
    rps = next(line for line in lines if line.startswith("calls/s"))
    assert "≥ 2,000" in rps and "2,355" in rps and rps.endswith("MET")


def _phase(p50: float, cpu: float, rps: float = 0.0, p99: float = 0.0) -> dict[str, float]:
    return {"p50": p50, "p99": p99, "cpu_target": cpu, "rps": rps}


def test_the_gateway_bench_takes_added_latency_against_the_same_direct_figures() -> None:
    direct = {"nonstream_c1": _phase(0.30, 0.0, p99=0.5)}
    summary = {
        "direct": direct,
        "gateway": {
            "nonstream_c1": _phase(1.76, 1.1),
            "nonstream_c32": _phase(8.0, 0.34, rps=2355.0),
            "stream_c32": _phase(30.0, 0.42),
        },
        "added": {"nonstream_c1": {"p50": 1.46, "p99": 2.7}},
        "hold": {"rss_peak_mb": 111.0, "max_open": 1000.0},
    }
    floor = {
        "nonstream_c1": _phase(0.80, 0.4),
        "nonstream_c32": _phase(5.0, 0.14),
        "stream_c32": _phase(25.0, 0.18),
    }
    assert judge_run(summary, floor, COMMIT_P50, 1000) == judge(TODAY, FLOOR, COMMIT_P50)
    assert judge_run(summary, None, COMMIT_P50, 1000) == judge(TODAY, None, COMMIT_P50)
    assert by_key(judge_run(summary, floor, COMMIT_P50, 1001))["rss_hold"].verdict == NOT_JUDGED


def test_the_durable_commit_is_timed_with_the_gateway_s_pragmas(tmp_path: Path) -> None:
    result = measure_commits(tmp_path, commits=20, warmup=2)
    assert (result["commits"], result["journal_mode"], result["synchronous"]) == (20, "wal", 2)
    assert 0 < result["p50"] <= result["p99"] <= result["max"]
    assert list(tmp_path.iterdir()) == []  # the database and its WAL are removed
    assert "20 one-row commits (journal_mode=wal, synchronous=FULL)" in describe(result)
