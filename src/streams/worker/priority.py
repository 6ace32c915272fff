"""The ready queue of a family with priority lanes: one FIFO per lane, taken by weight.

A family's lanes (``priorities:`` in topics.yaml) are separate topics; their admitted
records wait here in one queue per lane, and each free handler slot takes the next record
from the lane ``core.fairness.FairPicker`` names (weighted, work-conserving, a minimum share
for the low lanes). A high-priority record is therefore never queued behind a low lane's
backlog: it waits for the next free slot only. Records of a retry tier (and records the
tier's scheduler releases when due) belong to the lane in their ``streams-lane`` header.

A record still waits for a free slot, and with every slot held by slow low-priority
handlers that could be as long as one of them runs: so the lanes below the first one may
hold at most ``concurrency - reserved`` slots together (``reserved``: an eighth of the
slots, at least one), and a higher-lane record finds a slot at once while fewer than
``reserved`` of them run. ``takeable`` says whether a worker may take a record now.

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
        self._top = self._lanes[0]
        self._default = priorities.default
        self._queues: dict[str, deque[Entry]] = {lane: deque() for lane in self._lanes}
        self._len = 0
        self.reserved = max(1, family.concurrency // 8)
        self._lower_cap = max(1, family.concurrency - self.reserved)
        self._lower_running = 0  # records of the lanes below the first one, running

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

    def _ready(self) -> dict[str, bool]:
        lower_open = self._lower_running < self._lower_cap
        return {
            name: bool(q) and (lower_open or name == self._top) for name, q in self._queues.items()
        }

    def takeable(self) -> bool:
        """A record a worker may take now (lower lanes within their slots)."""
        return any(self._ready().values())

    def extendleft(self, entries: Iterable[Entry]) -> None:
        """Put taken entries back at the front of their lanes (``deque.extendleft`` order:
        the last one given ends up first)."""
        for entry in entries:
            lane = entry.lane if entry.lane is not None else self.lane_of(entry)
            self.finished(entry)
            self._queues[lane].appendleft(entry)
            self._len += 1

    def popleft(self) -> Entry:
        lane = self._picker.next_lane(self._ready())
        if lane is None:
            raise IndexError("nothing takeable in PriorityReady")
        self._len -= 1
        entry = self._queues[lane].popleft()
        entry.lane = lane
        if lane != self._top:
            self._lower_running += 1
        return entry

    def finished(self, entry: Entry) -> None:
        """``entry`` (taken by ``popleft``) stopped running or was skipped."""
        if entry.lane is not None and entry.lane != self._top:
            self._lower_running -= 1
        entry.lane = None

    def depth(self) -> dict[str, int]:
        """Records waiting per lane (diagnostics)."""
        return {lane: len(q) for lane, q in self._queues.items()}
