"""The order comments are posted in: publication order, a parent always first.

Shared by delivery and ``preview`` so that what preview shows is what the bot
posts.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable, Iterable, Sequence
from datetime import datetime
from typing import TypeVar

T = TypeVar("T")


def delivery_order(
    items: Iterable[T],
    *,
    key: Callable[[T], Hashable],
    parent: Callable[[T], Hashable | None],
    published: Callable[[T], datetime],
) -> list[T]:
    """Sort by publication time, but hold a reply back until its parent is out.

    A reply whose parent is not among ``items`` is not held (its parent is
    either posted already or not available). Parent cycles, which only a
    broken feed produces, are broken by publication order.
    """
    entries = list(items)
    present = {key(item) for item in entries}
    children: dict[Hashable, list[int]] = {}
    ready: list[tuple[datetime, int]] = []
    for index, item in enumerate(entries):
        parent_key = parent(item)
        if parent_key is not None and parent_key in present and parent_key != key(item):
            children.setdefault(parent_key, []).append(index)
        else:
            ready.append((published(item), index))
    heapq.heapify(ready)
    ordered: list[T] = []
    emitted: set[int] = set()
    while len(ordered) < len(entries):
        if not ready:
            # Only cycles remain: release the earliest waiting item.
            waiting = min(
                (i for i in range(len(entries)) if i not in emitted),
                key=lambda i: (published(entries[i]), i),
            )
            ready.append((published(entries[waiting]), waiting))
        _, index = heapq.heappop(ready)
        if index in emitted:
            continue
        emitted.add(index)
        ordered.append(entries[index])
        for child in children.pop(key(entries[index]), ()):
            if child not in emitted:
                heapq.heappush(ready, (published(entries[child]), child))
    return ordered


def depth_of(
    items: Sequence[T], *, key: Callable[[T], Hashable], parent: Callable[[T], Hashable | None]
) -> dict[Hashable, int]:
    """Nesting depth of each item (0 for top level), for display."""
    parents = {key(item): parent(item) for item in items}
    depths: dict[Hashable, int] = {}
    for item in items:
        depth, current, seen = 0, parent(item), {key(item)}
        while current is not None and current in parents and current not in seen:
            seen.add(current)
            depth += 1
            current = parents[current]
        depths[key(item)] = depth
    return depths
