"""Preparing events for the broker: build, validate, encode, key, size-check.

A ``Preparer`` turns ``(event_type, payload)`` into a record ready for
``Producer.produce``: the event is built and validated (``streams.events.build_event``),
encoded (``SchemaStore.encode``), keyed by its family's ``key_field``, given its headers
and checked against the family's ``max_message_bytes``. Failures raise
``UnknownEventType``, ``InvalidPayload`` or ``EventTooLarge``; a batch with any invalid
item raises ``BatchPublishError(sent=False)``. Sensitive fields (``streams.crypto``) are
sealed after validation and before encoding, so no plaintext of them reaches the broker.

Pure: no confluent_kafka and no network here (the publisher sends what this returns), so
it is unit-tested with the real catalog and schemas and no broker. The per-event-type
parts that never change (topic, key field, size limit, encoded header template) are
computed once and cached.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from streams.catalog import Catalog, Family
from streams.core import headers as h
from streams.core.backoff import tier_for_delay_ms
from streams.core.topology import family_of_event_type, retry_topic
from streams.errors import (
    BatchPublishError,
    CatalogError,
    ConfigError,
    InvalidPayload,
    PublishError,
    UnknownEventType,
)
from streams.events import build_event
from streams.publish.fast import FastPlan, fast_batch, plan_for
from streams.publish.outgoing import (
    RECORD_OVERHEAD_BYTES,
    HeaderList,
    HeaderTemplate,
    build_headers,
    check_size,
    new_event_id,
    partition_key,
)
from streams.publish.priority import lane_route

if TYPE_CHECKING:
    from streams.crypto import EventSealer
    from streams.serde import SchemaStore

__all__ = ["BatchItem", "HeadersArg", "PreparedRecord", "Preparer", "Record"]

HeadersArg = Mapping[str, str | bytes] | Iterable[tuple[str, str | bytes]] | None
"""Extra headers: a mapping or (name, value) pairs; values str (UTF-8) or bytes."""

BatchItem = tuple[str, Mapping[str, Any]] | Mapping[str, Any]
"""``(event_type, payload)`` or a dict with ``event_type``, ``payload`` and optionally
``key``, ``event_id``, ``headers``, ``trace_parent``, ``trace_state``, ``tenant_id``,
``not_before``, ``delay_s``, ``priority``."""

_ITEM_KEYS = frozenset(
    {
        "event_type",
        "payload",
        "key",
        "event_id",
        "headers",
        "trace_parent",
        "trace_state",
        "tenant_id",
        "not_before",
        "delay_s",
        "priority",
    }
)
MIN_DELAY_MS = 1  # any positive delay is held (a due time <= now runs at once)
MAX_DELAY_MS = 30 * 86_400_000


def due_at(
    event_type: str, not_before: datetime | None, delay_s: float | None, now_ms: int
) -> int | None:
    """The due time (ms) of a delayed event, or None when it is not delayed.

    ``not_before`` is an aware datetime, ``delay_s`` seconds from ``now_ms``; at most one.
    Raises InvalidPayload (field ``not_before``/``delay_s``, why) for a naive datetime, a
    negative or non-finite delay, both given, or a due time more than 30 days ahead.
    """
    if not_before is None and delay_s is None:
        return None
    if not_before is not None and delay_s is not None:
        raise InvalidPayload(event_type, [("delay_s", "give not_before or delay_s, not both")])
    if delay_s is not None:
        field = "delay_s"
        if (
            isinstance(delay_s, bool)
            or not isinstance(delay_s, int | float)
            or not (math.isfinite(delay_s) and delay_s >= 0)
        ):
            raise InvalidPayload(event_type, [(field, "must be a number of seconds >= 0")])
        due_ms = now_ms + math.ceil(delay_s * 1000)
    else:
        field = "not_before"
        if not isinstance(not_before, datetime) or not_before.tzinfo is None:
            raise InvalidPayload(event_type, [(field, "must be a time-zone-aware datetime")])
        due_ms = math.ceil(not_before.timestamp() * 1000)
    if due_ms - now_ms > MAX_DELAY_MS:
        raise InvalidPayload(event_type, [(field, "must be at most 30 days ahead")])
    return due_ms if due_ms - now_ms >= MIN_DELAY_MS else None


Record = tuple[str, bytes, bytes, tuple[tuple[str, bytes], ...], str]
"""(topic, key, value, headers, event_id): what the send path keeps per event.

