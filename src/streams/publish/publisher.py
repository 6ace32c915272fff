"""The producer SDK: validated, Avro-encoded events to their family's main topic.

``Publisher`` wraps one confluent-kafka ``Producer`` (acks=all, idempotence, murmur2
partitioner so keys land where aiokafka, faust and Java clients put them). A daemon thread
polls the producer, so delivery callbacks run without the caller's help: sync calls wait on
a threading event, async calls await an asyncio future resolved on their loop.

Before anything is sent an event is prepared (``streams.publish.prepare``: validated,
encoded, keyed, size-checked); a failure there raises and nothing reaches the broker. A
result is only returned for a record the broker acknowledged (``streams.publish.delivery``
keeps the verdicts); otherwise ``DeliveryFailed`` (the broker refused it, naming the Kafka
error) or ``BrokerUnavailable`` (no acknowledgement in time).

Just over ~400 lines: the four send paths (one/batch x sync/async) stay beside the producer
they drive, so the IO is in one place; the pure parts live in ``prepare``/``outgoing``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from confluent_kafka import KafkaException, Producer

from streams.broker.clients import base_conf, check_security
from streams.catalog import Catalog, load_catalog
from streams.errors import BatchPublishError, BrokerUnavailable, DeliveryFailed, PublishError
from streams.publish.delivery import Health, Pending, PendingPool, error_for, poll_loop
from streams.publish.outgoing import RECORD_OVERHEAD_BYTES, PublishResult
from streams.publish.prepare import BatchItem, HeadersArg, PreparedRecord, Preparer, Record
from streams.publish.records import ProduceArgs, event_ids_of, produce_args, topics_of
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.serde import SchemaStore

__all__ = ["BatchPublishError", "PreparedRecord", "PublishResult", "Publisher"]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())  # a library: silent unless the application logs

COMPRESSION = "lz4"
"""Measured against zstd and none on 200-byte events: see bench/README.md (P9)."""
LINGER_MS = 5
WAIT_GRACE_S = 5.0
"""How long past ``message.timeout.ms`` a caller waits for librdkafka's own verdict."""
_QUEUE_FULL_WAIT_S = 0.01
_QUEUE_FULL = "the local producer queue stayed full until the timeout"


