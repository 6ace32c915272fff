"""At-most-once delivery (a family's ``delivery: at_most_once``): commit first, then run.

``CommitFirstLanes`` stands in front of the family's ``Lanes``: admitted records queue here,
and before any of them reaches a handler the offsets past them are committed, synchronously,
and the broker's acknowledgement awaited. Only then are they handed to the lanes. A record
therefore runs at most once: after a crash, a rebalance or a restart the next owner starts
past every record that was handed to a handler. A failed commit runs nothing: it is tried
again while the partitions stay ours, and records of a partition given up meanwhile are
dropped uncommitted (the next owner reads them, they never ran here).

What can be lost is bounded: at most ``window`` records (the family's concurrency) are
committed and not yet finished at any time, the records running plus those waiting for a
key that is busy. A SIGKILL loses those; a graceful drain or a revoke loses the ones it does
not get to start and the handlers it cancels past its deadline (counted here,
``events{outcome="lost"}``). Committing a window at a time,
not a whole fetch (up to 512 records), keeps that bound at "what was running" rather than
"what was fetched". A retry tier's record (a delayed event) is committed when it is due and
starts, which may pass a record of the same partition still waiting for a later due time:
a crash then loses that one too.

``AtMostOnceRouter`` routes failures without retrying: a failure that would have been retried
or deferred is dead-lettered with reason ``at_most_once`` (``core/planner.py``), and a DLQ
produce that fails is not retried either (the offset is committed already; retrying would
hold the partition): it is logged and counted (``events{outcome="lost"}``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from streams.core import headers as h
from streams.core.planner import DeadLetter, plan_at_most_once
from streams.worker.ordering import Entry
from streams.worker.routing import Router, refused_by_topic
from streams.worker.tp import TP

if TYPE_CHECKING:  # lanes.py imports the processor, which imports this module's router
    from streams.worker.lanes import Lanes

log = logging.getLogger(__name__)

CommitThrough = Callable[[Mapping[TP, int]], Awaitable[bool]]


def offsets_past(entries: Iterable[Entry]) -> dict[TP, int]:
    """Each partition's next offset to read once ``entries`` are taken (highest + 1)."""
    out: dict[TP, int] = {}
    for entry in entries:
        tp = entry.log.tp
        if entry.offset + 1 > out.get(tp, -1):
            out[tp] = entry.offset + 1
    return out


def live(entry: Entry) -> bool:
    """The entry's partition is still ours (not being given up, not closed)."""
    return not (entry.log.stopping or entry.log.closed)


