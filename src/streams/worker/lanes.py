"""Lanes: one family's fixed pool of handler workers over its admitted records.

``submit`` queues admitted entries (a whole fetched batch at a time); ``concurrency``
long-lived worker coroutines take them in order and run each through the processor. Records
of one key (per partition) run one after another, records of different keys concurrently: a
worker that takes a record whose key is busy appends it to that key's chain, and the worker
running the key takes the chain's next record when it is done. No task is created per
record, and the in-flight gauge is set once per batch and per worker wake-up.

A record whose partition is being given up (``PartitionLog.stopping``) or closed is skipped
unfinished: its next owner reads it again. ``wait_idle`` waits for the records that are
running; ``cancel`` cancels them past the drain deadline (the worker survives and carries
on). A worker yields to the event loop every ``YIELD_EVERY`` records, so handlers that never
suspend cannot starve the fetch and the changelog writers.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from streams.catalog import Family
from streams.worker.ordering import Entry
from streams.worker.priority import PriorityReady

log = logging.getLogger(__name__)

YIELD_EVERY = 64


class RecordProcessor(Protocol):
    """What the lanes run records through (``Processor``, or ``StrictProcessor`` in front
    of it)."""

    @property
    def family(self) -> Family: ...
    async def process(self, entry: Entry) -> None: ...


class Gate(Protocol):
    @property
    def open(self) -> bool: ...
    async def wait(self) -> bool: ...


class Lanes:
    """One family's handler pool: concurrency, key chains, what runs per partition."""

    def __init__(
        self,
        processor: RecordProcessor,
        *,
        concurrency: int,
        on_in_flight: Any,
        gate: Gate | None = None,
        ready: PriorityReady | None = None,
    ) -> None:
        """``gate``: checked before each record, waited on while closed; a wait that ends
        False leaves the record unfinished (a paused family released at shutdown,
        ``worker/control.py``). ``ready``: the lanes' queue of a family with priority
        lanes (``worker/priority.py``); else one FIFO."""
        self.processor = processor
        self._gate = gate
        self.family = processor.family.name
        self._concurrency = concurrency
        self._ready: deque[Entry] | PriorityReady = ready if ready is not None else deque()
        self._priority = ready
        self._takeable = ready.takeable if ready is not None else self._ready.__len__
        self._wake = asyncio.Event()
        self._chains: dict[tuple[Any, bytes | None], deque[Entry]] = {}
        self._running: dict[Any, int] = {}  # tp -> records running now
        self._current: dict[int, Entry] = {}  # worker slot -> the record it runs
        self._cancelling: set[int] = set()
        self._idle: dict[Any, asyncio.Event] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._gauge = on_in_flight
        self._in_flight = 0
        self._stopping = False
        # told of each record leaving the pool, and whether it ran (an at-most-once family's
        # front, ``worker/at_most_once.py``: one that did not run was committed, so lost)
        self.on_settle: Callable[[Entry, bool], None] | None = None

    @property
    def in_flight(self) -> int:
        """Records admitted and not yet finished or skipped (the heartbeat reports it)."""
        return self._in_flight

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._workers = [
            loop.create_task(self._work(slot), name=f"lanes.{self.family}.{slot}")
            for slot in range(self._concurrency)
        ]

    def submit(self, entries: Iterable[Entry], lane: str | None = None) -> None:
        """Queue admitted entries (in offset order per partition) to run; ``lane``: their
        priority lane (None: the lane in their header, for a family with lanes)."""
        if not self._workers:
            self._start()
        ready = self._ready
        before = len(ready)
        if isinstance(ready, deque):
            ready.extend(entries)
        else:
            ready.extend(entries, lane)
        added = len(ready) - before
        if added:
            self._in_flight += added
            self._gauge.set(self._in_flight)
            self._wake.set()

    async def admit(self, entry: Entry) -> None:
        """Queue one entry (a retry tier's scheduler, when its due time came)."""
        self.submit((entry,))

    async def stop(self) -> None:
        self._stopping = True
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    # --- the workers ----------------------------------------------------------------------

    async def _work(self, slot: int) -> None:
        """A pool worker; a stray cancellation (not ``stop``) does not end it."""
        while True:
            try:
                await self._take(slot)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._stopping or task is None:
                    raise
                task.uncancel()
                log.warning("%s: a handler worker was cancelled; it carries on", self.family)

    async def _take(self, slot: int) -> None:
        ready = self._ready
        takeable = self._takeable
        chains = self._chains
        since_yield = 0
        while True:
            if not takeable():
                self._gauge.set(self._in_flight)
                self._wake.clear()
                await self._wake.wait()
                continue
            entry = ready.popleft()
            chain_key = (entry.log.tp, entry.key)
            chain = chains.get(chain_key)
            if chain is not None:  # its key is running: the worker running it takes it next
                chain.append(entry)
                continue
            chain = chains[chain_key] = deque()
            try:
                while True:
                    await self._run(slot, entry)
                    since_yield += 1
                    if since_yield >= YIELD_EVERY:
                        since_yield = 0
                        await asyncio.sleep(0)
                    if not chain:
                        break
                    entry = chain.popleft()
            finally:  # left by a cancellation: records queued behind the key are not lost
                queued = chains.pop(chain_key, None)
                if queued and not self._stopping:
                    ready.extendleft(reversed(queued))  # ahead of the key's later records
                    self._wake.set()
                else:
                    for skipped in queued or ():
                        self._settle(skipped, ran=False)

    async def _run(self, slot: int, entry: Entry) -> None:
        plog = entry.log
        gate = self._gate
        if gate is not None and not gate.open and not await gate.wait():
            self._settle(entry, ran=False)
            return
        if plog.stopping or plog.closed:
            self._settle(entry, ran=False)
            return
        tp = plog.tp
        self._running[tp] = self._running.get(tp, 0) + 1
        idle = self._idle.get(tp)
        if idle is not None:
            idle.clear()
        self._current[slot] = entry
        try:
            await self.processor.process(entry)
        except asyncio.CancelledError:
            if slot not in self._cancelling:
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
        except Exception:  # process() never raises; this is a last line of defence
            log.exception("%s: unexpected error processing a record", self.family)
        finally:
            self._cancelling.discard(slot)
            self._current.pop(slot, None)
            left = self._running.get(tp, 1) - 1
            if left <= 0:
                self._running.pop(tp, None)
                idle = self._idle.get(tp)
                if idle is not None:
                    idle.set()
            else:
                self._running[tp] = left
            self._settle(entry, ran=True)

    def _settle(self, entry: Entry, *, ran: bool) -> None:
        """``entry`` left the pool (ran, or skipped unfinished)."""
        self._in_flight -= 1
        if entry.lane is not None and self._priority is not None:
            self._priority.finished(entry)  # a lower lane's slot may be free again
            self._wake.set()
        if self.on_settle is not None:
            self.on_settle(entry, ran)

    # --- revoke and shutdown ----------------------------------------------------------------

    async def wait_idle(self, tps: set[Any], timeout_s: float) -> bool:
        """Wait until no record of ``tps`` runs; False when ``timeout_s`` passed first.
        (Their logs are stopping: nothing new of ``tps`` starts.)"""
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
        """Cancel the records of ``tps`` still running (past the drain deadline)."""
        doomed = [slot for slot, entry in self._current.items() if entry.log.tp in tps]
        for slot in doomed:
            self._cancelling.add(slot)
            self._workers[slot].cancel()
        return len(doomed)

    def running(self) -> int:
        return self._in_flight

    def saturated(self) -> bool:
        """Every handler slot is taken (records wait for a slot, not for a fetch)."""
        return len(self._current) >= self._concurrency
