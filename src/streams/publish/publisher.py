"""The producer SDK: validated, Avro-encoded events to their family's main topic.

``Publisher`` wraps one confluent-kafka ``Producer`` (acks=all, idempotence, murmur2
partitioner so keys land where aiokafka, faust and Java clients put them). A daemon thread
polls the producer, so delivery callbacks run without the caller's help: sync calls wait on
a threading event, async calls await an asyncio future resolved on their loop.

Before anything is sent an event is built and validated (``streams.events.build_event``),
encoded (``SchemaStore.encode``), keyed by its family's ``key_field`` and size-checked
against the family's ``max_message_bytes``; failures raise ``UnknownEventType``,
``InvalidPayload`` or ``EventTooLarge`` and nothing reaches the broker. A result is only
returned for a record the broker acknowledged; otherwise ``DeliveryFailed`` (the broker
refused it, naming the Kafka error) or ``BrokerUnavailable`` (no acknowledgement in time).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, Self, cast

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streams.broker.clients import base_conf
from streams.catalog import Catalog, Family, load_catalog
from streams.core.topology import family_of_event_type
from streams.errors import (
    BrokerUnavailable,
    CatalogError,
    DeliveryFailed,
    InvalidPayload,
    PublishError,
    UnknownEventType,
)
from streams.events import build_event
from streams.publish.outgoing import (
    RECORD_OVERHEAD_BYTES,
    BatchPublishError,
    HeaderList,
    HeaderTemplate,
    PublishResult,
    build_headers,
    check_size,
    new_event_id,
    partition_key,
)
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.serde import SchemaStore

__all__ = ["BatchPublishError", "PreparedRecord", "PublishResult", "Publisher"]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())  # a library: silent unless the application logs

COMPRESSION = "lz4"
"""Measured against zstd and none on 200-byte events: see bench/README.md (P9)."""
LINGER_MS = 5
POLL_INTERVAL_S = 0.1
WAIT_GRACE_S = 5.0
"""How long past ``message.timeout.ms`` a caller waits for librdkafka's own verdict."""
_QUEUE_FULL_WAIT_S = 0.01
_QUEUE_FULL = "the local producer queue stayed full until the timeout"

_UNAVAILABLE_CODES = frozenset(
    {
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._RESOLVE,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    }
)

HeadersArg = Mapping[str, str | bytes] | Iterable[tuple[str, str | bytes]] | None
"""Extra headers: a mapping or (name, value) pairs; values str (UTF-8) or bytes."""

BatchItem = tuple[str, Mapping[str, Any]] | Mapping[str, Any]
"""``(event_type, payload)`` or a dict with ``event_type``, ``payload`` and optionally
``key``, ``event_id``, ``headers``, ``trace_parent``, ``trace_state``."""

_ITEM_KEYS = frozenset(
    {"event_type", "payload", "key", "event_id", "headers", "trace_parent", "trace_state"}
)


@dataclass(frozen=True, slots=True)
class _Route:
    """Everything per event type that does not change between events (cached)."""

    event_type: str
    topic: str
    key_field: str
    max_message_bytes: int
    template: HeaderTemplate

    @property
    def size_limit_bytes(self) -> int:
        return self.max_message_bytes - RECORD_OVERHEAD_BYTES


_Record = tuple[str, bytes, bytes, tuple[tuple[str, bytes], ...], str]
"""(topic, key, value, headers, event_id): what the send path keeps per event."""


class PreparedRecord(NamedTuple):
    """A validated, encoded event ready for ``Producer.produce`` (see ``prepare``).

    A NamedTuple: built once per event on the hot path, cheaper than a dataclass."""

    topic: str
    key: bytes
    value: bytes
    headers: HeaderList
    event_id: str


