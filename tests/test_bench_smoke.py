"""The benchmarks in bench/ still run and report, at a size that takes seconds.

Each runs as a subprocess, the way CI runs it, once as a module and once as a
file path so both entry points keep working. Only the shape of the report is
checked: timing budgets belong to the full-size runs, never to a test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.pg import require_postgres

ROOT = Path(__file__).resolve().parent.parent


def run_benchmark(*args: str, timeout: float = 60) -> dict[str, Any]:
    """Run a benchmark command in the repository; return the one JSON object it printed."""
    done = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    # 0 = within budget, 1 = over it; both are valid reports. 2 or a crash is not.
    assert done.returncode in (0, 1), done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    report = json.loads(lines[0])
    assert isinstance(report, dict)
    assert done.returncode == (0 if report["ok"] else 1)
    return report


def assert_numbers(report: dict[str, Any], *keys: str) -> None:
    for key in keys:
        value = report[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), key
        assert value >= 0, key


@pytest.mark.parametrize("entry", [["-m", "bench.poll_idle"], ["bench/poll_idle.py"]])
def test_poll_idle_reports_cpu_ratio(entry: list[str]) -> None:
    """poll_idle at 20 subscriptions prints its figures and the ratio between them."""
    report = run_benchmark(*entry, "--subscriptions", "20", "--rounds", "1")
    assert set(report) == {
        "benchmark",
        "subscriptions",
        "bot_cpu_ms_per_poll",
        "baseline_cpu_ms_per_poll",
        "ratio",
        "budget_ratio",
        "ok",
    }
    assert report["benchmark"] == "poll_idle"
    assert report["subscriptions"] == 20
    assert_numbers(report, "bot_cpu_ms_per_poll", "baseline_cpu_ms_per_poll", "ratio")
    assert report["budget_ratio"] == 3.0
    assert isinstance(report["ok"], bool)


@pytest.mark.parametrize("entry", [["-m", "bench.changed"], ["bench/changed.py"]])
def test_changed_reports_cpu_ratio(entry: list[str]) -> None:
    """changed at 3 rounds prints the poll's CPU, its parsing share and the feedparser baseline."""
    report = run_benchmark(*entry, "--rounds", "3")
    assert set(report) == {
        "benchmark",
        "comments_per_page",
        "new_per_poll",
        "rounds",
        "bot_cpu_ms_per_poll",
        "bot_process_cpu_ms",
        "workers_cpu_ms",
        "baseline_feedparser_cpu_ms",
        "ratio",
        "budget_ratio",
        "ok",
    }
    assert report["benchmark"] == "changed"
    assert (report["comments_per_page"], report["new_per_poll"], report["rounds"]) == (25, 1, 3)
    assert_numbers(
        report,
        "bot_cpu_ms_per_poll",
        "bot_process_cpu_ms",
        "workers_cpu_ms",
        "baseline_feedparser_cpu_ms",
        "ratio",
    )
    # The worker processes did the parsing: their share is counted, and is not nothing.
    assert report["workers_cpu_ms"] > 0
    assert report["budget_ratio"] == 0.35
    assert isinstance(report["ok"], bool)


@pytest.mark.parametrize("entry", [["-m", "bench.loop_lag"], ["bench/loop_lag.py"]])
def test_loop_lag_reports_lag(entry: list[str]) -> None:
    """loop_lag on a 50-entry feed prints lag figures for the parse and the baseline."""
    report = run_benchmark(*entry, "--entries", "50", "--repeats", "1")
    assert set(report) == {
        "benchmark",
        "entries",
        "max_lag_ms",
        "p99_lag_ms",
        "hostile_max_lag_ms",
        "hostile_p99_lag_ms",
        "hostile_seconds",
        "hostile_comment_rendered",
        "baseline_max_lag_ms",
        "budget_ms",
        "ok",
    }
    assert report["benchmark"] == "loop_lag"
    assert report["entries"] == 50
    assert_numbers(
        report,
        "max_lag_ms",
        "p99_lag_ms",
        "hostile_max_lag_ms",
        "hostile_p99_lag_ms",
        "hostile_seconds",
        "baseline_max_lag_ms",
    )
    assert report["p99_lag_ms"] <= report["max_lag_ms"]
    assert report["hostile_p99_lag_ms"] <= report["hostile_max_lag_ms"]
    assert isinstance(report["hostile_comment_rendered"], bool)
    assert report["budget_ms"] == 50.0
    assert isinstance(report["ok"], bool)