A plain tuple of atomic values, which the garbage collector stops tracking (big batches
stay cheap)."""


class PreparedRecord(NamedTuple):
    """A validated, encoded event ready for ``Producer.produce`` (see ``Publisher.prepare``).

    A NamedTuple: built once per event on the hot path, cheaper than a dataclass."""

    topic: str
    key: bytes
    value: bytes
    headers: HeaderList
    event_id: str


@dataclass(frozen=True, slots=True)
class _Route:
    """Everything per event type that does not change between events (cached)."""

    event_type: str
    topic: str
    key_field: str
    max_message_bytes: int
    template: HeaderTemplate
    family: str = ""
    tier_delays_ms: tuple[int, ...] = ()
    prefix: str = ""

    def delayed_topic(self, delay_ms: int) -> str:
        """The retry tier a delayed event waits in (the tier that fits its delay)."""
        tier_ms = tier_for_delay_ms(self.tier_delays_ms, delay_ms)
        return retry_topic(self.prefix, self.family, tier_ms)

    @property
    def size_limit_bytes(self) -> int:
        return self.max_message_bytes - RECORD_OVERHEAD_BYTES


class Preparer:
    """Turns events into records for one catalog, schema store and topic prefix.

    ``producer_name`` goes into every envelope. Not locked: the route cache only ever gains
    equal entries, so concurrent callers at worst compute a route twice.
    """

    def __init__(
        self,
        catalog: Catalog,
        store: SchemaStore,
        *,
        topic_prefix: str,
        producer_name: str,
        sealer: EventSealer | None = None,
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.topic_prefix = topic_prefix
        self.producer_name = producer_name
        self._routes: dict[str, _Route] = {}
        self._plans: dict[str, FastPlan | None] = {}
        if sealer is None:  # keys from the environment (STREAMS_ENCRYPTION_KEYS)
            from streams.crypto import sealer_for

            key_fields = {name: f.key_field for name, f in catalog.families.items()}
            sealer = sealer_for(store, key_fields=key_fields)
        self.sealer = sealer

    def plan(self, event_type: str) -> FastPlan | None:
        """The batch fast path's plan of ``event_type`` (cached; None: ordinary path)."""
        try:
            return self._plans[event_type]
        except KeyError:
            plan = self._plans[event_type] = plan_for(self, event_type)
            return plan

    def route(self, event_type: str) -> _Route:
        """The cached per-type parts; raises UnknownEventType."""
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
            family.topics(self.topic_prefix).main,
            family.key_field,
            family.max_message_bytes,
            HeaderTemplate.for_event_type(event_type, schema.header),
            family.name,
            tuple(sorted(set(family.retry.tier_delays_ms))),
            self.topic_prefix,
        )
        self._routes[event_type] = route
        return route

    def record(
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
        not_before: datetime | None = None,
        delay_s: float | None = None,
        now_ms: int | None = None,
        priority: str | None = None,
    ) -> Record:
        """Validate, encode, key, size-check one event, as a plain ``Record`` tuple.

        ``key`` is optional: the key is the family's key field, and an explicit key must
        equal it. Raises UnknownEventType, InvalidPayload (field, reason) or EventTooLarge.
        A delayed event (``not_before`` / ``delay_s``, see ``due_at``) goes to the family's
        retry tier that fits the delay with a ``streams-due-at-ms`` header instead of the
        main topic (README, "Delayed events"). ``priority`` picks the family's priority lane
        (``publish.priority``; InvalidPayload field ``priority`` when it has no such lane).
        """
        due_ms = due_at(
            event_type, not_before, delay_s, int(time.time() * 1000) if now_ms is None else now_ms
        )
        event = build_event(
            event_type,
            payload,
            event_id=new_event_id() if event_id is None else event_id,
            producer=self.producer_name,
            tenant_id=tenant_id,
        )
        route = self.route(event_type)
        record_key = partition_key(
            event_type, route.key_field, getattr(event, route.key_field, None), key
        )
        try:
            event = self.sealer.seal(event)
        except ConfigError as exc:
            raise InvalidPayload(event_type, [("<sensitive fields>", str(exc))]) from None
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
        topic = route.topic
        if priority is not None:
            topic, lane = lane_route(
                self.catalog.family(route.family), self.topic_prefix, event_type, priority
            )
            if lane is not None:
                header_list.append(lane)
                headers_bytes += len(lane[0]) + len(lane[1])
        if due_ms is not None:
            now = int(time.time() * 1000) if now_ms is None else now_ms
            topic = route.delayed_topic(due_ms - now)
            header_list.append((h.DUE_AT_MS, str(due_ms).encode()))
            headers_bytes += len(h.DUE_AT_MS) + len(header_list[-1][1])
        if len(value) + len(record_key) + headers_bytes > route.size_limit_bytes:
            check_size(
                event_type,
                value_bytes=len(value),
                key_bytes=len(record_key),
                headers_bytes=headers_bytes,
                max_message_bytes=route.max_message_bytes,
            )
        return (topic, record_key, value, tuple(header_list), eid)

    def item(self, item: BatchItem) -> Record:
        """``record`` for one batch item; InvalidPayload when the item is malformed."""
        if isinstance(item, tuple):
            if len(item) != 2:
                raise InvalidPayload(
                    "<batch item>", [("<item>", "a tuple must be (event_type, payload)")]
                )
            return self.record(item[0], item[1])
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
        return self.record(
            item["event_type"],
            item["payload"],
            key=item.get("key"),
            event_id=item.get("event_id"),
            headers=item.get("headers"),
            trace_parent=item.get("trace_parent"),
            trace_state=item.get("trace_state"),
            tenant_id=item.get("tenant_id"),
            not_before=item.get("not_before"),
            delay_s=item.get("delay_s"),
            priority=item.get("priority"),
        )

    def batch(self, items: Iterable[BatchItem]) -> Sequence[Record]:
        """Every item prepared, in order; BatchPublishError(sent=False) naming each invalid
        item (by index) when any is invalid. Plain batches take the fast path
        (``publish.fast``: the same records, prepared per event type)."""
        listed = items if isinstance(items, list | tuple) else list(items)
        fast = fast_batch(self, listed)
        if fast is not None:
            return fast
        return self.batch_one_by_one(listed)

    def batch_one_by_one(self, items: Iterable[BatchItem]) -> list[Record]:
        """``batch`` by the ordinary path: ``item`` for each item, in order."""
        prepared: list[Record] = []
        errors: dict[int, PublishError] = {}
        for i, item in enumerate(items):
            try:
                prepared.append(self.item(item))
            except PublishError as exc:
                errors[i] = exc
        if errors:
            raise BatchPublishError(errors, [None] * (len(prepared) + len(errors)), sent=False)
        return prepared
