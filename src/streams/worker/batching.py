"""Batch handlers in the worker: collect a family's events per event type, run them together,
carry each event's outcome out on its own.

The processor hands over an event of a type with a batch handler (``jobs/batch.py``) once
it passed decoding, the idempotency ledger, the cancel check and the rate gate, and returns
at once: the pool's slot is free, the entry stays unfinished. Each event type has one
``Batcher``: an ``Accumulator`` (``core/batching.py``, pure) and one runner task that waits
until a batch is ready (``max_events`` collected, or ``max_wait_ms`` after the oldest
arrived, on the injected monotonic clock), then runs it:

1. events of partitions being given up are left out (unfinished: the next owner redoes
   them); a second record of an event id already in the batch waits for the next batch;
   an event done meanwhile (its twin ran in an earlier batch) or cancelled meanwhile is
   finished as that, without running;
2. the handler runs once for the rest, under the family's handler timeout, with the
   family's circuit breakers as ``ctx.dependency`` and each event's own cancel signal;
3. each event's outcome is carried out by the processor as a plain handler's would be:
   done -> its done-marker in the ledger, the entry finished once the marker is durable;
   an error -> the retry tier or the DLQ by that error alone (``Router``), finished once the
   broker acknowledged the copy. Entries finish in any order; the partition's acks advance
   in offset order (``ordering.PartitionLog``), so "outcome durable before commit" holds
   for every event of a batch.

**Order.** One batch of an event type runs at a time, and events enter a batch in the
order the pool hands them over, which for one key is its offset order: a key's events
reach the handler in offset order, within a batch and across batches. An event that fails
goes to a retry tier and may be overtaken by its key's later events (as with plain
handlers); an event of another type of the same key, with a plain handler, may run before
an earlier batched one that still waits for its batch.

**Revoke and shutdown.** Waiting events of the partitions given up are dropped unfinished
(``drop``); a running batch that holds any of their events gets the drain deadline
(``wait_idle``), past it the handler call is cancelled (``cancel``): its events of the
partitions given up stay unfinished, its other events go back at the head of the queue
and run in the next batch. Carrying outcomes out is never cancelled this way (a route
that cannot finish ends when its partition's log closes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from streams.core.batching import Accumulator, Flush, split_twins
from streams.errors import Cancelled, Retryable
from streams.jobs.base import CancelSignal, DependencyGuard, JobContext, JobTable
from streams.jobs.batch import BatchContext, BatchSpec, Done, Outcome, match_outcomes
from streams.metrics import Metrics
from streams.worker.breakers import unwatch_interrupted, watch_interrupted
from streams.worker.ordering import Entry
from streams.worker.tp import TP

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Waiting:
    """One event waiting for (or running in) its batch."""

    event: Any
    entry: Entry
    headers: dict[str, str]
    digest: int
    attempt: int


class Settler(Protocol):
    """What a batch asks of its processor (``Processor`` implements it)."""

    def skip(self, entry: Entry, envelope: Any, digest: int) -> bool:
        """Finish ``entry`` without running it if it is done already or cancelled."""
        ...

    def note_running(self, envelope: Any, entry: Entry, attempt: int) -> None: ...

    def cancel_signal(self, envelope: Any) -> CancelSignal: ...

    def release_signal(self, envelope: Any, signal: CancelSignal) -> None: ...

    def settle_done(self, entry: Entry, envelope: Any, digest: int, attempt: int) -> None: ...

    async def settle_failure(
        self, entry: Entry, envelope: Any, digest: int, error: BaseException
    ) -> None: ...


def _given_up(w: Waiting) -> bool:
    plog = w.entry.log
    return plog.stopping or plog.closed


def _event_key(w: Waiting) -> tuple[int, int]:
    return (w.entry.partition, w.digest)


class Batcher:
    """One event type's batch handler: its accumulator and its runner task."""

    def __init__(
        self,
        *,
        family: str,
        event_type: str,
        spec: BatchSpec,
        settler: Settler,
        metrics: Metrics,
        clock_ms: Callable[[], int],
        timeout_s: float,
        guard: DependencyGuard,
        on_dependency_timeout: Callable[[str], None],
        tables: Mapping[str, JobTable],
    ) -> None:
        self.family = family
        self.event_type = event_type
        self._fn = spec.fn
        self._acc: Accumulator[Waiting] = Accumulator(spec.batch.max_events, spec.batch.max_wait_ms)
        self._max_events = spec.batch.max_events
        self._settler = settler
        self._clock_ms = clock_ms
        self._timeout_s = timeout_s
        self._guard = guard
        self._on_dependency_timeout = on_dependency_timeout
        self._tables = tables
        self._sizes = metrics.batch_size.labels(family, event_type)
        self._flushes = {
            reason: metrics.batch_flushes.labels(family, event_type, reason)
            for reason in ("full", "wait")
        }
        self._duration = metrics.handler_duration.labels(family, event_type)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running: list[Waiting] = []  # the batch whose handler runs now
        self._calling = False  # the handler call (not the outcomes) is under way
        self._cancelling = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False

    def __len__(self) -> int:
        """Events waiting for a batch or in the running one."""
        return len(self._acc) + len(self._running)

    def add(
        self, event: Any, entry: Entry, headers: dict[str, str], digest: int, attempt: int
    ) -> None:
        if self._task is None and not self._stopping:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"batch.{self.family}.{self.event_type}"
            )
        waiting = self._acc.add(Waiting(event, entry, headers, digest, attempt), self._clock_ms())
        if waiting == 1 or waiting >= self._max_events:
            self._wake.set()  # arm the timer, or flush now

    def poke(self) -> None:
        """Look at the clock again now (tests with a fake clock)."""
        self._wake.set()

    # --- the runner --------------------------------------------------------------------

    async def _run(self) -> None:
        """The runner; a stray cancellation (not ``stop``) does not end it."""
        while True:
            try:
                await self._next()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._stopping or task is None:
                    raise
                task.uncancel()
                log.warning("%s: a batch runner was cancelled; it carries on", self.family)
            except Exception:  # _flush never raises; a last line of defence
                log.exception(
                    "%s: unexpected error in the %s batch runner", self.family, self.event_type
                )

    async def _next(self) -> None:
        now_ms = self._clock_ms()
        flush = self._acc.take(now_ms)
        if flush is not None:
            await self._flush(flush)
            return
        wait_ms = self._acc.due_in_ms(now_ms)
        self._wake.clear()
        if wait_ms is None:
            await self._wake.wait()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_ms / 1000):
                await self._wake.wait()

    async def _flush(self, flush: Flush[tuple[int, Waiting]]) -> None:
        pairs = [pair for pair in flush.items if not _given_up(pair[1])]
        pairs, twins = split_twins(pairs, lambda pair: _event_key(pair[1]))
        if twins:
            self._acc.put_back(twins)
        settler = self._settler
        batch = [
            pair
            for pair in pairs
            if not settler.skip(pair[1].entry, pair[1].event.envelope, pair[1].digest)
        ]
        if not batch:
            return
        self._flushes[flush.reason].inc()
        self._sizes.observe(len(batch))
        items = [w for _, w in batch]
        self._running = items
        self._idle.clear()
        try:
            outcomes = await self._call(items)
        except asyncio.CancelledError:
            ours = self._cancelling
            self._cancelled(batch, ours=ours)
            if not ours:
                raise  # shutdown, or a stray cancellation (the runner carries on)
            return
        finally:
            self._cancelling = False
            self._running = []
            self._idle.set()
        await self._settle(items, outcomes)

    def _cancelled(self, batch: list[tuple[int, Waiting]], *, ours: bool) -> None:
        """The handler call was cancelled (``ours``: a partition given up past the drain
        deadline): events of partitions still owned run again in the next batch."""
        task = asyncio.current_task()
        if ours and task is not None:
            task.uncancel()
        again = [pair for pair in batch if not _given_up(pair[1])]
        self._acc.put_back(again)
        log.warning(
            "%s: a %s batch of %d event(s) was cancelled%s; %d run again",
            self.family,
            self.event_type,
            len(batch),
            " past the drain deadline" if ours else "",
            len(again),
        )

    async def _call(self, items: list[Waiting]) -> list[Outcome]:
        """The handler's outcome for each of ``items``; never raises but our cancellation."""
        settler = self._settler
        envelopes = [w.event.envelope for w in items]
        signals = [settler.cancel_signal(env) for env in envelopes]
        contexts = tuple(
            JobContext(
                event_id=env.event_id,
                event_type=self.event_type,
                family=self.family,
                attempt=w.attempt,
                headers=w.headers,
                topic=w.entry.topic,
                partition=w.entry.partition,
                offset=w.entry.offset,
                dependency=self._guard,
                tables=self._tables,
                cancel=signal,
            )
            for w, env, signal in zip(items, envelopes, signals, strict=True)
        )
        for w, env in zip(items, envelopes, strict=True):
            settler.note_running(env, w.entry, w.attempt)
        ctx = BatchContext(self.family, self.event_type, contexts, self._guard, self._tables)
        ids = [env.event_id for env in envelopes]
        hung, watching = watch_interrupted()
        started = time.perf_counter()
        self._calling = True
        try:
            outcomes = await self._guarded(items, ctx, ids, hung)
        finally:
            self._calling = False
            unwatch_interrupted(watching)
            self._duration.observe(time.perf_counter() - started)
            for env, signal in zip(envelopes, signals, strict=True):
                settler.release_signal(env, signal)
        return [
            Cancelled(signal.reason) if signal.is_set and _failed(o) else o
            for o, signal in zip(outcomes, signals, strict=True)
        ]

    async def _guarded(
        self, items: list[Waiting], ctx: BatchContext, ids: list[str], hung: list[str]
    ) -> list[Outcome]:
        events = [w.event for w in items]
        timeout = asyncio.timeout(self._timeout_s)
        try:
            async with timeout:
                result = await self._fn(events, ctx)
            return match_outcomes(ids, result)
        except asyncio.CancelledError:
            raise
        except TimeoutError as exc:
            if not timeout.expired():
                return [exc] * len(items)  # the handler's own TimeoutError: retryable
            for name in hung:  # the dependency it hung on failed, for the breaker
                self._on_dependency_timeout(name)
            error = Retryable(f"batch handler timed out after {self._timeout_s:g}s")
            return [error] * len(items)
        except Exception as exc:  # the whole call failed: each event gets that failure
            return [exc] * len(items)

    async def _settle(self, items: list[Waiting], outcomes: list[Outcome]) -> None:
        settler = self._settler
        failures = []
        for w, outcome in zip(items, outcomes, strict=True):
            envelope = w.event.envelope
            if isinstance(outcome, Done):
                settler.settle_done(w.entry, envelope, w.digest, w.attempt)
            else:
                failures.append(settler.settle_failure(w.entry, envelope, w.digest, outcome))
        if failures:  # each routed on its own, concurrently (one broker round trip)
            await asyncio.gather(*failures)

    # --- revoke and shutdown -----------------------------------------------------------

    def drop(self, tps: set[TP]) -> int:
        """Waiting events of ``tps`` leave unfinished (the next owner redoes them)."""
        return len(self._acc.drop(lambda w: w.entry.log.tp in tps))

    def _holds(self, tps: set[TP]) -> bool:
        return any(w.entry.log.tp in tps for w in self._running)

    async def wait_idle(self, tps: set[TP], timeout_s: float) -> bool:
        """Wait until the running batch holds no event of ``tps``; False past ``timeout_s``."""
        if not self._holds(tps):
            return True
        try:
            async with asyncio.timeout(timeout_s):
                while self._holds(tps):
                    await self._idle.wait()
        except TimeoutError:
            return False
        return True

    def cancel(self, tps: set[TP]) -> int:
        """Cancel the handler call of the running batch if it holds events of ``tps``;
        returns the number of batches cancelled (0 or 1)."""
        if self._task is None or not self._calling or not self._holds(tps):
            return 0
        self._cancelling = True
        self._task.cancel()
        return 1

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def _failed(outcome: Outcome) -> bool:
    return not isinstance(outcome, Done | Cancelled)


class Batches:
    """A family's batchers, one per event type with a batch handler (made on first use)."""

    def __init__(self, make: Callable[[str], Batcher | None]) -> None:
        self._make = make
        self._by_type: dict[str, Batcher] = {}

    def get(self, event_type: str) -> Batcher | None:
        batcher = self._by_type.get(event_type)
        if batcher is None:
            batcher = self._make(event_type)
            if batcher is not None:
                self._by_type[event_type] = batcher
        return batcher

    def __len__(self) -> int:
        return sum(len(b) for b in self._by_type.values())

    def drop(self, tps: set[TP]) -> int:
        return sum(b.drop(tps) for b in self._by_type.values())

    async def wait_idle(self, tps: set[TP], timeout_s: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        idle = True
        for batcher in self._by_type.values():
            idle = await batcher.wait_idle(tps, max(0.0, deadline - loop.time())) and idle
        return idle

    def cancel(self, tps: set[TP]) -> int:
        return sum(b.cancel(tps) for b in self._by_type.values())

    async def stop(self) -> None:
        for batcher in self._by_type.values():
            await batcher.stop()
