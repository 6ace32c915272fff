"""When a batch handler runs: the accumulator's decisions as values, on an injected clock.

Pure (style.md, 1): ``now_ms`` is an argument and nothing here waits; the worker's
``worker/batching.py`` does the waiting and carries the batches out. Items keep their
arrival order (for one key that is its offset order). A batch is ready when ``max_events``
items are collected (``full``) or ``max_wait_ms`` after the oldest waiting item arrived
(``wait``); it holds at most ``max_events`` items, the oldest first.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

T = TypeVar("T")

FlushReason = Literal["full", "wait"]
FLUSH_REASONS: tuple[FlushReason, ...] = ("full", "wait")


@dataclass(frozen=True)
class Flush(Generic[T]):
    """A batch to run now, and why it is ready."""

    items: list[T]
    reason: FlushReason


class Accumulator(Generic[T]):
    """Items waiting for their batch, in arrival order, each with its arrival time (ms)."""

    __slots__ = ("_items", "max_events", "max_wait_ms")

    def __init__(self, max_events: int, max_wait_ms: int) -> None:
        if max_events < 1 or max_wait_ms < 1:
            raise ValueError(
                f"max_events and max_wait_ms must be >= 1, got {max_events}, {max_wait_ms}"
            )
        self.max_events = max_events
        self.max_wait_ms = max_wait_ms
        self._items: deque[tuple[int, T]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T, now_ms: int) -> int:
        """Queue ``item`` (arrived at ``now_ms``); returns how many items wait now."""
        self._items.append((now_ms, item))
        return len(self._items)

    def put_back(self, items: Sequence[tuple[int, T]]) -> None:
        """Return ``(arrived_ms, item)`` pairs taken earlier ahead of everything waiting, in
        their order (they arrived first: their keys' later items are behind them)."""
        self._items.extendleft(reversed(items))

    def due_in_ms(self, now_ms: int) -> int | None:
        """Milliseconds until a batch is ready (0: now); None when nothing waits."""
        if not self._items:
            return None
        if len(self._items) >= self.max_events:
            return 0
        return max(0, self._items[0][0] + self.max_wait_ms - now_ms)

    def take(self, now_ms: int) -> Flush[tuple[int, T]] | None:
        """The ready batch (``(arrived_ms, item)`` pairs, oldest first), or None."""
        items = self._items
        if not items:
            return None
        if len(items) >= self.max_events:
            reason: FlushReason = "full"
        elif items[0][0] + self.max_wait_ms <= now_ms:
            reason = "wait"
        else:
            return None
        count = min(len(items), self.max_events)
        return Flush([items.popleft() for _ in range(count)], reason)

    def drop(self, doomed: Callable[[T], bool]) -> list[T]:
        """Remove the items ``doomed`` picks (their partition was given up); returns them."""
        kept: deque[tuple[int, T]] = deque()
        dropped: list[T] = []
        for pair in self._items:
            if doomed(pair[1]):
                dropped.append(pair[1])
            else:
                kept.append(pair)
        self._items = kept
        return dropped


def split_twins(items: Iterable[T], key: Callable[[T], Hashable]) -> tuple[list[T], list[T]]:
    """(the first item of each key, the later ones), both in order: two records of one event
    id must not run in one batch (the second is a duplicate once the first is done)."""
    seen: set[Hashable] = set()
    first: list[T] = []
    later: list[T] = []
    for item in items:
        k = key(item)
        if k in seen:
            later.append(item)
        else:
            seen.add(k)
            first.append(item)
    return first, later