class Publisher:
    """Publish validated events to Kafka; sync and asyncio; thread-safe; one producer.

    ``settings`` defaults to ``Settings()`` (the ``STREAMS_*`` environment), ``catalog`` to
    ``topics.yaml`` and ``store`` to ``SchemaStore.load(settings.schemas_dir)``;
    ``producer_conf`` entries override ours (librdkafka property names);
    ``producer_name`` goes into every envelope.

    ``publish``/``publish_batch`` block the calling thread until acknowledged: from asyncio
    code use ``publish_async``/``publish_batch_async``. ``settings.publish_timeout_s`` is the
    producer's delivery timeout (librdkafka ``message.timeout.ms``); a per-call ``timeout_s``
    shorter than that stops waiting early and reports BrokerUnavailable, though librdkafka
    may still deliver the record afterwards. Use as a (async) context manager or ``close()``.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        catalog: Catalog | None = None,
        store: SchemaStore | None = None,
        producer_conf: Mapping[str, Any] | None = None,
        producer_name: str = "unknown",
    ) -> None:
        self.settings = settings if settings is not None else Settings()
        self.catalog = catalog if catalog is not None else load_catalog(self.settings.catalog_path)
        if store is None:
            from streams.serde import SchemaStore

            store = SchemaStore.load(self.settings.schemas_dir)
        self.store = store
        self._preparer = Preparer(
            self.catalog,
            store,
            topic_prefix=self.settings.topic_prefix,
            producer_name=producer_name,
        )
        self.timeout_s = self.settings.publish_timeout_s
        self._verified_topics: set[str] = set()
        self._health = Health()
        self._pendings = PendingPool()
        self._closed = False
        check_security(self.settings)  # a wrong password or CA fails here, saying which
        self._producer = Producer(self.producer_config(producer_conf))
        self._stop = threading.Event()
        # the thread holds the producer, not the publisher: a publisher dropped without
        # close() is still collected, and the finalizer stops its thread
        self._poller = threading.Thread(
            target=poll_loop,
            args=(self._producer, self._stop),
            name="streams-publisher-poll",
            daemon=True,
        )
        self._poller.start()
        weakref.finalize(self, self._stop.set)

    # --- configuration ---------------------------------------------------------------------

    def producer_config(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The librdkafka configuration of this publisher (``overrides`` applied last)."""
        largest = max(f.max_message_bytes for f in self.catalog.families.values())
        conf = base_conf(
            self.settings,
            **{
                "acks": "all",
                "enable.idempotence": True,
                "partitioner": "murmur2_random",
                "linger.ms": LINGER_MS,
                "compression.type": COMPRESSION,
                "message.timeout.ms": int(self.timeout_s * 1000),
                "message.max.bytes": largest + RECORD_OVERHEAD_BYTES,
                "error_cb": self._health.on_error,
                "logger": log,  # librdkafka's log lines go to logging, not to stderr
            },
        )
        conf.update(overrides or {})
        return conf

    # --- preparing ---------------------------------------------------------------------------

    @property
    def producer_name(self) -> str:
        """Goes into every envelope (``producer``)."""
        return self._preparer.producer_name

    @producer_name.setter
    def producer_name(self, name: str) -> None:
        self._preparer.producer_name = name

    def prepare(
        self,
        event_type: str,
        payload: Mapping[str, Any],
        *,
        key: str | bytes | None = None,
        event_id: str | None = None,
        headers: HeadersArg = None,
        trace_parent: str | None = None,
        trace_state: str | None = None,
        not_before: datetime | None = None,
        delay_s: float | None = None,
        priority: str | None = None,
    ) -> PreparedRecord:
        """Validate, encode, key, size-check one event without sending it.

        Raises UnknownEventType, InvalidPayload (field, reason) or EventTooLarge.
        """
        topic, record_key, value, header_tuple, eid = self._preparer.record(
            event_type,
            payload,
            key=key,
            event_id=event_id,
            headers=headers,
            trace_parent=trace_parent,
            trace_state=trace_state,
            not_before=not_before,
            delay_s=delay_s,
            priority=priority,
        )
        return PreparedRecord(topic, record_key, value, list(header_tuple), eid)

    # --- sending -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise PublishError("the publisher is closed")
        fatal = self._health.fatal
        if fatal is not None:
            raise DeliveryFailed(f"the producer hit a fatal error: {fatal.str()}")

    def _try_produce(self, args: ProduceArgs, index: int, pending: Pending) -> bool:
        """Enqueue one record; False when the local queue is full (nothing was enqueued)."""
        topic, value, key, headers = args
        try:
            self._producer.produce(
                topic, value, key, headers=headers, on_delivery=pending.callbacks[index]
            )
        except BufferError:
            return False
        except KafkaException as exc:  # refused locally (fatal state, unknown partition, ...)
            pending.fail_unsent(index, error_for(exc.args[0], topic))
        return True

    def _verify_topics(self, records: Sequence[Record], deadline: float) -> None:
        """Check once per topic that it exists, so a missing topic is named at once
        (librdkafka would only time out). Raises DeliveryFailed or BrokerUnavailable."""
        for topic in topics_of(records) - self._verified_topics:
            timeout_s = max(0.001, deadline - time.monotonic())
            try:
                metadata = self._producer.list_topics(topic, timeout=timeout_s)
            except KafkaException as exc:
                raise error_for(exc.args[0], topic) from None
            found = metadata.topics.get(topic)
            if found is not None and found.error is not None:
                raise error_for(found.error, topic)
            self._verified_topics.add(topic)

    def _checked(self, records: Sequence[Record], deadline: float) -> None:
        """``_verify_topics`` for a batch: a failure means nothing was sent."""
        try:
            self._verify_topics(records, deadline)
        except PublishError as exc:
            raise BatchPublishError(
                dict.fromkeys(range(len(records)), exc), [None] * len(records), sent=False
            ) from None

    def _send(self, records: Sequence[Record], wait_s: float) -> Pending:
        """Produce every record, then wait up to ``wait_s`` for all verdicts."""
        pending = self._pendings.take(event_ids_of(records))
        deadline = time.monotonic() + wait_s
        for i, args in enumerate(produce_args(records)):
            while not self._try_produce(args, i, pending):  # queue full: let deliveries drain
                if time.monotonic() >= deadline:
                    pending.fail_unsent(i, BrokerUnavailable(_QUEUE_FULL))
                    break
                self._producer.poll(_QUEUE_FULL_WAIT_S)
        pending.done.wait(max(0.0, deadline - time.monotonic()))
        return pending

    async def _send_async(self, records: Sequence[Record], wait_s: float) -> Pending:
        """``_send`` without blocking the event loop: the poll thread resolves a future."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def resolve() -> None:
            if not future.done():
                future.set_result(None)

        def wake() -> None:  # runs on the poll thread
            with contextlib.suppress(RuntimeError):  # the loop closed after the caller left
                loop.call_soon_threadsafe(resolve)

        pending = self._pendings.take(event_ids_of(records), on_done=wake)
        deadline = time.monotonic() + wait_s
        for i, args in enumerate(produce_args(records)):
            while not self._try_produce(args, i, pending):
                if time.monotonic() >= deadline:
                    pending.fail_unsent(i, BrokerUnavailable(_QUEUE_FULL))
                    break
                await asyncio.sleep(_QUEUE_FULL_WAIT_S)  # the poll thread drains the queue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(future, max(0.0, deadline - time.monotonic()))
        return pending

    def _settle(
        self, pending: Pending, wait_s: float, *, single: bool = False
    ) -> list[PublishResult]:
        """Every result (``Pending.every``: BatchPublishError(sent=True) on any failure;
        ``single``: the one record's error raised as itself); the Pending goes back to
        the pool."""
        try:
            return [pending.single(wait_s)] if single else pending.every(wait_s)
        finally:
            self._pendings.give(pending)

    def _check_deadline(self, wait_s: float) -> float:
        """Deadline of the topic check: the call's timeout without the grace period."""
        return time.monotonic() + min(wait_s, self.timeout_s)

    def _timeout(self, timeout_s: float | None) -> float:
        if timeout_s is None:
            return self.timeout_s + WAIT_GRACE_S
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        return timeout_s

    def publish(
        self,
        event_type: str,
        payload: Mapping[str, Any],
        *,
        key: str | bytes | None = None,
        event_id: str | None = None,
        headers: HeadersArg = None,
        trace_parent: str | None = None,
        trace_state: str | None = None,
        tenant_id: str | None = None,
        timeout_s: float | None = None,
        not_before: datetime | None = None,
        delay_s: float | None = None,
        priority: str | None = None,
    ) -> PublishResult:
        """Publish one event and wait for the broker's acknowledgement.

        ``key`` is optional: the key is the family's key field, and an explicit key must
        equal it. ``timeout_s`` defaults to ``settings.publish_timeout_s`` (the producer's
        message timeout) plus a short grace. ``not_before`` (aware datetime) or ``delay_s``
        delays the event: it runs no earlier than that, up to 30 days ahead. ``priority``
        names one of the family's priority lanes (topics.yaml ``priorities:``). Raises
        UnknownEventType, InvalidPayload, EventTooLarge (nothing sent), DeliveryFailed or
        BrokerUnavailable.
        """
        self._check_open()
        rec = self._preparer.record(
            event_type,
            payload,
            key=key,
            event_id=event_id,
            headers=headers,
            trace_parent=trace_parent,
            trace_state=trace_state,
            tenant_id=tenant_id,
            not_before=not_before,
            delay_s=delay_s,
            priority=priority,
        )
        wait_s = self._timeout(timeout_s)
        if rec[0] not in self._verified_topics:
            self._verify_topics([rec], self._check_deadline(wait_s))
        return self._settle(self._send([rec], wait_s), wait_s, single=True)[0]

    def publish_batch(
        self, items: Iterable[BatchItem], *, timeout_s: float | None = None
    ) -> list[PublishResult]:
        """Validate every item, produce them all, then wait for every acknowledgement.

        Returns results in item order. If any item is invalid, raises BatchPublishError with
        ``sent=False`` and nothing is sent. If some deliveries fail, raises
        BatchPublishError(``sent=True``) once every record has its verdict (or the timeout
        passed), with ``results`` (None where not acknowledged) and ``errors`` by index.
        """
        self._check_open()
        records = self._preparer.batch(items)
        if not records:
            return []
        wait_s = self._timeout(timeout_s)
        self._checked(records, self._check_deadline(wait_s))
        return self._settle(self._send(records, wait_s), wait_s)

    # --- asyncio -------------------------------------------------------------------------------

    async def publish_async(
        self,
        event_type: str,
        payload: Mapping[str, Any],
        *,
        key: str | bytes | None = None,
        event_id: str | None = None,
        headers: HeadersArg = None,
        trace_parent: str | None = None,
        trace_state: str | None = None,
        tenant_id: str | None = None,
        timeout_s: float | None = None,
        not_before: datetime | None = None,
        delay_s: float | None = None,
        priority: str | None = None,
    ) -> PublishResult:
        """``publish`` for asyncio: awaits the acknowledgement without blocking the loop."""
        self._check_open()
        rec = self._preparer.record(
            event_type,
            payload,
            key=key,
            event_id=event_id,
            headers=headers,
            trace_parent=trace_parent,
            trace_state=trace_state,
            tenant_id=tenant_id,
            not_before=not_before,
            delay_s=delay_s,
            priority=priority,
        )
        wait_s = self._timeout(timeout_s)
        if rec[0] not in self._verified_topics:
            deadline = self._check_deadline(wait_s)
            await asyncio.to_thread(self._verify_topics, [rec], deadline)
        return self._settle(await self._send_async([rec], wait_s), wait_s, single=True)[0]

    async def publish_batch_async(
        self, items: Iterable[BatchItem], *, timeout_s: float | None = None
    ) -> list[PublishResult]:
        """``publish_batch`` for asyncio (same validation, results and errors)."""
        self._check_open()
        records = self._preparer.batch(items)
        if not records:
            return []
        wait_s = self._timeout(timeout_s)
        if topics_of(records) - self._verified_topics:
            await asyncio.to_thread(self._checked, records, self._check_deadline(wait_s))
        return self._settle(await self._send_async(records, wait_s), wait_s)

    # --- lifecycle -------------------------------------------------------------------------------

    def reachable(self, timeout_s: float) -> bool:
        """True when the cluster answers a metadata request within ``timeout_s`` (blocks)."""
        try:
            self._producer.list_topics(timeout=timeout_s)
        except KafkaException:
            return False
        return True

    def flush(self, timeout_s: float | None = None) -> int:
        """Wait until queued records are delivered or failed; returns how many are left."""
        return int(self._producer.flush(self.timeout_s if timeout_s is None else timeout_s))

    def close(self, timeout_s: float | None = None) -> None:
        """Flush (up to ``timeout_s``), stop the poll thread. Idempotent.

        Raises BrokerUnavailable when records were still undelivered at the deadline
        (their callers get BrokerUnavailable too).
        """
        if self._closed:
            return
        self._closed = True
        try:
            left = self.flush(timeout_s)
        finally:
            self._stop.set()
            self._poller.join()
        if left:
            raise BrokerUnavailable(f"{left} records were not delivered before close")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close_after(exc)

    def _close_after(self, exc: BaseException | None) -> None:
        """close(); when the block already failed, its error wins over close()'s."""
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except PublishError as close_error:
            log.warning("publisher: while closing after %r: %s", exc, close_error)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self._close_after, exc)
