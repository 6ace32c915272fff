"""Lanes: how records of one topic enter a family's processor.

A lane is the body of one faust agent. It iterates the stream without acks (``noack``),
gives each record an entry in its partition's ordered log, and runs it with bounded
concurrency (a semaphore shared by the family's lanes) while keeping per-key order: records
of one key run one after another, records of different keys concurrently. A retry lane first
holds each record in the ``DueScheduler`` until its due time.

Records admitted while the lane's partition is being revoked, or while the worker drains for
shutdown, are left unacked (their next owner reads them again).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from streams.core import headers as h
from streams.core.planner import is_due
from streams.worker.ordering import Entry, PartitionLog
from streams.worker.processor import Processor
from streams.worker.scheduler import DueScheduler

log = logging.getLogger(__name__)


class Gate(Protocol):
    @property
    def open(self) -> bool: ...
    async def wait(self) -> bool: ...


class Lanes:
    """Shared state of one family's lanes: concurrency, key chains, running tasks."""

    def __init__(
        self,
        processor: Processor,
        *,
        concurrency: int,
        on_in_flight: Any,
        gate: Gate | None = None,
    ) -> None:
        """``gate``: checked before each record, waited on while closed; a wait that ends
        False leaves the record unacked (a paused family released at shutdown,
        ``worker/control.py``)."""
        self.processor = processor
        self._gate = gate
        self.family = processor.family.name
        self._sem = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._chains: dict[tuple[Any, bytes | None], deque[Entry]] = {}
        self._tasks: dict[tuple[Any, bytes | None], asyncio.Task[None]] = {}
        self._running: dict[Any, int] = {}
        self._idle: dict[Any, asyncio.Event] = {}
        self._gauge = on_in_flight
        self._in_flight = 0

    async def admit(self, entry: Entry) -> None:
        """Run ``entry`` when a slot is free, after earlier records of its key."""
        gate = self._gate
        if gate is not None and not gate.open and not await gate.wait():
            return
        await self._sem.acquire()
        if entry.log.closed:
            self._sem.release()
            return
        self._in_flight += 1
        self._gauge.set(self._in_flight)
        tp = entry.log.tp
        self._running[tp] = self._running.get(tp, 0) + 1
        idle = self._idle.get(tp)
        if idle is not None:
            idle.clear()
        chain_key = (tp, entry.key)
        chain = self._chains.get(chain_key)
        if chain is not None:
            chain.append(entry)
            return
        self._chains[chain_key] = deque()
        task = asyncio.get_running_loop().create_task(self._run(entry, chain_key))
        self._tasks[chain_key] = task
        task.add_done_callback(lambda t: self._cancelled_before_start(t, entry, chain_key))

    async def _run(self, entry: Entry, chain_key: tuple[Any, bytes | None]) -> None:
        while True:
            try:
                if not entry.log.closed:
                    await self.processor.process(entry)
            except asyncio.CancelledError:
                self._done(entry)
                for queued in self._chains.pop(chain_key, ()):
                    self._done(queued)
                self._tasks.pop(chain_key, None)
                raise
            except Exception:  # process() never raises; this is a last line of defence
                log.exception("%s: unexpected error processing a record", self.family)
            self._done(entry)
            chain = self._chains.get(chain_key)
            if not chain:
                self._chains.pop(chain_key, None)
                self._tasks.pop(chain_key, None)
                return
            entry = chain.popleft()

    def _cancelled_before_start(
        self, task: asyncio.Task[None], entry: Entry, chain_key: tuple[Any, bytes | None]
    ) -> None:
        """A chain task cancelled before its first step never ran ``_run``'s cleanup:
        release its slot and its queued records here (``_run`` unregisters itself)."""
        if self._tasks.get(chain_key) is not task:
            return
        del self._tasks[chain_key]
        self._done(entry)
        for queued in self._chains.pop(chain_key, ()):
            self._done(queued)

    def _done(self, entry: Entry) -> None:
        self._sem.release()
        self._in_flight -= 1
        self._gauge.set(self._in_flight)
        tp = entry.log.tp
        left = self._running.get(tp, 1) - 1
        if left <= 0:
            self._running.pop(tp, None)
            idle = self._idle.get(tp)
            if idle is not None:
                idle.set()
        else:
            self._running[tp] = left

    async def wait_idle(self, tps: set[Any], timeout_s: float) -> bool:
        """Wait until no record of ``tps`` runs; False when ``timeout_s`` passed first."""
        events = []
        for tp in tps:
            if self._running.get(tp):
                event = self._idle.setdefault(tp, asyncio.Event())
                event.clear()
                events.append(event)
        if not events:
            return True
        try:
            async with asyncio.timeout(timeout_s):
                for event in events:
                    await event.wait()
        except TimeoutError:
            return False
        return True

    def cancel(self, tps: set[Any]) -> int:
        """Cancel what still runs for ``tps`` (past the drain deadline); returns how many."""
        doomed = [task for (tp, _), task in self._tasks.items() if tp in tps]
        for task in doomed:
            task.cancel()
        return len(doomed)

    def running(self) -> int:
        return self._in_flight

    def saturated(self) -> bool:
        """Every handler slot is taken (records wait for a slot, not for a fetch)."""
        return self._in_flight >= self._concurrency


class Lane:
    """The agent body for one topic of a family."""

    def __init__(
        self,
        lanes: Lanes,
        *,
        topic: str,
        log_for: Callable[[Any, int], PartitionLog | None],
        admission: Callable[[], Awaitable[None]] | None = None,
        scheduler: DueScheduler | None,
        clock_ms: Callable[[], int],
        skew_margin_ms: int,
    ) -> None:
        self.lanes = lanes
        self.topic = topic
        self._log_for = log_for
        self._admission = admission
        self.scheduler = scheduler
        self._clock_ms = clock_ms
        self._skew_margin_ms = skew_margin_ms

    async def consume(self, stream: Any) -> None:
        """faust agent body: never lets an exception escape (faust would ack and crash)."""
        async for event in stream.noack().events():
            try:
                await self._admit(event)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: failed to admit a record of %s", self.lanes.family, self.topic)

    async def _admit(self, event: Any) -> None:
        if self._admission is not None:
            await self._admission()  # the in-sequence check below sorts out stale records
        plog = self._log_for(event.message.tp, event.message.offset)
        if plog is None:  # revoked, draining, or not (yet) ours: leave unacked
            return
        entry = plog.add(event)
        if self.scheduler is not None:
            headers = h.decode(event.message.headers)
            wait_ms = is_due(headers, self._clock_ms(), self._skew_margin_ms)
            if wait_ms > 0:
                self.scheduler.add(entry, self._clock_ms() + wait_ms)
                return
        await self.lanes.admit(entry)