@pytest.mark.parametrize("entry", [["-m", "bench.memory"], ["bench/memory.py"]])
def test_memory_reports_peak_rss(entry: list[str]) -> None:
    """memory at 20 subscriptions and 400 comments prints its peak RSS and the baseline."""
    report = run_benchmark(*entry, "--subscriptions", "20", "--comments", "400")
    assert set(report) == {
        "benchmark",
        "subscriptions",
        "comments",
        "peak_rss_mb",
        "workers_peak_rss_mb",
        "total_peak_rss_mb",
        "baseline_rss_mb",
        "budget_mb",
        "ok",
    }
    assert report["benchmark"] == "memory"
    assert (report["subscriptions"], report["comments"]) == (20, 400)
    assert_numbers(
        report, "peak_rss_mb", "workers_peak_rss_mb", "total_peak_rss_mb", "baseline_rss_mb"
    )
    # The baseline is the same process before the work: the peak includes it.
    assert report["baseline_rss_mb"] <= report["peak_rss_mb"]
    # The feeds were parsed in worker processes, which count in the total.
    assert report["workers_peak_rss_mb"] > 0
    assert (
        report["total_peak_rss_mb"] >= report["peak_rss_mb"] + report["workers_peak_rss_mb"] - 0.2
    )
    assert report["budget_mb"] == 150.0
    assert isinstance(report["ok"], bool)


@pytest.mark.parametrize("entry", [["-m", "bench.push_latency"], ["bench/push_latency.py"]])
def test_push_latency_reports_percentiles(entry: list[str]) -> None:
    """push_latency with 2 comments prints their latency percentiles and no duplicates."""
    report = run_benchmark(*entry, "--comments", "2")
    assert set(report) == {
        "benchmark",
        "comments",
        "poll_interval_s",
        "p50_s",
        "p95_s",
        "max_s",
        "duplicates",
        "missing",
        "budget_p95_s",
        "ok",
    }
    assert (report["benchmark"], report["comments"]) == ("push_latency", 2)
    assert_numbers(report, "p50_s", "p95_s", "max_s")
    assert report["p50_s"] <= report["p95_s"] <= report["max_s"]
    assert (report["duplicates"], report["missing"]) == (0, 0)
    assert report["budget_p95_s"] == 3.0


@pytest.mark.parametrize("entry", [["-m", "bench.scale"], ["bench/scale.py"]])
def test_scale_reports_both_cases(entry: list[str]) -> None:
    """scale at 200 subscriptions (enough CPU ticks to measure): both cases, every
    subscription polled, figures per process."""
    require_postgres()
    report = run_benchmark(*entry, "--subscriptions", "200", "--rounds", "1", timeout=240)
    assert set(report) == {"benchmark", "cases", "budget_ratio", "budget_mb", "ok"}
    assert report["benchmark"] == "scale"
    assert (report["budget_ratio"], report["budget_mb"]) == (2.0, 250.0)
    sqlite, postgres = report["cases"]
    assert (sqlite["name"], postgres["name"]) == ("sqlite", "postgres")
    for case in (sqlite, postgres):
        assert case["subscriptions"] == 200
        assert case["every_subscription_polled_each_round"] is True
        assert_numbers(
            case, "baseline_cpu_ms_per_poll", "round_seconds", "database_bytes_per_subscription"
        )
        for process in case["processes"]:
            assert_numbers(
                process,
                "cpu_ms_per_poll",
                "ratio",
                "polls_per_second_per_core",
                "peak_rss_mb",
                "workers_peak_rss_mb",
                "total_peak_rss_mb",
            )
            assert process["total_peak_rss_mb"] >= process["peak_rss_mb"]
            assert isinstance(process["ok"], bool)
        # Every subscription polled by exactly one process: the shards split them.
        assert sum(p["subscriptions"] for p in case["processes"]) == 200
    assert [p["shard_ids"] for p in sqlite["processes"]] == ["0,1"]
    assert [p["shard_ids"] for p in postgres["processes"]] == ["0", "1"]
    assert_numbers(postgres, "database_cpu_ms_per_poll")
    assert isinstance(report["ok"], bool)