class CommitFirstLanes:
    """An at-most-once family's lanes: records run only once their offsets are committed."""

    def __init__(
        self,
        lanes: Lanes,
        commit: CommitThrough,
        *,
        window: int,
        on_lost: Callable[[int], None],
        retry_backoff_s: float = 0.5,
    ) -> None:
        """``commit``: commits the offsets, True once the broker acknowledged them all;
        ``window``: records committed and not yet finished, at most; ``on_lost``: told how
        many committed records left the lanes without running."""
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.lanes = lanes
        self._commit = commit
        self._window = window
        self._on_lost = on_lost
        self._backoff_s = retry_backoff_s
        self._queue: deque[tuple[Entry, str | None]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._committing = 0  # records taken for the commit in progress
        lanes.on_settle = self._settled

    # --- what the intake and the schedulers call ------------------------------------------

    def submit(self, entries: Iterable[Entry], lane: str | None = None) -> None:
        """Queue admitted entries (in offset order per partition) to be committed, then run."""
        before = len(self._queue)
        self._queue.extend((entry, lane) for entry in entries)
        if len(self._queue) == before:
            return
        if self._task is None:
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._pump(), name=f"commit-first.{self.lanes.family}")
        self._wake.set()

    async def admit(self, entry: Entry) -> None:
        """Queue one entry (a retry tier's scheduler, when its due time came)."""
        self.submit((entry,))

    # --- what the rebalance, the heartbeat and the runtime ask of lanes ----------------------

    @property
    def in_flight(self) -> int:
        """Records admitted and not yet finished (queued for their commit or in the lanes)."""
        return self.lanes.in_flight + len(self._queue) + self._committing

    async def wait_idle(self, tps: set[Any], timeout_s: float) -> bool:
        return await self.lanes.wait_idle(tps, timeout_s)

    def cancel(self, tps: set[Any]) -> int:
        """Cancel the handlers of ``tps`` still running past the drain deadline: committed,
        they never run again, so they are counted lost."""
        cancelled = self.lanes.cancel(tps)
        if cancelled:
            self._on_lost(cancelled)
        return cancelled

    def saturated(self) -> bool:
        return self.lanes.saturated()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.lanes.stop()

    # --- the pump ------------------------------------------------------------------------

    def _settled(self, entry: Entry, ran: bool) -> None:
        if not ran:  # committed, never started: lost (a drain or revoke skipped it)
            self._on_lost(1)
        self._wake.set()

    async def _pump(self) -> None:
        """Commit and hand over, a window at a time, in arrival order."""
        queue = self._queue
        while True:
            room = self._window - self.lanes.in_flight
            if not queue or room <= 0:
                self._wake.clear()
                await self._wake.wait()
                continue
            taken: list[tuple[Entry, str | None]] = []
            while queue and len(taken) < room:
                item = queue.popleft()
                if live(item[0]):  # else left uncommitted: the next owner reads it
                    taken.append(item)
            if taken:
                self._committing = len(taken)
                try:
                    await self._commit_and_run(taken)
                finally:
                    self._committing = 0

    async def _commit_and_run(self, taken: list[tuple[Entry, str | None]]) -> None:
        while True:
            if await self._commit(offsets_past(entry for entry, _ in taken)):
                break
            taken = [item for item in taken if live(item[0])]
            if not taken:
                return  # their partitions were given up: nothing ran, nothing committed
            log.warning(
                "%s: commit before running %d record(s) failed; retrying",
                self.lanes.family,
                len(taken),
            )
            await asyncio.sleep(self._backoff_s)
        start = 0  # hand over in order, one call per run of records of one lane
        for i in range(1, len(taken) + 1):
            if i == len(taken) or taken[i][1] != taken[start][1]:
                self.lanes.submit([entry for entry, _ in taken[start:i]], taken[start][1])
                start = i


class AtMostOnceRouter(Router):
    """Failures of an at-most-once family: to the DLQ once, never to a retry tier."""

    async def route(
        self, entry: Entry, error: BaseException, *, event_type: str, envelope: Any = None
    ) -> None:
        headers = h.decode(entry.headers)
        plan = plan_at_most_once(
            family=self._family_name,
            prefix=self._config.prefix,
            error=error,
            headers=headers,
            origin=h.Origin(entry.topic, entry.partition, entry.offset, entry.timestamp_ms),
            now_ms=self._clock_ms(),
        )
        self._log_dead_letter(entry, plan, event_type)
        sent = await self._send_once(entry, plan)
        entry.finish()  # committed already: the log only keeps its backlog count
        if sent is None:
            self._metrics.events.labels(self._family_name, "lost").inc()
            return
        self._count(plan)
        if self._status is not None:
            self._note_routed(plan, headers, sent, event_type, envelope)

    async def _send_once(self, entry: Entry, plan: DeadLetter) -> Any:
        """One produce of the unchanged record to the DLQ; its metadata, or None (logged)."""
        try:
            fut = await self._producer.send(
                plan.topic, entry.key, entry.value, entry.partition, None, h.encode(plan.headers)
            )
            return (await fut) or True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._metrics.route_failures.labels(self._family_name).inc()
            log.error(
                "%s: the DLQ %s %s the record at %s[%d]@%d (%r): at most once, it is lost",
                self._family_name,
                plan.topic,
                "refused" if refused_by_topic(exc) else "did not take",
                entry.topic,
                entry.partition,
                entry.offset,
                exc,
            )
            return None
