"""bench/backfill.py still runs at a tiny size and reports every comment once, with no 429.

It runs as a subprocess, the way CI runs it. The timing budget belongs to the
full-size run; here only the report's shape, the 429 count and exactly-once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_backfill_benchmark_reports_no_429_and_no_duplicates() -> None:
    """12 comments into one thread and 2 x 6 into two: valid JSON, no 429, each comment once."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.backfill",
            "--comments",
            "12",
            "--articles",
            "2",
            "--per-article",
            "6",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # 0 = within budget, 1 = over it; both are valid reports. 2 or a crash is not.
    assert done.returncode in (0, 1), done.stderr
    [line] = done.stdout.splitlines()
    report = json.loads(line)
    assert report["benchmark"] == "backfill"
    assert report["budget_ratio"] == 1.10
    assert report["budget_transactions_per_message"] == 1.10
    assert isinstance(report["ok"], bool)
    assert done.returncode == (0 if report["ok"] else 1)
    single, spread = report["scenarios"]
    assert (single["messages"], spread["messages"]) == (12, 12)
    assert (single["floor_s"], spread["floor_s"]) == (2.0, 1.0)
    for scenario in (single, spread):
        assert scenario["count_429"] == 0, scenario
        assert scenario["duplicates"] == 0, scenario
        assert scenario["missing"] == 0, scenario
        assert scenario["wall_s"] > 0
        assert abs(scenario["ratio"] - scenario["wall_s"] / scenario["floor_s"]) < 0.01
        # The outbox's one write transaction per message (plus a few per thread and
        # the poll); three per message before it.
        assert 1 <= scenario["transactions_per_message"] < 1.5, scenario
