"""One family's pipeline for one record: decode -> idempotency -> rate limit -> handler
(with timeout and circuit breakers) -> outcome.

The outcome is carried out here and the entry is finished (acked in offset order) only once
it is durable: the done-marker batch acknowledged, or the retry/DLQ record acknowledged by the
broker. The record's key and value are never rewritten on the way to a retry tier or the DLQ.
Nothing raises out of ``process``: every exception becomes a routing decision.

With a control plane (``worker/control.py``) a cancelled event is acked with outcome
``cancelled`` instead of run, and a running handler's ``ctx.cancel`` is set; with status
tracking (``worker/status.py``) every transition is noted for ``streams.status``.

An event type with a batch handler leaves the pipeline after the rate gate: it waits for
its batch in ``worker/batching.py``, which hands each event's outcome back here
(``settle_done``, ``settle_failure``: the same outcomes as a plain handler's).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from streams.catalog import Family
from streams.core import headers as h
from streams.core.idempotency import event_hash
from streams.errors import Cancelled, DecodeError, Permanent, Retryable, Suppressed
from streams.jobs.base import (
    NEVER_CANCELLED,
    CancelSignal,
    DependencyGuard,
    JobContext,
    JobTable,
    no_guard,
)
from streams.jobs.registry import HandlerRegistry
from streams.metrics import Metrics
from streams.worker.at_most_once import AtMostOnceRouter
from streams.worker.batching import Batcher, Batches
from streams.worker.breakers import unwatch_interrupted, watch_interrupted
from streams.worker.control import WorkerControl
from streams.worker.deadlines import Deadlines
from streams.worker.ledger import Ledger
from streams.worker.ordering import Entry
from streams.worker.ports import Producer
from streams.worker.routing import Router
from streams.worker.status import StatusRecorder

log = logging.getLogger(__name__)


class Decoder(Protocol):
    def decode_event(self, data: bytes) -> Any: ...


class RateGate(Protocol):
    """Raises Deferred or Rejected when the event is over a limit (issue: rate limits)."""

    def check(self, event: Any, entry: Entry, headers: Mapping[str, str]) -> None: ...


class NoHandler(Permanent):
    """No handler is registered for the event type."""


@dataclass
class ProcessorConfig:
    prefix: str
    handler_timeout_s: float
    default_max_defer_ms: int
    route_retry_backoff_s: float = 0.5


class Processor:
    def __init__(
        self,
        *,
        family: Family,
        config: ProcessorConfig,
        decoder: Decoder,
        handlers: HandlerRegistry,
        producer: Producer,
        ledger: Ledger | None,
        metrics: Metrics,
        clock_ms: Callable[[], int],
        guard: DependencyGuard = no_guard,
        on_dependency_timeout: Callable[[str], None] = lambda name: None,
        gate: RateGate | None = None,
        rand: Callable[[], float] = random.random,
        tables: Mapping[str, JobTable] | None = None,
        control: WorkerControl | None = None,
        status: StatusRecorder | None = None,
        monotonic_ms: Callable[[], int] = lambda: int(time.monotonic() * 1000),
    ) -> None:
        """``monotonic_ms`` times the batches' waits (a wall-clock step must not stretch
        them); ``clock_ms`` is the wall clock of due times and latencies."""
        self.family = family
        self._monotonic_ms = monotonic_ms
        self._name = family.name
        self._config = config
        self._decoder = decoder
        self._handlers = handlers
        self._producer = producer
        self._ledger = ledger
        self._metrics = metrics
        self._clock_ms = clock_ms
        self._guard = guard
        self._on_dependency_timeout = on_dependency_timeout
        self._gate = gate
        self._rand = rand
        self._tables: Mapping[str, JobTable] = tables if tables is not None else {}
        self._suppressed = metrics.events.labels(family.name, "suppressed")
        self._control = control
        self._status = status
        m = metrics
        fam = family.name
        self._done = m.events.labels(fam, "done")
        self._dup = m.events.labels(fam, "duplicate")
        self._dup_skipped = m.duplicates.labels(fam)
        self._cancelled = m.events.labels(fam, "cancelled")
        self._latency = m.end_to_end_latency.labels(fam)
        self._durations: dict[str, Any] = {}  # event type -> histogram child
        router = AtMostOnceRouter if family.delivery == "at_most_once" else Router
        self.router = router(
            family=family,
            config=config,
            producer=producer,
            metrics=metrics,
            clock_ms=clock_ms,
            rand=rand,
            status=status,
            ledger=ledger,
        )
        timeout_s = config.handler_timeout_s
        self._deadlines = Deadlines(tick_s=min(0.25, max(0.01, timeout_s / 20)))
        self._batched = handlers.batched_types()
        self.batches = Batches(self._batcher)

    def _batcher(self, event_type: str) -> Batcher | None:
        spec = self._handlers.batch_handler(event_type)
        if spec is None:
            return None
        return Batcher(
            family=self._name,
            event_type=event_type,
            spec=spec,
            settler=self,
            metrics=self._metrics,
            clock_ms=self._monotonic_ms,
            timeout_s=self._config.handler_timeout_s,
            guard=self._guard,
            on_dependency_timeout=self._on_dependency_timeout,
            tables=self._tables,
        )

    async def process(self, entry: Entry) -> None:
        """Run one record to a durable outcome. Never raises (but lets cancellation through)."""
        if self.router.routed_before(entry):
            self._skip_duplicate(entry)
            return
        try:
            event = self._decoder.decode_event(entry.value)  # type: ignore[arg-type]
        except DecodeError as exc:
            await self._route(entry, exc, event_type="?")
            return
        except Permanent as exc:  # e.g. a sensitive field with an unknown key id (crypto)
            await self._route(entry, exc, event_type="?")
            return
        except Exception as exc:  # a decoder bug must not lose the record
            await self._route(entry, DecodeError(f"decoder failed: {exc!r}"), event_type="?")
            return
        envelope = event.envelope
        digest = event_hash(envelope.event_id)
        if self.skip(entry, envelope, digest):
            return
        try:
            headers = h.decode(entry.headers)
            if self._gate is not None:
                self._gate.check(event, entry, headers)
            if envelope.event_type in self._batched:
                batcher = self.batches.get(envelope.event_type)
                assert batcher is not None
                batcher.add(event, entry, headers, digest, h.attempt_of(headers))
                return
            await self._run_handler(event, entry, headers)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self.settle_failure(entry, envelope, digest, exc)
            return
        self.settle_done(entry, envelope, digest, None, headers)

    # --- outcomes (a plain handler's, or each event's of a batch) -------------------------

    def skip(self, entry: Entry, envelope: Any, digest: int) -> bool:
        """Finish ``entry`` at once if its event is done already (a duplicate) or
        cancelled; True when it did."""
        ledger = self._ledger
        if ledger is not None and ledger.seen(entry.partition, digest):
            self._skip_duplicate(entry)
            return True
        control = self._control
        if control is not None and control.cancelled(envelope.event_id, envelope.tenant_id):
            self._finish(entry, envelope, digest, "cancelled", reason="cancel requested")
            return True
        return False

    def _skip_duplicate(self, entry: Entry) -> None:
        """Ack a record whose event is done, or whose record was routed, already."""
        self._dup.inc()
        self._dup_skipped.inc()
        entry.finish()

    def settle_done(
        self,
        entry: Entry,
        envelope: Any,
        digest: int,
        attempt: int | None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """The event is done: its done-marker, then the entry finished (the attempt is read
        from ``headers`` when not given, only if status tracking needs it)."""
        self._done.inc()
        self._latency.observe(max(0.0, (self._clock_ms() - envelope.occurred_at_ms) / 1000))
        if self._status is None:
            if self._ledger is not None:
                self._ledger.record(entry.partition, digest, entry.finish)
            else:
                entry.finish()
            return
        if attempt is None:
            attempt = h.attempt_of(headers or {})
        self._finish(entry, envelope, digest, "done", attempt=attempt)

    async def settle_failure(
        self, entry: Entry, envelope: Any, digest: int, error: BaseException
    ) -> None:
        """The event failed with ``error``: suppressed and cancelled are acked as such,
        anything else goes to a retry tier or the DLQ."""
        if isinstance(error, Suppressed):  # not delivered on purpose: acked like done, counted
            log.info("%s: event %s suppressed: %s", self._name, envelope.event_id, error)
            self._finish(entry, envelope, digest, "suppressed", reason=str(error) or "suppressed")
        elif isinstance(error, Cancelled):
            self._finish(entry, envelope, digest, "cancelled", reason=str(error) or "cancelled")
        else:
            await self._route(entry, error, event_type=envelope.event_type, envelope=envelope)

    def _finish(
        self,
        entry: Entry,
        envelope: Any,
        digest: int,
        state: str,
        *,
        attempt: int | None = None,
        reason: str | None = None,
    ) -> None:
        """Ack as finished (done, cancelled) once the done-marker is durable, then note
        the final state."""
        if state == "cancelled":
            self._cancelled.inc()
        elif state == "suppressed":
            self._suppressed.inc()
        status = self._status
        if status is None:
            finished = entry.finish
        else:
            run = attempt if attempt is not None else h.attempt_of(h.decode(entry.headers))

            def finished() -> None:
                entry.finish()
                status.note(
                    envelope.event_id,
                    self._name,
                    envelope.event_type,
                    envelope.tenant_id,
                    state,
                    run,
                    reason=reason,
                )

        if self._ledger is not None:
            self._ledger.record(entry.partition, digest, finished)
        else:
            finished()

    def _run_handler(
        self, event: Any, entry: Entry, headers: dict[str, str]
    ) -> Coroutine[Any, Any, None]:
        """The handler's run (a coroutine to await; built without one more frame)."""
        event_type = event.envelope.event_type
        handler = self._handlers.get(event_type)
        if handler is None:
            raise NoHandler(f"no handler registered for {event_type}")
        attempt = h.attempt_of(headers)
        if self._status is not None:
            self.note_running(event.envelope, entry, attempt)
        if self._control is None:
            return self._call(handler, event, entry, headers, attempt, NEVER_CANCELLED)
        return self._controlled(handler, event, entry, headers, attempt)

    def note_running(self, envelope: Any, entry: Entry, attempt: int) -> None:
        """Status tracking: the event's handler starts (attempt ``attempt``)."""
        if self._status is None:
            return
        stamp_ms = entry.timestamp_ms  # the first attempt's: when it was published
        published_ms = stamp_ms if attempt == 1 and stamp_ms else None
        self._status.note(
            envelope.event_id,
            self._name,
            envelope.event_type,
            envelope.tenant_id,
            "running",
            attempt,
            published_at_ms=published_ms,
        )

    def cancel_signal(self, envelope: Any) -> CancelSignal:
        """The event's cancel signal while its (batch) handler runs."""
        if self._control is None:
            return NEVER_CANCELLED
        return self._control.register(envelope.event_id, envelope.tenant_id)

    def release_signal(self, envelope: Any, signal: CancelSignal) -> None:
        if self._control is not None:
            self._control.unregister(envelope.event_id, signal)

    async def _controlled(
        self, handler: Any, event: Any, entry: Entry, headers: dict[str, str], attempt: int
    ) -> None:
        assert self._control is not None
        control = self._control
        envelope = event.envelope
        signal = control.register(envelope.event_id, envelope.tenant_id)
        try:
            await self._call(handler, event, entry, headers, attempt, signal)
        except (asyncio.CancelledError, Cancelled):
            raise
        except Exception as exc:
            if signal.is_set:  # failed because it was told to stop
                raise Cancelled(signal.reason) from exc
            raise
        finally:
            control.unregister(envelope.event_id, signal)

    async def _call(
        self,
        handler: Any,
        event: Any,
        entry: Entry,
        headers: dict[str, str],
        attempt: int,
        signal: CancelSignal,
    ) -> None:
        event_type = event.envelope.event_type
        ctx = JobContext(
            event_id=event.envelope.event_id,
            event_type=event_type,
            family=self._name,
            attempt=attempt,
            headers=headers,
            topic=entry.topic,
            partition=entry.partition,
            offset=entry.offset,
            dependency=self._guard,
            tables=self._tables,
            cancel=signal,
        )
        timeout_s = self._config.handler_timeout_s
        started = time.perf_counter()
        token = self._deadlines.arm(timeout_s)
        hung, watching = watch_interrupted()
        try:
            await handler(event, ctx)
        except asyncio.CancelledError:
            if not token.expired:
                raise
            for name in hung:  # the dependency it hung on failed, for the breaker
                self._on_dependency_timeout(name)
            raise Retryable(f"handler timed out after {timeout_s:g}s") from None
        finally:
            unwatch_interrupted(watching)
            self._deadlines.disarm(token)
            if token.expired:  # the deadline's cancellation was ours: not the task's
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    task.uncancel()
            child = self._durations.get(event_type)
            if child is None:
                child = self._durations[event_type] = self._metrics.handler_duration.labels(
                    self._name, event_type
                )
            child.observe(time.perf_counter() - started)

    async def _route(
        self, entry: Entry, error: BaseException, *, event_type: str, envelope: Any = None
    ) -> None:
        await self.router.route(entry, error, event_type=event_type, envelope=envelope)
