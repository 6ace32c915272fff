"""The batch fast path: a whole batch of plain items prepared per event type, not per event.

``Preparer.batch`` tries ``fast_batch`` first. It produces exactly the records the ordinary
path (``Preparer.record``: ``build_event``, ``SchemaStore.encode``, ``build_headers``)
produces for the same ids, clock and trace ids (the unit tests compare them byte for byte,
priority lanes included), with the work per event reduced to what differs per event:

- validation: the payloads of one type are validated ``CHUNK`` at a time in one pydantic
  call each, by a ``TypeAdapter(list[<payload TypedDict>])`` built from the event model's
  own payload fields (same annotations, constraints and validators, strict, unknown fields
  forbidden; the tests check it accepts and refuses exactly what the model does);
  the envelope is made by the SDK (fresh UUID4 ids, one clock reading, the publisher's
  producer name) and validated once per batch, not per event;
- encoding: the envelope's Avro bytes but the event id are constant within a batch, and
  the payload is written by a per-schema compiled writer (``streams.serde.writer``);
- headers: the constant ones are pre-encoded (tuples shared by every record), ids and
  trace parents come from one read of random bytes per batch (``outgoing``);
- the records are kept as columns (``publish.records.FastRecords``), not tuples.

It only takes batches it can prepare this way: every item ``(event_type, payload)`` or a
dict with ``event_type``, ``payload`` and optionally ``priority``, each payload a dict,
each type's model free of model-level validators and its fields without sealed
(encrypted) values. For anything else, and on ANY problem in the batch (a payload invalid,
an unknown type or lane, a record too large, a value the writer refuses), it returns None
and the ordinary path prepares the whole batch, so errors are the ordinary path's own
(``BatchPublishError(sent=False)`` naming each item by index and field).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, NotRequired

from pydantic import ConfigDict, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from streams import events
from streams.core import headers as h
from streams.errors import PublishError
from streams.publish.outgoing import new_event_ids, new_traceparents
from streams.publish.priority import lane_route
from streams.publish.records import FastRecords
from streams.serde.writer import SMALL_LONGS as _SMALL
from streams.serde.writer import Writer, compile_fields, long_bytes

if TYPE_CHECKING:
    from streams.publish.prepare import Preparer, _Route

__all__ = ["FastPlan", "fast_batch", "plan_for"]

_ITEM_KEYS = frozenset({"event_type", "payload", "priority"})
_ENVELOPE_FIELDS = (
    ("event_id", "string"),
    ("event_type", "string"),
    ("occurred_at_ms", "long"),
    ("producer", "string"),
    ("correlation_id", ("null", "string")),
    ("tenant_id", ("null", "string")),
)
_OWN_VALIDATORS = frozenset({"_type_matches"})  # Event's: true by construction here
_STRICT = ConfigDict(extra="forbid", strict=True)
_AVRO = h.AVRO_CONTENT_TYPE.encode()
_FALL_BACK: tuple[type[Exception], ...] = (PublishError, ValidationError, ValueError, KeyError)
_FALL_BACK += (TypeError, AttributeError, OverflowError)  # values the compiled writer refuses
CHUNK = 128
"""Payloads validated per pydantic call: large enough to amortise the call, small enough
that the validated dicts are freed before the garbage collector promotes them."""


def _string(text: str) -> bytes:
    raw = text.encode()
    return long_bytes(len(raw)) + raw


@dataclass(frozen=True, slots=True)
class FastPlan:
    """What one event type's fast path needs, built once per type (``plan_for``)."""

    model: type[events.Event]
    adapter: TypeAdapter[list[dict[str, Any]]]
    write: Writer
    defaults: dict[str, Any]
    prefix: bytes  # the codec's framing of the latest version
    event_type_avro: bytes
    constant_headers: tuple[tuple[str, bytes], ...]  # event type, schema, content type

    def envelope_tail(self, producer: str, now_ms: int) -> bytes:
        """The envelope's Avro bytes after the event id (correlation and tenant null)."""
        return self.event_type_avro + long_bytes(now_ms) + _string(producer) + b"\x00\x00"


