"""Run every benchmark in bench/, one after another, and tabulate their reports.

Each benchmark runs as its own subprocess (``python -m bench.NAME``), as CI
runs it: one at a time, because they measure CPU, time and memory, and two at
once would disturb each other. Their JSON reports are read back and shown as
one table (benchmark, figure, budget, baseline, ok); the raw reports can be
saved with ``--json``.

Run ``python -m bench.run_all [--only NAME ...] [--args "NAME=--flag value" ...]``.
Exit status: 0 when every benchmark is within budget, 1 when any is over it,
2 when any could not measure (it exited 2, crashed, timed out or printed no
report). ``--args`` passes sizes through, e.g. ``--args "memory=--subscriptions 100"``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
NOT_BENCHMARKS = frozenset({"__init__", "common", "run_all"})
# The usual order: cheapest first, so a broken set-up shows up early.
PREFERRED = ("loop_lag", "poll_idle", "changed", "memory", "backfill", "scale", "push_latency")

OK, OVER, BROKEN = 0, 1, 2


def discover() -> list[str]:
    """Names of the benchmark scripts in bench/ (every .py file but the shared ones)."""
    found = {p.stem for p in BENCH.glob("*.py") if p.stem not in NOT_BENCHMARKS}
    return [n for n in PREFERRED if n in found] + sorted(found - set(PREFERRED))


@dataclass(frozen=True, slots=True)
class Outcome:
    """One benchmark's run: its report, or why there is none."""

    name: str
    status: int  # OK, OVER or BROKEN
    report: Mapping[str, Any] | None
    seconds: float
    problem: str | None = None


