"""Finish a partition's records strictly in offset order.

Records of our topics never enter faust's streams (``compat/batch_fetch.py``): each one
gets an ``Entry`` in its partition's ``PartitionLog``, and finishing an entry moves the
partition's committable offset past the finished *prefix* only (never past a record that is
still running, waiting for its due time, or whose outcome is not durable yet). The log
reports each advance (``on_advance(tp, next_offset)``), once per finish that moved it, not
once per record; the ``Committer`` (``worker/commits.py``) commits the latest advance.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

Advance = Callable[[Any, int], None]


def _ignore(tp: Any, offset: int) -> None:
    return None


class Entry:
    """One consumed record on its way through the pipeline.

    Built from an aiokafka ``ConsumerRecord`` (or anything with its attributes):
    ``timestamp`` is the record timestamp in epoch milliseconds (-1 or None when absent).
    """

    __slots__ = (
        "done",
        "expedited",
        "headers",
        "key",
        "lane",
        "log",
        "offset",
        "partition",
        "timestamp_ms",
        "topic",
        "value",
    )

    def __init__(self, record: Any, log: PartitionLog) -> None:
        self.topic: str = record.topic
        self.partition: int = record.partition
        self.offset: int = record.offset
        self.key: bytes | None = record.key
        self.value: bytes | None = record.value
        self.headers: Any = record.headers
        stamp = record.timestamp
        self.timestamp_ms: int = stamp if isinstance(stamp, int) and stamp > 0 else 0
        self.log = log
        self.done = False
        self.expedited = False  # released before its due time (a cancel): run it now
        self.lane: str | None = None  # its priority lane while it runs (worker/priority.py)

    @property
    def tp(self) -> Any:
        return self.log.tp

    def finish(self) -> None:
        """The outcome is durable: the partition may commit past this entry once every
        earlier one is finished too."""
        self.log.finish(self)


class PartitionLog:
    """Entries of one topic-partition, in offset order, for one assignment generation."""

    __slots__ = ("_entries", "_on_advance", "closed", "last_offset", "stopping", "tp")

    def __init__(self, tp: Any, on_advance: Advance = _ignore) -> None:
        self.tp = tp
        self._entries: deque[Entry] = deque()
        self._on_advance = on_advance
        self.closed = False
        self.stopping = False  # being given up: nothing new starts, running ones finish
        self.last_offset = -1

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, record: Any) -> Entry:
        entry = Entry(record, self)
        self._entries.append(entry)
        self.last_offset = entry.offset
        return entry

    def finish(self, entry: Entry) -> None:
        entry.done = True
        if self.closed:
            return
        entries = self._entries
        if not entries or not entries[0].done:
            return
        last = entries.popleft()
        while entries and entries[0].done:
            last = entries.popleft()
        self._on_advance(self.tp, last.offset + 1)

    def close(self) -> int:
        """Stop advancing (revoke/shutdown); returns how many entries stay unfinished."""
        self.closed = True
        left = len(self._entries)
        self._entries.clear()
        return left

    @property
    def oldest_timestamp_s(self) -> float | None:
        """The record timestamp (epoch seconds) of the oldest unfinished entry, if any."""
        if not self._entries:
            return None
        stamp_ms = self._entries[0].timestamp_ms
        return stamp_ms / 1000 if stamp_ms else None

    @property
    def head(self) -> Entry | None:
        """The oldest unfinished entry, if any (the commit waits for it)."""
        return self._entries[0] if self._entries else None

    @property
    def acked_through(self) -> int | None:
        """The offset of the oldest unfinished entry, if any."""
        return self._entries[0].offset if self._entries else None
