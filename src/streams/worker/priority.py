"""The ready queue of a family with priority lanes: one FIFO per lane, taken by weight.

A family's lanes (``priorities:`` in topics.yaml) are separate topics; their admitted
records wait here in one queue per lane, and each free handler slot takes the next record
from the lane ``core.fairness.FairPicker`` names (weighted, work-conserving, a minimum share
for the low lanes). A high-priority record is therefore never queued behind a low lane's
backlog: it waits for the next free slot only. Records of a retry tier (and records the
tier's scheduler releases when due) belong to the lane in their ``streams-lane`` header.

It has the part of ``deque``'s interface the lanes use (``extend``, ``popleft``, ``len``),
so a family without lanes keeps a plain deque.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from streams.catalog import Family
from streams.core import headers as h
from streams.core.fairness import FairPicker
from streams.worker.ordering import Entry


class PriorityReady:
    def __init__(self, family: Family) -> None:
        priorities = family.priorities
        assert priorities is not None
        self._picker = FairPicker.from_priorities(priorities)
        self._lanes = tuple(priorities.lanes)
        self._default = priorities.default
        self._queues: dict[str, deque[Entry]] = {lane: deque() for lane in self._lanes}
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def lane_of(self, entry: Entry) -> str:
        lane = h.lane_of(h.decode(entry.headers))
        return lane if lane in self._queues else self._default

    def extend(self, entries: Iterable[Entry], lane: str | None = None) -> None:
        """Queue ``entries`` in ``lane`` (None: each in the lane of its header)."""
        if lane is not None and lane in self._queues:
            queue = self._queues[lane]
            before = len(queue)
            queue.extend(entries)
            self._len += len(queue) - before
            return
        for entry in entries:
            self._queues[self.lane_of(entry)].append(entry)
            self._len += 1

    def popleft(self) -> Entry:
        queues = self._queues
        lane = self._picker.next_lane({name: bool(q) for name, q in queues.items()})
        if lane is None:
            raise IndexError("pop from an empty PriorityReady")
        self._len -= 1
        return queues[lane].popleft()

    def depth(self) -> dict[str, int]:
        """Records waiting per lane (diagnostics)."""
        return {lane: len(q) for lane, q in self._queues.items()}
