"""CPU time and peak memory of another process (and of the processes it started), from /proc.

For benchmarks whose measured process is not the benchmark itself: the bot run
as ``python -m bot``, whose worker pool (``bot/workers.py``) forks processes of
its own that count as part of it.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """``/proc/<pid>/stat`` after the command name (which may hold spaces and parentheses)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text.rsplit(")", 1)[1].split()


def descendants(pid: int) -> list[int]:
    """Every living process started by ``pid``, by its children, and so on."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(_stat_fields(int(entry.name))[1])
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
        children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cpu_seconds(pid: int, *, with_descendants: bool = True) -> float:
    """User + system CPU of ``pid`` so far, with its living descendants' unless told not to."""
    pids = [pid, *(descendants(pid) if with_descendants else [])]
    total = 0
    for one in pids:
        try:
            fields = _stat_fields(one)
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / _TICKS


def peak_rss_mb(pid: int) -> tuple[float, float]:
    """``(VmHWM of pid, sum of its descendants' VmHWM)`` in MB.

    The sum overstates a little: pages the workers share with each other and
    with their fork server count once per process.
    """
    own = _hwm_mb(pid)
    return own, sum(_hwm_mb(child) for child in descendants(pid))


def _hwm_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return 0.0