def _envelope_is_standard(schema: Any) -> bool:
    fields = schema.get("fields", []) if isinstance(schema, dict) else []
    shape = []
    for f in fields:
        kind = f["type"].get("type") if isinstance(f["type"], dict) else f["type"]
        shape.append((f["name"], tuple(kind) if isinstance(kind, list) else kind))
    return tuple(shape) == _ENVELOPE_FIELDS


def _payload_adapter(model: type[events.Event]) -> TypeAdapter[list[dict[str, Any]]]:
    """One validator for a list of payloads of ``model``: its payload fields as a strict
    TypedDict (same annotations and metadata), a field with a default not required."""
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if name != "envelope":
            annotation = info.rebuild_annotation()
            fields[name] = annotation if info.is_required() else NotRequired[annotation]
    payload_type = TypedDict(f"{model.__name__}Payload", fields)  # type: ignore[misc]
    payload_type.__pydantic_config__ = _STRICT  # type: ignore[attr-defined]
    return TypeAdapter(list[payload_type])


def plan_for(preparer: Preparer, event_type: str) -> FastPlan | None:
    """The fast plan of ``event_type``, or None when its events need the ordinary path."""
    model = events.EVENT_MODELS.get(event_type)
    if model is None or preparer.sealer.seals(event_type):
        return None
    decorators = model.__pydantic_decorators__
    if (
        set(decorators.field_validators) - _OWN_VALIDATORS
        or decorators.model_validators
        or decorators.root_validators
        or decorators.validators
    ):
        return None
    version = preparer.store.latest(event_type)
    fields = version.wire_schema["fields"]
    names = [f["name"] for f in fields]
    if names[:1] != ["envelope"] or set(names) != set(model.model_fields):
        return None
    if not _envelope_is_standard(fields[0]["type"]):
        return None
    defaults = {
        name: info.get_default(call_default_factory=True)
        for name, info in model.model_fields.items()
        if name != "envelope" and not info.is_required()
    }
    write = compile_fields(fields[1:], defaults)
    if write is None:
        return None
    route = preparer.route(event_type)
    return FastPlan(
        model,
        _payload_adapter(model),
        write,
        defaults,
        preparer.store.codec.prefix(version),
        _string(event_type),
        (
            (h.EVENT_TYPE, route.template.event_type),
            (h.SCHEMA, route.template.schema),
            (h.CONTENT_TYPE, _AVRO),
        ),
    )


class _Group(NamedTuple):
    """The items of one event type in a batch: their indexes, payloads and priorities."""

    indexes: list[int]
    payloads: list[dict[str, Any]]
    priorities: list[Any]


def _split(items: Sequence[Any]) -> dict[str, _Group] | None:
    """Items by event type; None unless every item is plain."""
    groups: dict[str, _Group] = {}
    for i, item in enumerate(items):
        if type(item) is tuple and len(item) == 2:
            event_type, payload = item
            priority = None
        elif type(item) is dict and item.keys() <= _ITEM_KEYS and "payload" in item:
            event_type, payload = item.get("event_type"), item["payload"]
            priority = item.get("priority")
        else:
            return None
        if type(payload) is not dict or "envelope" in payload or type(event_type) is not str:
            return None
        group = groups.get(event_type)
        if group is None:
            group = groups[event_type] = _Group([], [], [])
        group.indexes.append(i)
        group.payloads.append(payload)
        group.priorities.append(priority)
    return groups


def fast_batch(preparer: Preparer, items: Sequence[Any]) -> FastRecords | None:
    """Every item's record, in order, or None: let the ordinary path prepare the batch."""
    groups = _split(items)
    if groups is None:
        return None
    n = len(items)
    out = FastRecords(n, new_event_ids(n), new_traceparents(n))
    now_ms = events.now_ms()
    try:
        for event_type, group in groups.items():
            plan = preparer.plan(event_type)
            if plan is None or not _fill(preparer, plan, event_type, group, now_ms, out):
                return None
    except _FALL_BACK:
        return None  # the ordinary path names the problem (or prepares what we could not)
    return out