def run_one(name: str, args: Sequence[str], timeout: float) -> Outcome:
    command = [sys.executable, "-m", f"bench.{name}", *args]
    print(f"running {shlex.join(command[1:])} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return Outcome(name, BROKEN, None, time.monotonic() - started, f"timed out ({timeout} s)")
    seconds = time.monotonic() - started
    lines = done.stdout.strip().splitlines()
    report: Any = None
    if len(lines) == 1:
        try:
            report = json.loads(lines[0])
        except json.JSONDecodeError:
            report = None
    if done.returncode not in (OK, OVER) or not isinstance(report, dict):
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        return Outcome(
            name, BROKEN, None, seconds, f"exit status {done.returncode}, no report\n{tail}"
        )
    status = OK if report.get("ok") is True else OVER
    if status != done.returncode:
        return Outcome(
            name,
            BROKEN,
            report,
            seconds,
            f"exit status {done.returncode} disagrees with ok={report.get('ok')}",
        )
    return Outcome(name, status, report, seconds)


# --- one table row per figure -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    benchmark: str
    figure: str
    budget: str
    baseline: str
    ok: str


def _poll_idle(r: Mapping[str, Any]) -> list[Row]:
    return [
        Row(
            f"poll_idle ({r['subscriptions']} subs)",
            f"{r['ratio']}x ({r['bot_cpu_ms_per_poll']} ms CPU/poll)",
            f"<= {r['budget_ratio']}x",
            f"{r['baseline_cpu_ms_per_poll']} ms CPU/poll, bare aiohttp",
            _yes(r["ok"]),
        )
    ]


def _changed(r: Mapping[str, Any]) -> list[Row]:
    return [
        Row(
            f"changed (1 new of {r['comments_per_page']} comments)",
            f"{r['ratio']}x ({r['bot_cpu_ms_per_poll']} ms CPU/poll, "
            f"{r['workers_cpu_ms']} ms of it parsing)",
            f"<= {r['budget_ratio']}x",
            f"{r['baseline_feedparser_cpu_ms']} ms CPU, plain feedparser.parse",
            _yes(r["ok"]),
        )
    ]


def _loop_lag(r: Mapping[str, Any]) -> list[Row]:
    return [
        Row(
            f"loop_lag ({r['entries']} entries)",
            f"max {r['max_lag_ms']} ms (p99 {r['p99_lag_ms']} ms)",
            f"<= {r['budget_ms']} ms",
            f"max {r['baseline_max_lag_ms']} ms, idle loop",
            _yes(r["ok"]),
        )
    ]


def _memory(r: Mapping[str, Any]) -> list[Row]:
    return [
        Row(
            f"memory ({r['subscriptions']} subs, {r['comments']} comments)",
            f"peak RSS {r['peak_rss_mb']} MB",
            f"<= {r['budget_mb']} MB",
            f"{r['baseline_rss_mb']} MB, bot imported, idle",
            _yes(r["ok"]),
        )
    ]


def _backfill(r: Mapping[str, Any]) -> list[Row]:
    budget = r["budget_ratio"]
    rows = []
    for s in r["scenarios"]:
        ratio = s.get("ratio")  # None when the limits allow it all at once (floor 0 s)
        clean = s["count_429"] == 0 and s["duplicates"] == 0 and s["missing"] == 0
        within = clean and (ratio is None or ratio <= budget)
        rows.append(
            Row(
                f"backfill: {s['name']}",
                f"{s['wall_s']} s{'' if ratio is None else f' = {ratio}x floor'}; "
                f"429s {s['count_429']}, dup {s['duplicates']}, missing {s['missing']}",
                f"<= {budget}x, no 429/dup/missing",
                f"floor {s['floor_s']} s",
                _yes(within),
            )
        )
    if rows and not r["ok"] and all(row.ok == "ok" for row in rows):
        # The report's own verdict wins over this table's reading of it.
        last = rows[-1]
        rows[-1] = Row(last.benchmark, last.figure, last.budget, last.baseline, _yes(False))
    return rows


def _scale(r: Mapping[str, Any]) -> list[Row]:
    rows = []
    for case in r["cases"]:
        for p in case["processes"]:
            rows.append(
                Row(
                    f"scale: {case['name']}, shards {p['shard_ids']} ({p['subscriptions']} subs)",
                    f"{p['ratio']}x ({p['cpu_ms_per_poll']} ms CPU/poll, "
                    f"{p['polls_per_second_per_core']} polls/s/core); "
                    f"peak RSS {p['total_peak_rss_mb']} MB with workers",
                    f"<= {r['budget_ratio']}x; <= {r['budget_mb']} MB",
                    f"{case['baseline_cpu_ms_per_poll']} ms CPU/poll, bare aiohttp",
                    _yes(p["ok"]),
                )
            )
    return rows


def _generic(r: Mapping[str, Any]) -> list[Row]:
    """A benchmark this script does not know yet: budget_* and baseline_* keys by name."""

    def pick(predicate: Callable[[str], bool]) -> str:
        text = ", ".join(f"{k}={v}" for k, v in r.items() if predicate(k)) or "-"
        return text if len(text) <= 100 else text[:97] + "..."

    special = ("benchmark", "ok")
    return [
        Row(
            str(r.get("benchmark", "?")),
            pick(lambda k: k not in special and not k.startswith(("budget", "baseline"))),
            pick(lambda k: k.startswith("budget")),
            pick(lambda k: k.startswith("baseline")),
            _yes(bool(r.get("ok"))),
        )
    ]


DESCRIBE: dict[str, Callable[[Mapping[str, Any]], list[Row]]] = {
    "poll_idle": _poll_idle,
    "changed": _changed,
    "loop_lag": _loop_lag,
    "memory": _memory,
    "backfill": _backfill,
    "scale": _scale,
}


def _yes(ok: Any) -> str:
    return "ok" if ok else "OVER"


def rows_of(outcome: Outcome) -> list[Row]:
    if outcome.report is None or outcome.status == BROKEN:
        return [Row(outcome.name, "no valid report", "-", "-", "BROKEN")]
    describe = DESCRIBE.get(outcome.name, _generic)
    try:
        return describe(outcome.report)
    except (KeyError, TypeError):  # a report whose shape changed: still show it
        return _generic(outcome.report)


def table(rows: Sequence[Row]) -> str:
    header = Row("benchmark", "figure", "budget", "baseline", "ok")
    cells = [[getattr(row, f) for f in Row.__slots__] for row in (header, *rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header.__slots__))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


# --- command line -------------------------------------------------------------------------


def parse_pass_through(values: Sequence[str], known: Sequence[str]) -> dict[str, list[str]]:
    """``["memory=--subscriptions 100", ...]`` -> ``{"memory": ["--subscriptions", "100"]}``."""
    extra: dict[str, list[str]] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or name not in known:
            raise ValueError(f"--args wants NAME=ARGS with NAME one of {', '.join(known)}")
        extra.setdefault(name, []).extend(shlex.split(rest))
    return extra


def main(argv: Sequence[str] | None = None) -> int:
    available = discover()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--only", action="append", choices=available, help="run only this one (repeatable)"
    )
    parser.add_argument(
        "--args",
        action="append",
        default=[],
        metavar="NAME=ARGS",
        help='arguments for one benchmark, e.g. "memory=--subscriptions 100" (repeatable)',
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per benchmark")
    parser.add_argument("--json", type=Path, help="also write every report to this file")
    args = parser.parse_args(argv)
    try:
        extra = parse_pass_through(args.args, available)
    except ValueError as exc:
        parser.error(str(exc))
    chosen = [name for name in available if not args.only or name in args.only]

    outcomes = [run_one(name, extra.get(name, []), args.timeout) for name in chosen]
    print(table([row for outcome in outcomes for row in rows_of(outcome)]))
    for outcome in outcomes:
        if outcome.problem:
            print(f"\n{outcome.name}: {outcome.problem}", file=sys.stderr)
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                [
                    {"name": o.name, "seconds": round(o.seconds, 1), "report": o.report}
                    for o in outcomes
                ],
                indent=2,
            )
            + "\n"
        )
    return max((outcome.status for outcome in outcomes), default=OK)


if __name__ == "__main__":
    sys.exit(main())
