"""Acknowledge a partition's events strictly in offset order.

faust chooses the committed offset from acked offsets and can skip an unfinished event
when acks arrive out of order (faust #606). Every event therefore gets an ``Entry`` in its
partition's ``PartitionLog``; finishing an entry acks the finished *prefix* only.
"""

from __future__ import annotations

from collections import deque
from typing import Any


class Entry:
    """One consumed record on its way through the pipeline."""

    __slots__ = (
        "done",
        "event",
        "expedited",
        "key",
        "log",
        "message",
        "offset",
        "partition",
        "topic",
    )

    def __init__(self, event: Any, log: PartitionLog) -> None:
        message = event.message
        self.event = event
        self.message = message
        self.topic: str = message.topic
        self.partition: int = message.partition
        self.offset: int = message.offset
        self.key: bytes | None = message.key
        self.log = log
        self.done = False
        self.expedited = False  # released before its due time (a cancel): run it now

    def finish(self) -> None:
        """The outcome is durable: ack this entry once every earlier one is acked."""
        self.log.finish(self)


class PartitionLog:
    """Entries of one topic-partition, in offset order, for one assignment generation."""

    __slots__ = ("_entries", "closed", "last_offset", "tp")

    def __init__(self, tp: Any) -> None:
        self.tp = tp
        self._entries: deque[Entry] = deque()
        self.closed = False
        self.last_offset = -1

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, event: Any) -> Entry:
        entry = Entry(event, self)
        self._entries.append(entry)
        self.last_offset = entry.offset
        return entry

    def finish(self, entry: Entry) -> None:
        entry.done = True
        if self.closed:
            return
        entries = self._entries
        while entries and entries[0].done:
            entries.popleft().event.ack()

    def close(self) -> int:
        """Stop acking (revoke/shutdown); returns how many entries stay unacked."""
        self.closed = True
        left = len(self._entries)
        self._entries.clear()
        return left

    @property
    def oldest_timestamp_s(self) -> float | None:
        """The record timestamp (epoch seconds) of the oldest unfinished entry, if any."""
        if not self._entries:
            return None
        stamp = getattr(self._entries[0].message, "timestamp", None)
        return float(stamp) if isinstance(stamp, (int, float)) else None

    @property
    def acked_through(self) -> int | None:
        """The offset of the oldest unfinished entry, if any."""
        return self._entries[0].offset if self._entries else None