def _lanes(
    preparer: Preparer, route: _Route, event_type: str
) -> Callable[[Any], tuple[str, tuple[str, bytes] | None]]:
    """(topic, lane header) of a priority, computed once per priority in a batch."""
    cache: dict[Any, tuple[str, tuple[str, bytes] | None]] = {None: (route.topic, None)}
    family = preparer.catalog.family(route.family)

    def lane(priority: Any) -> tuple[str, tuple[str, bytes] | None]:
        found = cache.get(priority) if isinstance(priority, str) or priority is None else None
        if found is None:  # InvalidPayload for an unknown lane: the caller falls back
            found = cache[priority] = lane_route(
                family, preparer.topic_prefix, event_type, priority
            )
        return found

    return lane


def _fill(
    preparer: Preparer,
    plan: FastPlan,
    event_type: str,
    group: _Group,
    now_ms: int,
    out: FastRecords,
) -> bool:
    """The records of one event type's items, into ``out`` at their indexes; False when
    the ordinary path must do it (the envelope or a record is not acceptable)."""
    producer = preparer.producer_name
    # the envelope the SDK makes, checked by the model once per batch (the producer name;
    # the ids are fresh UUID4s, the type the model's own, the clock one reading)
    events.Envelope.model_validate(
        {
            "event_id": out.event_ids[group.indexes[0]],
            "event_type": event_type,
            "occurred_at_ms": now_ms,
            "producer": producer,
        }
    )
    route = preparer.route(event_type)
    lane = _lanes(preparer, route, event_type)
    tail = plan.envelope_tail(producer, now_ms)
    for start in range(0, len(group.indexes), CHUNK):  # chunks: the validated dicts die young
        end = start + CHUNK
        payloads = plan.adapter.validate_python(group.payloads[start:end])
        chunk = _Group(group.indexes[start:end], payloads, group.priorities[start:end])
        if not _write_chunk(plan, route, (tail, lane), chunk, out):
            return False
    return True


def _write_chunk(
    plan: FastPlan,
    route: _Route,
    context: tuple[bytes, Callable[[Any], tuple[str, tuple[str, bytes] | None]]],
    chunk: _Group,
    out: FastRecords,
) -> bool:
    """The records of one chunk of validated payloads; False: the ordinary path decides."""
    tail, lane = context
    key_field, key_default = route.key_field, plan.defaults.get(route.key_field)
    limit = route.size_limit_bytes - route.template.size_bytes
    head, constant, write = plan.prefix, plan.constant_headers, plan.write
    ids, traceparents = out.event_ids, out.traceparents
    topics, keys, values_out, raw_ids = out.topics, out.keys, out.values, out.raw_ids
    constants, lanes = out.constant_headers, out.lane_headers
    main_topic = route.topic
    for i, values, priority in zip(*chunk, strict=True):
        key_value = values.get(key_field, key_default)
        if type(key_value) is not str or not key_value:
            return False  # not a plain string key: the ordinary path says why
        key = key_value.encode()
        eid_raw = ids[i].encode()
        n = len(eid_raw)
        parts = [head, _SMALL[n] if n < 64 else long_bytes(n), eid_raw, tail]
        write(values, parts)
        value = b"".join(parts)
        size = len(value) + len(key) + n + len(traceparents[i])
        if priority is None:
            topic = main_topic
        else:
            topic, lane_header = lane(priority)
            if lane_header is not None:
                size += len(lane_header[0]) + len(lane_header[1])
                lanes[i] = lane_header
        if size > limit:
            return False  # too large: EventTooLarge from the ordinary path
        topics[i] = topic
        keys[i] = key
        values_out[i] = value
        raw_ids[i] = eid_raw
        constants[i] = constant
    return True
