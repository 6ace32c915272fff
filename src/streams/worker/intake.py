"""Intake: where fetched batches of our topics enter a family (the batch route's front).

``sink`` is called from the consumer's fetch (``compat/batch_fetch.py``) with one
partition's records as fetched; it only queues them. ``run`` admits them in order: it waits
while partitions are being positioned after an assignment (records fetched meanwhile are
held, not dropped), asks the in-sequence admission for the partition's log record by record
(a record not admitted stays unfinished and is read again), and hands the batch's entries to
the family's lanes in one call. A retry tier's record that is not due yet goes to the tier's
``DueScheduler`` instead (waits longer than ``max_hold_ms`` are capped: the dispatch hops
them, ``worker/delays.py``).

Backpressure: a partition whose unfinished records (queued here or admitted) reach
``high`` is held (``hold``: not fetched, ``compat/batch_fetch.py``) until they fall below
half of it (``release``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from streams.core import headers as h
from streams.core.planner import is_due
from streams.worker.ordering import Entry, PartitionLog
from streams.worker.scheduler import DueScheduler
from streams.worker.tp import TP

log = logging.getLogger(__name__)

DEFAULT_HIGH = 4096
CHUNK = 512  # records admitted per loop step: a big fetch must not hold up a small urgent one


class Submits(Protocol):
    """Where admitted entries go: the family's ``Lanes`` (or an at-most-once family's
    ``CommitFirstLanes``, ``worker/at_most_once.py``)."""

    def submit(self, entries: Iterable[Entry], lane: str | None = None) -> None: ...


@dataclass
class Route:
    """Where a topic's admitted records go."""

    lanes: Submits
    scheduler: DueScheduler | None = None
    max_hold_ms: int | None = None
    lane: str | None = None  # the priority lane of a lane topic (None: by header, or none)
    rank: int = 0  # admission order among queued batches: lower first (a lane's priority)


class Intake:
    def __init__(
        self,
        *,
        admission: Callable[[], Awaitable[None]],
        log_for: Callable[[TP, int], PartitionLog | None],
        logs: dict[TP, PartitionLog],
        hold: Callable[[TP], None],
        release: Callable[[TP], None],
        clock_ms: Callable[[], int],
        skew_margin_ms: int,
        high: int = DEFAULT_HIGH,
    ) -> None:
        self._admission = admission
        self._log_for = log_for
        self._logs = logs
        self._hold = hold
        self._release = release
        self._clock_ms = clock_ms
        self._margin_ms = skew_margin_ms
        self._high = high
        self._low = high // 2
        self.routes: dict[str, Route] = {}
        self._ranked = False
        self._batches: deque[tuple[TP, Sequence[Any]]] = deque()
        self._queued: dict[TP, int] = {}
        self.held: set[TP] = set()
        self._wake = asyncio.Event()

    def add_topic(self, topic: str, route: Route) -> None:
        self.routes[topic] = route
        self._ranked = self._ranked or route.rank > 0

    # --- from the fetch -------------------------------------------------------------------

    def sink(self, tp: TP, records: Sequence[Any]) -> None:
        self._batches.append((tp, records))
        queued = self._queued[tp] = self._queued.get(tp, 0) + len(records)
        self._wake.set()
        if tp not in self.held and queued + self._backlog(tp) >= self._high:
            self.held.add(tp)
            self._hold(tp)

    def _backlog(self, tp: TP) -> int:
        plog = self._logs.get(tp)
        return len(plog) if plog is not None else 0

    def on_advance(self, tp: TP) -> None:
        """``tp`` finished records: fetch it again once its backlog is below half."""
        held = self.held
        if held and tp in held and self._queued.get(tp, 0) + self._backlog(tp) < self._low:
            held.discard(tp)
            self._release(tp)

    def forget(self, tps: set[TP]) -> None:
        """Partitions given up: queued batches of theirs are dropped unfinished."""
        if any(tp in tps for tp, _ in self._batches):
            self._batches = deque((tp, b) for tp, b in self._batches if tp not in tps)
        for tp in tps:
            self._queued.pop(tp, None)
            if tp in self.held:
                self.held.discard(tp)
                self._release(tp)

    # --- admission ------------------------------------------------------------------------

    async def run(self) -> None:
        batches = self._batches
        while True:
            if not batches:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._admission()  # the in-sequence check below sorts out stale records
            if not batches:
                continue
            tp, records = self._next_batch()
            if len(records) > CHUNK:  # the rest after a turn of the loop (and other batches)
                rest = (tp, records[CHUNK:])
                if any(queued_tp == tp for queued_tp, _ in batches):
                    batches.appendleft(rest)  # a later batch of tp is queued: keep the order
                else:
                    batches.append(rest)
                records = records[:CHUNK]
            left = self._queued.get(tp, 0) - len(records)
            if left > 0:
                self._queued[tp] = left
            else:
                self._queued.pop(tp, None)
            try:
                self._admit(tp, records)
            except Exception:  # never lose the loop: the records stay unfinished
                log.exception("failed to admit records of %s[%d]", tp.topic, tp.partition)
            self.on_advance(tp)
            await asyncio.sleep(0)

    def _next_batch(self) -> tuple[TP, Sequence[Any]]:
        """The oldest queued batch of the best-ranked topic (a high lane's batch is admitted
        before the chunks of a low lane's big fetch; one partition's batches keep their
        order, they share a rank)."""
        batches = self._batches
        if not self._ranked:
            return batches.popleft()
        routes = self.routes
        best, best_rank = 0, None
        for i, (tp, _) in enumerate(batches):
            route = routes.get(tp.topic)
            rank = route.rank if route is not None else 0
            if best_rank is None or rank < best_rank:
                best, best_rank = i, rank
                if rank == 0:
                    break
        batch = batches[best]
        del batches[best]
        return batch

    def _admit(self, tp: TP, records: Sequence[Any]) -> None:
        route = self.routes.get(tp.topic)
        if route is None:
            return
        entries: list[Entry] = []
        log_for = self._log_for
        try:
            for record in records:
                plog = log_for(tp, record.offset)
                if plog is None:  # revoked, draining, or not (yet) ours: left unfinished
                    continue
                entry = plog.add(record)
                if route.scheduler is not None and self._schedule(route, entry):
                    continue
                entries.append(entry)
        finally:  # entries added before an error are in the log: they must run
            if entries:
                route.lanes.submit(entries, route.lane)

    def _schedule(self, route: Route, entry: Entry) -> bool:
        """Hold a retry record until its due time; False when it is due now."""
        assert route.scheduler is not None
        now_ms = self._clock_ms()
        wait_ms = is_due(h.decode(entry.headers), now_ms, self._margin_ms)
        if wait_ms <= 0:
            return False
        if route.max_hold_ms is not None:
            wait_ms = min(wait_ms, route.max_hold_ms)
        route.scheduler.add(entry, now_ms + wait_ms)
        return True
