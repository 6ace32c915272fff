"""One family's pipeline for one record: decode -> idempotency -> rate limit -> handler
(with timeout and circuit breakers) -> outcome.

The outcome is carried out here and the entry is finished (acked in offset order) only once
it is durable: the done-marker batch acknowledged, or the retry/DLQ record acknowledged by the
broker. The record's key and value are never rewritten on the way to a retry tier or the DLQ.
Nothing raises out of ``process``: every exception becomes a routing decision.

With a control plane (``worker/control.py``) a cancelled event is acked with outcome
``cancelled`` instead of run, and a running handler's ``ctx.cancel`` is set; with status
tracking (``worker/status.py``) every transition is noted for ``streams.status``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from streams.catalog import Family
from streams.core import headers as h
from streams.core.idempotency import event_hash
from streams.core.planner import DeadLetter, Retry, plan_failure
from streams.errors import Cancelled, DecodeError, Permanent, Retryable, Suppressed, Unroutable
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
from streams.worker.breakers import unwatch_interrupted, watch_interrupted
from streams.worker.control import WorkerControl
from streams.worker.deadlines import Deadlines
from streams.worker.ledger import Ledger
from streams.worker.ordering import Entry
from streams.worker.status import StatusRecorder

log = logging.getLogger(__name__)


class Decoder(Protocol):
    def decode_event(self, data: bytes) -> Any: ...


class Producer(Protocol):
    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
    ) -> Awaitable[Any]: ...


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
    ) -> None:
        self.family = family
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
        timeout_s = config.handler_timeout_s
        self._deadlines = Deadlines(tick_s=min(0.25, max(0.01, timeout_s / 20)))

    async def process(self, entry: Entry) -> None:
        """Run one record to a durable outcome. Never raises (but lets cancellation through)."""
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
        ledger = self._ledger
        if ledger is not None and ledger.seen(entry.partition, digest):
            self._dup.inc()
            self._dup_skipped.inc()
            entry.finish()
            return
        control = self._control
        if control is not None and control.cancelled(envelope.event_id, envelope.tenant_id):
            self._finish(entry, envelope, digest, "cancelled", reason="cancel requested")
            return
        try:
            headers = h.decode(entry.headers)
            if self._gate is not None:
                self._gate.check(event, entry, headers)
            await self._run_handler(event, entry, headers)
        except asyncio.CancelledError:
            raise
        except Suppressed as exc:  # not delivered on purpose: acked like done, counted
            log.info("%s: event %s suppressed: %s", self._name, envelope.event_id, exc)
            self._finish(entry, envelope, digest, "suppressed", reason=str(exc) or "suppressed")
            return
        except Cancelled as exc:
            self._finish(entry, envelope, digest, "cancelled", reason=str(exc) or "cancelled")
            return
        except Exception as exc:
            await self._route(entry, exc, event_type=envelope.event_type, envelope=envelope)
            return
        self._done.inc()
        self._latency.observe(max(0.0, (self._clock_ms() - envelope.occurred_at_ms) / 1000))
        if self._status is None:
            if ledger is not None:
                ledger.record(entry.partition, digest, entry.finish)
            else:
                entry.finish()
            return
        self._finish(entry, envelope, digest, "done", attempt=h.attempt_of(headers))

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
        envelope = event.envelope
        attempt = h.attempt_of(headers)
        if self._status is not None:
            stamp_ms = entry.timestamp_ms  # the first attempt's: when it was published
            published_ms = stamp_ms if attempt == 1 and stamp_ms else None
            self._status.note(
                envelope.event_id,
                self._name,
                event_type,
                envelope.tenant_id,
                "running",
                attempt,
                published_at_ms=published_ms,
            )
        if self._control is None:
            return self._call(handler, event, entry, headers, attempt, NEVER_CANCELLED)
        return self._controlled(handler, event, entry, headers, attempt)

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
        headers = h.decode(entry.headers)
        origin = h.Origin(
            topic=entry.topic,
            partition=entry.partition,
            offset=entry.offset,
            timestamp_ms=entry.timestamp_ms,
        )
        plan = plan_failure(
            family=self._name,
            prefix=self._config.prefix,
            retry=self.family.retry,
            error=error,
            headers=headers,
            origin=origin,
            now_ms=self._clock_ms(),
            rand=self._rand,
            default_max_defer_ms=self._config.default_max_defer_ms,
        )
        if isinstance(plan, DeadLetter):
            log.warning(
                "%s: event at %s[%d]@%d (%s) to the DLQ: %s: %s",
                self._name,
                entry.topic,
                entry.partition,
                entry.offset,
                event_type,
                plan.reason,
                plan.headers.get(h.ERROR_MESSAGE, ""),
            )
        sent = await self._produce(entry, plan)
        if sent is None:
            return  # partition revoked meanwhile: left unacked, the next owner retries
        self._count(plan)
        entry.finish()
        if self._status is not None:
            self._note_routed(plan, headers, sent, event_type, envelope)

    def _note_routed(
        self,
        plan: Retry | DeadLetter,
        headers: Mapping[str, str],
        sent: Any,
        event_type: str,
        envelope: Any,
    ) -> None:
        assert self._status is not None
        event_id = envelope.event_id if envelope is not None else headers.get(h.EVENT_ID)
        if not event_id:
            return  # undecodable and unnamed: the DLQ has it, no status can
        tenant = envelope.tenant_id if envelope is not None else None
        error_class = plan.headers.get(h.ERROR_CLASS)
        if isinstance(plan, DeadLetter):
            where = (sent.topic, sent.partition, sent.offset) if hasattr(sent, "offset") else None
            self._status.note(
                event_id,
                self._name,
                event_type,
                tenant,
                "dead_lettered",
                h.attempt_of(headers),
                error_class=error_class,
                reason=plan.reason,
                dlq=where,
            )
        else:
            self._status.note(
                event_id,
                self._name,
                event_type,
                tenant,
                "deferred" if plan.deferred else "retrying",
                plan.attempt,
                due_at_ms=plan.due_at_ms,
                error_class=error_class,
                reason=plan.deferred_by,
            )

    def _count(self, plan: Retry | DeadLetter) -> None:
        m, fam = self._metrics, self._name
        if isinstance(plan, DeadLetter):
            m.dead_letters.labels(fam, plan.reason).inc()
            fingerprint = plan.headers.get(h.ERROR_FINGERPRINT) or "none"
            m.dead_letter_fingerprints.labels(fam, plan.reason, fingerprint).inc()
            m.events.labels(fam, "dead_lettered").inc()
        elif plan.deferred:
            m.deferrals.labels(fam, plan.deferred_by or "other").inc()
            m.events.labels(fam, "deferred").inc()
        else:
            m.retries.labels(fam, plan.topic).inc()
            m.events.labels(fam, "retried").inc()

    async def _produce(self, entry: Entry, plan: Retry | DeadLetter) -> Any:
        """Send the unchanged key and value with the new headers to the same partition number;
        retry until the broker acknowledges (returns the record's metadata) or the partition
        is revoked (returns None). A retry tier that refuses the record for good (too large
        with its failure headers, invalid there) sends it to the DLQ instead (``unroutable``);
        a refusing DLQ is retried like any failure (the record is never dropped) and logged
        as an error."""
        while not entry.log.closed:
            try:
                fut = await self._producer.send(
                    plan.topic,
                    entry.key,
                    entry.value,
                    entry.partition,
                    None,
                    h.encode(plan.headers),
                )
                return (await fut) or True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._metrics.route_failures.labels(self._name).inc()
                refused = refused_by_topic(exc)
                if refused and isinstance(plan, Retry):
                    log.warning(
                        "%s: %s refused the record at %s[%d]@%d (%r): to the DLQ",
                        self._name,
                        plan.topic,
                        entry.topic,
                        entry.partition,
                        entry.offset,
                        exc,
                    )
                    plan = self._unroutable(entry, plan, exc)
                    continue
                (log.error if refused else log.warning)(
                    "%s: producing to %s failed (%r); retrying", self._name, plan.topic, exc
                )
                await asyncio.sleep(self._config.route_retry_backoff_s)
        return None

    def _unroutable(self, entry: Entry, plan: Retry, exc: BaseException) -> DeadLetter:
        error = Unroutable(f"{plan.topic} refused the record: {type(exc).__name__}")
        dead = plan_failure(
            family=self._name,
            prefix=self._config.prefix,
            retry=self.family.retry,
            error=error,
            headers=h.decode(entry.headers),
            origin=h.Origin(entry.topic, entry.partition, entry.offset, entry.timestamp_ms),
            now_ms=self._clock_ms(),
            rand=self._rand,
            default_max_defer_ms=self._config.default_max_defer_ms,
        )
        assert isinstance(dead, DeadLetter)
        return dead


# Kafka error codes of a topic refusing a record for good: MESSAGE_TOO_LARGE,
# RECORD_LIST_TOO_LARGE, INVALID_RECORD (aiokafka's errors carry the code as ``errno``; its
# ``retriable`` flag cannot tell them apart: a request timeout is "not retriable" too)
_REFUSED_ERRNOS = frozenset({10, 18, 87})


def refused_by_topic(exc: BaseException) -> bool:
    return getattr(exc, "errno", None) in _REFUSED_ERRNOS
