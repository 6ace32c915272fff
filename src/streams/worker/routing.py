"""Where a failed record goes: the planner's decision (retry tier or DLQ) carried out.

The record's key and value are never rewritten on the way: the unchanged bytes are produced
with the failure headers to the same partition number, and the entry is finished (acked in
offset order) only once the broker has acknowledged the copy. A retry tier that refuses the
record for good becomes a DLQ record (``unroutable``); a refusing DLQ is retried like any
failure, so the record is never dropped.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from streams.catalog import Family
from streams.core import headers as h
from streams.core.idempotency import RouteMarkers
from streams.core.planner import DeadLetter, Retry, plan_failure
from streams.errors import Unroutable
from streams.metrics import Metrics
from streams.worker.ledger import Ledger
from streams.worker.ordering import Entry
from streams.worker.ports import Producer
from streams.worker.status import StatusRecorder

if TYPE_CHECKING:
    from streams.worker.processor import ProcessorConfig

log = logging.getLogger(__name__)


class Router:
    """One family's routing of failures to its retry tiers and DLQ."""

    def __init__(
        self,
        *,
        family: Family,
        config: ProcessorConfig,
        producer: Producer,
        metrics: Metrics,
        clock_ms: Callable[[], int],
        rand: Callable[[], float] = random.random,
        status: StatusRecorder | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        self._family = family
        self._family_name = family.name
        self._config = config
        self._producer = producer
        self._metrics = metrics
        self._clock_ms = clock_ms
        self._rand = rand
        self._status = status
        self._ledger = ledger
        self._routed = RouteMarkers()
        # acks the entry once its copy is acknowledged (and its route marker durable);
        # strict ordering acks it once the key's hold is durable too (``worker/strict_glue.py``)
        self.finish_routed: Callable[[Entry, Retry | DeadLetter], None] = self._finish_routed

    async def route(
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
            family=self._family_name,
            prefix=self._config.prefix,
            retry=self._family.retry,
            error=error,
            headers=headers,
            origin=origin,
            now_ms=self._clock_ms(),
            rand=self._rand,
            default_max_defer_ms=self._config.default_max_defer_ms,
        )
        if isinstance(plan, DeadLetter):
            self._log_dead_letter(entry, plan, event_type)
        sent = await self._produce(entry, plan)
        if sent is None:
            return  # partition revoked meanwhile: left unacked, the next owner retries
        self._count(plan)
        self.finish_routed(entry, plan)
        if self._status is not None:
            self._note_routed(plan, headers, sent, event_type, envelope)

    def routed_before(self, entry: Entry) -> bool:
        """The record at ``entry``'s position was routed already and its marker is durable
        or on its way (a redelivery after a rebalance or a crash): ack it, route it not."""
        ledger = self._ledger
        return ledger is not None and ledger.seen(
            entry.partition, self._routed.of(entry.topic, entry.offset)
        )

    def _finish_routed(self, entry: Entry, plan: Retry | DeadLetter) -> None:
        """Ack once the record's route marker is durable (``core/idempotency.route_hash``):
        a redelivery of it is then acked without a second retry or DLQ copy."""
        if self._ledger is None:
            entry.finish()
            return
        marker = self._routed.of(entry.topic, entry.offset)
        self._ledger.record(entry.partition, marker, entry.finish)

    def _log_dead_letter(self, entry: Entry, plan: DeadLetter, event_type: str) -> None:
        log.warning(
            "%s: event at %s[%d]@%d (%s) to the DLQ: %s: %s",
            self._family_name,
            entry.topic,
            entry.partition,
            entry.offset,
            event_type,
            plan.reason,
            plan.headers.get(h.ERROR_MESSAGE, ""),
        )

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
                self._family_name,
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
                self._family_name,
                event_type,
                tenant,
                "deferred" if plan.deferred else "retrying",
                plan.attempt,
                due_at_ms=plan.due_at_ms,
                error_class=error_class,
                reason=plan.deferred_by,
            )

    def _count(self, plan: Retry | DeadLetter) -> None:
        m, fam = self._metrics, self._family_name
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
                self._metrics.route_failures.labels(self._family_name).inc()
                refused = refused_by_topic(exc)
                if refused and isinstance(plan, Retry):
                    log.warning(
                        "%s: %s refused the record at %s[%d]@%d (%r): to the DLQ",
                        self._family_name,
                        plan.topic,
                        entry.topic,
                        entry.partition,
                        entry.offset,
                        exc,
                    )
                    plan = self._unroutable(entry, plan, exc)
                    continue
                (log.error if refused else log.warning)(
                    "%s: producing to %s failed (%r); retrying", self._family_name, plan.topic, exc
                )
                await asyncio.sleep(self._config.route_retry_backoff_s)
        return None

    def _unroutable(self, entry: Entry, plan: Retry, exc: BaseException) -> DeadLetter:
        error = Unroutable(f"{plan.topic} refused the record: {type(exc).__name__}")
        dead = plan_failure(
            family=self._family_name,
            prefix=self._config.prefix,
            retry=self._family.retry,
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