def error_for(err: KafkaError, topic: str) -> PublishError:
    """The publisher error for a failed delivery: BrokerUnavailable or DeliveryFailed."""
    code = err.code()
    detail = f"{err.name()}: {err.str()}"
    if code in _UNAVAILABLE_CODES:
        return BrokerUnavailable(f"{topic}: broker unavailable or not acknowledging ({detail})")
    if code in (KafkaError._UNKNOWN_TOPIC, KafkaError.UNKNOWN_TOPIC_OR_PART):
        return DeliveryFailed(
            f"{topic}: topic does not exist ({detail}); create it with `streams topics apply`"
        )
    if code in (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG_SIZE):
        return DeliveryFailed(f"{topic}: record larger than the topic accepts ({detail})")
    return DeliveryFailed(f"{topic}: delivery failed ({detail})")


class _Pending:
    """The deliveries of one call: a verdict per record, a done signal.

    Delivery callbacks run on the poll thread (or on a caller's thread that polls while the
    local queue is full) and only store the message or the error; ``outcome`` builds the
    results on the caller's side. ``on_done`` runs once, when every record has a verdict.
    """

    __slots__ = ("_count", "_total", "done", "errors", "event_ids", "on_done", "positions")

    def __init__(self, event_ids: list[str], on_done: Callable[[], None] | None = None) -> None:
        self.event_ids = event_ids
        # (topic, partition, offset, timestamp_ms) per acknowledged record: plain tuples of
        # atomic values, which the garbage collector stops tracking (big batches stay cheap)
        self.positions: list[tuple[str, int, int, int] | None] = [None] * len(event_ids)
        self.errors: dict[int, PublishError] = {}
        self._total = len(event_ids)
        self._count = itertools.count(1)  # next() is atomic: no lock on the hot path
        self.done = threading.Event()
        self.on_done = on_done

    def deliver(self, index: int, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            offset = msg.offset()
            self.positions[index] = (
                msg.topic() or "",
                msg.partition() or 0,
                -1 if offset is None else offset,
                msg.timestamp()[1],
            )
        else:
            self.errors[index] = error_for(err, msg.topic() or "?")
        if next(self._count) == self._total:
            self._finish()

    def fail_unsent(self, index: int, error: PublishError) -> None:
        """Record an item the producer refused locally (never enqueued)."""
        self.errors[index] = error
        if next(self._count) == self._total:
            self._finish()

    def _finish(self) -> None:
        self.done.set()
        if self.on_done is not None:
            self.on_done()

    def outcome(
        self, waited_s: float
    ) -> tuple[list[PublishResult | None], dict[int, PublishError]]:
        """A snapshot: results by index (None unless acknowledged) and errors by index.

        A record still without a verdict (the caller stopped waiting after ``waited_s``)
        gets BrokerUnavailable; late callbacks cannot change the snapshot.
        """
        positions = list(self.positions)
        errors = dict(self.errors)
        if not errors and None not in positions:  # the common case: every one acknowledged
            acked = cast(list[tuple[str, int, int, int]], positions)
            return [
                PublishResult(t, p, o, eid, ts)
                for (t, p, o, ts), eid in zip(acked, self.event_ids, strict=True)
            ], {}
        results: list[PublishResult | None] = []
        for i, position in enumerate(positions):
            if i in errors:
                results.append(None)
            elif position is None:
                errors[i] = BrokerUnavailable(
                    f"no acknowledgement within {waited_s:g}s; the record may still be "
                    "delivered later by the producer"
                )
                results.append(None)
            else:
                topic, partition, offset, timestamp_ms = position
                results.append(
                    PublishResult(topic, partition, offset, self.event_ids[i], timestamp_ms)
                )
        return results, dict(sorted(errors.items()))


class _Health:
    """The producer's error callback and its last fatal error (none: healthy)."""

    def __init__(self) -> None:
        self.fatal: KafkaError | None = None

    def on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self.fatal = err
            log.error("publisher: fatal producer error: %s", err.str())
        elif err.code() == KafkaError._ALL_BROKERS_DOWN:
            log.warning("publisher: %s", err.str())
        else:
            log.debug("publisher: %s", err.str())


def _poll_loop(producer: Producer, stop: threading.Event) -> None:
    """Serve delivery callbacks until ``stop`` is set."""
    while not stop.is_set():
        try:
            producer.poll(POLL_INTERVAL_S)
        except Exception:  # a callback raised: keep serving the others
            log.exception("publisher: delivery callback failed")


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
        self.producer_name = producer_name
        self.timeout_s = self.settings.publish_timeout_s
        self._routes: dict[str, _Route] = {}
        self._verified_topics: set[str] = set()
        self._health = _Health()
        self._closed = False
        self._producer = Producer(self.producer_config(producer_conf))
        self._stop = threading.Event()
        # the thread holds the producer, not the publisher: a publisher dropped without
        # close() is still collected, and the finalizer stops its thread
        self._poller = threading.Thread(
            target=_poll_loop,
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

    def _route(self, event_type: str) -> _Route:
        route = self._routes.get(event_type)
        if route is not None:
            return route
        try:
            family_name = family_of_event_type(event_type)
        except (ValueError, AttributeError, TypeError):
            raise UnknownEventType(
                f"unknown event type {event_type!r}: must look like '<family>.<name>'"
            ) from None
        try:
            family: Family = self.catalog.family(family_name)
        except CatalogError as exc:
            raise UnknownEventType(f"event type {event_type!r}: {exc}") from None
        schema = self.store.latest(event_type)
        route = _Route(
            event_type,
            family.topics(self.settings.topic_prefix).main,
            family.key_field,
            family.max_message_bytes,
            HeaderTemplate.for_event_type(event_type, schema.header),
        )
        self._routes[event_type] = route
        return route

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
    ) -> PreparedRecord:
        """Validate, encode, key, size-check one event without sending it.

        Raises UnknownEventType, InvalidPayload (field, reason) or EventTooLarge.
        """
        topic, record_key, value, header_tuple, eid = self._prepare_record(
            event_type,
            payload,
            key=key,
            event_id=event_id,
            headers=headers,
            trace_parent=trace_parent,
            trace_state=trace_state,
        )
        return PreparedRecord(topic, record_key, value, list(header_tuple), eid)

    def _prepare_record(
        self,
        event_type: str,
        payload: Mapping[str, Any],
        *,
        key: str | bytes | None = None,
        event_id: str | None = None,
        headers: HeadersArg = None,
        trace_parent: str | None = None,
        trace_state: str | None = None,
    ) -> _Record:
        """``prepare`` as a plain tuple: the garbage collector stops tracking it."""
        event = build_event(
            event_type,
            payload,
            event_id=new_event_id() if event_id is None else event_id,
            producer=self.producer_name,
        )
        route = self._route(event_type)
        record_key = partition_key(
            event_type, route.key_field, getattr(event, route.key_field, None), key
        )
        value = self.store.encode(event)
        eid = event.envelope.event_id
        header_list, headers_bytes = build_headers(
            route.template,
            event_type,
            eid,
            trace_parent=trace_parent,
            trace_state=trace_state,
            extra=headers,
        )
        if len(value) + len(record_key) + headers_bytes > route.size_limit_bytes:
            check_size(
                event_type,
                value_bytes=len(value),
                key_bytes=len(record_key),
                headers_bytes=headers_bytes,
                max_message_bytes=route.max_message_bytes,
            )
        return (route.topic, record_key, value, tuple(header_list), eid)

    def _prepare_item(self, item: BatchItem) -> _Record:
        if isinstance(item, tuple):
            if len(item) != 2:
                raise InvalidPayload(
                    "<batch item>", [("<item>", "a tuple must be (event_type, payload)")]
                )
            return self._prepare_record(item[0], item[1])
        if not isinstance(item, Mapping):
            raise InvalidPayload(
                "<batch item>",
                [("<item>", f"must be (event_type, payload) or a dict, got {type(item).__name__}")],
            )
        unknown = set(item) - _ITEM_KEYS
        if unknown or "event_type" not in item or "payload" not in item:
            problems = [(k, "unknown batch item field") for k in sorted(unknown)]
            problems += [(k, "required") for k in ("event_type", "payload") if k not in item]
            raise InvalidPayload(str(item.get("event_type", "<batch item>")), problems)
        return self._prepare_record(
            item["event_type"],
            item["payload"],
            key=item.get("key"),
            event_id=item.get("event_id"),
            headers=item.get("headers"),
            trace_parent=item.get("trace_parent"),
            trace_state=item.get("trace_state"),
        )

    def _prepare_batch(self, items: Iterable[BatchItem]) -> list[_Record]:
        prepared: list[_Record] = []
        errors: dict[int, PublishError] = {}
        for i, item in enumerate(items):
            try:
                prepared.append(self._prepare_item(item))
            except PublishError as exc:
                errors[i] = exc
        if errors:
            raise BatchPublishError(errors, [None] * (len(prepared) + len(errors)), sent=False)
        return prepared

    # --- sending -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise PublishError("the publisher is closed")
        fatal = self._health.fatal
        if fatal is not None:
            raise DeliveryFailed(f"the producer hit a fatal error: {fatal.str()}")

    def _try_produce(self, rec: _Record, index: int, pending: _Pending) -> bool:
        """Enqueue one record; False when the local queue is full (nothing was enqueued)."""
        try:
            self._producer.produce(
                rec[0],
                rec[2],
                rec[1],
                headers=list(rec[3]),
                on_delivery=partial(pending.deliver, index),
            )
        except BufferError:
            return False
        except KafkaException as exc:  # refused locally (fatal state, unknown partition, ...)
            pending.fail_unsent(index, error_for(exc.args[0], rec[0]))
        return True

    def _verify_topics(self, records: list[_Record], deadline: float) -> None:
        """Check once per topic that it exists, so a missing topic is named at once
        (librdkafka would only time out). Raises DeliveryFailed or BrokerUnavailable."""
        for topic in {r[0] for r in records} - self._verified_topics:
            timeout_s = max(0.001, deadline - time.monotonic())
            try:
                metadata = self._producer.list_topics(topic, timeout=timeout_s)
            except KafkaException as exc:
                raise error_for(exc.args[0], topic) from None
            found = metadata.topics.get(topic)
            if found is not None and found.error is not None:
                raise error_for(found.error, topic)
            self._verified_topics.add(topic)

    def _checked(self, records: list[_Record], deadline: float) -> None:
        """``_verify_topics`` for a batch: a failure means nothing was sent."""
        try:
            self._verify_topics(records, deadline)
        except PublishError as exc:
            raise BatchPublishError(
                dict.fromkeys(range(len(records)), exc), [None] * len(records), sent=False
            ) from None

    def _send(self, records: list[_Record], wait_s: float) -> _Pending:
        """Produce every record, then wait up to ``wait_s`` for all verdicts."""
        pending = _Pending([r[4] for r in records])
        deadline = time.monotonic() + wait_s
        for i, rec in enumerate(records):
            while not self._try_produce(rec, i, pending):  # queue full: let deliveries drain
                if time.monotonic() >= deadline:
                    pending.fail_unsent(i, BrokerUnavailable(_QUEUE_FULL))
                    break
                self._producer.poll(_QUEUE_FULL_WAIT_S)
        pending.done.wait(max(0.0, deadline - time.monotonic()))
        return pending

    async def _send_async(self, records: list[_Record], wait_s: float) -> _Pending:
        """``_send`` without blocking the event loop: the poll thread resolves a future."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def resolve() -> None:
            if not future.done():
                future.set_result(None)

        def wake() -> None:  # runs on the poll thread
            with contextlib.suppress(RuntimeError):  # the loop closed after the caller left
                loop.call_soon_threadsafe(resolve)

        pending = _Pending([r[4] for r in records], on_done=wake)
        deadline = time.monotonic() + wait_s
        for i, rec in enumerate(records):
            while not self._try_produce(rec, i, pending):
                if time.monotonic() >= deadline:
                    pending.fail_unsent(i, BrokerUnavailable(_QUEUE_FULL))
                    break
                await asyncio.sleep(_QUEUE_FULL_WAIT_S)  # the poll thread drains the queue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(future, max(0.0, deadline - time.monotonic()))
        return pending

    def _check_deadline(self, wait_s: float) -> float:
        """Deadline of the topic check: the call's timeout without the grace period."""
        return time.monotonic() + min(wait_s, self.timeout_s)

    def _timeout(self, timeout_s: float | None) -> float:
        if timeout_s is None:
            return self.timeout_s + WAIT_GRACE_S
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        return timeout_s

    @staticmethod
    def _single(pending: _Pending, wait_s: float) -> PublishResult:
        results, errors = pending.outcome(wait_s)
        if errors:
            raise errors[0]
        result = results[0]
        assert result is not None
        return result

    @staticmethod
    def _all(pending: _Pending, wait_s: float) -> list[PublishResult]:
        results, errors = pending.outcome(wait_s)
        if errors:
            raise BatchPublishError(errors, results, sent=True)
        return results  # type: ignore[return-value] # no errors: every slot holds a result

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
        timeout_s: float | None = None,
    ) -> PublishResult:
        """Publish one event and wait for the broker's acknowledgement.

        ``key`` is optional: the key is the family's key field, and an explicit key must
        equal it. ``timeout_s`` defaults to ``settings.publish_timeout_s`` (the producer's
        message timeout) plus a short grace. Raises UnknownEventType, InvalidPayload,
        EventTooLarge (nothing sent), DeliveryFailed or BrokerUnavailable.
        """
        self._check_open()
        rec = self._prepare_record(
            event_type,
            payload,
            key=key,
            event_id=event_id,
            headers=headers,
            trace_parent=trace_parent,
            trace_state=trace_state,
        )
        wait_s = self._timeout(timeout_s)
        if rec[0] not in self._verified_topics:
            self._verify_topics([rec], self._check_deadline(wait_s))
        return self._single(self._send([rec], wait_s), wait_s)

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
        records = self._prepare_batch(items)
        if not records:
            return []
        wait_s = self._timeout(timeout_s)
        self._checked(records, self._check_deadline(wait_s))
        return self._all(self._send(records, wait_s), wait_s)

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
        timeout_s: float | None = None,
    ) -> PublishResult:
        """``publish`` for asyncio: awaits the acknowledgement without blocking the loop."""
        self._check_open()
        rec = self._prepare_record(
            event_type,
            payload,
            key=key,
            event_id=event_id,
            headers=headers,
            trace_parent=trace_parent,
            trace_state=trace_state,
        )
        wait_s = self._timeout(timeout_s)
        if rec[0] not in self._verified_topics:
            deadline = self._check_deadline(wait_s)
            await asyncio.to_thread(self._verify_topics, [rec], deadline)
        return self._single(await self._send_async([rec], wait_s), wait_s)

    async def publish_batch_async(
        self, items: Iterable[BatchItem], *, timeout_s: float | None = None
    ) -> list[PublishResult]:
        """``publish_batch`` for asyncio (same validation, results and errors)."""
        self._check_open()
        records = self._prepare_batch(items)
        if not records:
            return []
        wait_s = self._timeout(timeout_s)
        if {r[0] for r in records} - self._verified_topics:
            await asyncio.to_thread(self._checked, records, self._check_deadline(wait_s))
        return self._all(await self._send_async(records, wait_s), wait_s)

    # --- lifecycle -------------------------------------------------------------------------------

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
