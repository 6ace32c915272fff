"""A DLQ record as an operator sees it: failure headers, value, position, statistics.

Pure: no confluent_kafka here (``streams.dlq.reader`` does the reading), so every piece
is unit-tested with plain values. A record's failure headers (``streams.core.headers``) are
decoded as text; its value is decoded with the schema store when it is one of our Avro
events, otherwise it is shown as a hex preview marked undecodable (an ``undecodable`` DLQ
record is exactly that).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from streams.catalog import Catalog
from streams.core import headers as h
from streams.core.topology import dlq_topic
from streams.errors import DecodeError, DlqError
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.serde import SchemaStore

__all__ = [
    "DlqError",
    "DlqRecord",
    "DlqStats",
    "FingerprintGroup",
    "KafkaMessage",
    "PartitionRange",
    "ValueView",
    "describe_value",
    "dlq_topic_for",
    "iso_ms",
    "latest",
    "parse_position",
    "summarize",
    "with_reason",
]

HEX_PREVIEW_BYTES = 64

# --- records ---------------------------------------------------------------------------


class KafkaMessage(Protocol):
    """What a record is read from: the part of confluent-kafka's ``Message`` used here."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def timestamp(self) -> tuple[int, int]: ...
    def headers(
        self,
    ) -> dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]] | None: ...


def iso_ms(ms: int | None) -> str | None:
    """Epoch milliseconds as ISO 8601 UTC with milliseconds (``2025-01-31T12:00:00.000Z``)."""
    if ms is None or ms <= 0:
        return None
    try:
        moment = datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _int_or_none(headers: dict[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class DlqRecord:
    """One DLQ record: where it is, its headers as text, its raw key and value."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    @classmethod
    def from_message(cls, message: KafkaMessage) -> DlqRecord:
        kind, ts = message.timestamp()
        raw = message.headers()
        pairs = list(raw.items()) if isinstance(raw, dict) else raw
        return cls(
            topic=message.topic() or "",
            partition=int(message.partition() or 0),
            offset=int(message.offset() or 0),
            timestamp_ms=int(ts) if kind and ts and ts > 0 else None,
            key=message.key(),
            value=message.value(),
            headers=h.decode(pairs),
        )

    @property
    def position(self) -> str:
        """``partition:offset``, the address ``streams dlq show`` takes."""
        return f"{self.partition}:{self.offset}"

    @property
    def reason(self) -> str:
        return self.headers.get(h.DLQ_REASON, "") or "(none)"

    @property
    def error_class(self) -> str:
        return self.headers.get(h.ERROR_CLASS, "")

    @property
    def error_message(self) -> str:
        return self.headers.get(h.ERROR_MESSAGE, "")

    @property
    def fingerprint(self) -> str:
        """The worker's error fingerprint, or one computed from class and message."""
        value = self.headers.get(h.ERROR_FINGERPRINT)
        if value:
            return value
        return h.error_fingerprint(self.error_class, self.error_message)

    @property
    def attempt(self) -> int | None:
        return _int_or_none(self.headers, h.ATTEMPT)

    @property
    def event_id(self) -> str | None:
        return self.headers.get(h.EVENT_ID)

    @property
    def event_type(self) -> str | None:
        return self.headers.get(h.EVENT_TYPE)

    @property
    def original_topic(self) -> str | None:
        return self.headers.get(h.ORIGINAL_TOPIC)

    @property
    def original_partition(self) -> int | None:
        return _int_or_none(self.headers, h.ORIGINAL_PARTITION)

    @property
    def original_offset(self) -> int | None:
        return _int_or_none(self.headers, h.ORIGINAL_OFFSET)

    @property
    def first_failure_at_ms(self) -> int | None:
        return _int_or_none(self.headers, h.FIRST_FAILURE_AT_MS)

    @property
    def failed_at_ms(self) -> int | None:
        """When it was dead-lettered: the failed-at header, else the record timestamp."""
        return _int_or_none(self.headers, h.FAILED_AT_MS) or self.timestamp_ms

    def summary(self) -> dict[str, Any]:
        """The decoded headers as a JSON-ready mapping (no value)."""
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "position": self.position,
            "timestamp": iso_ms(self.timestamp_ms),
            "reason": self.reason,
            "error_class": self.error_class,
            "error_message": self.error_message,
            "error_fingerprint": self.fingerprint,
            "attempt": self.attempt,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "original_topic": self.original_topic,
            "original_partition": self.original_partition,
            "original_offset": self.original_offset,
            "original_timestamp": iso_ms(_int_or_none(self.headers, h.ORIGINAL_TIMESTAMP_MS)),
            "first_failure_at": iso_ms(self.first_failure_at_ms),
            "failed_at": iso_ms(self.failed_at_ms),
            "key": _text_or_hex(self.key),
        }


def _text_or_hex(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "hex:" + data.hex()


# --- values ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ValueView:
    """A record value as an operator sees it: decoded, or why not plus a hex preview."""

    size: int
    decoded: dict[str, Any] | None = None
    schema: str | None = None  # "<event type> v<N>"
    error: str | None = None
    hex_preview: str | None = None

    def as_json(self) -> dict[str, Any]:
        if self.decoded is not None:
            return {"size": self.size, "schema": self.schema, "decoded": self.decoded}
        return {
            "size": self.size,
            "undecodable": self.error,
            "hex_preview": self.hex_preview,
        }


def describe_value(store: SchemaStore | None, value: bytes | None) -> ValueView:
    """Decode ``value`` with ``store`` (Avro single-object); never raises."""
    if value is None:
        return ValueView(size=0, error="no value (null record)", hex_preview="")
    preview = value[:HEX_PREVIEW_BYTES].hex(" ")
    if len(value) > HEX_PREVIEW_BYTES:
        preview += f" ... ({len(value) - HEX_PREVIEW_BYTES} more bytes)"
    if store is None:
        return ValueView(size=len(value), error="no schema store", hex_preview=preview)
    try:
        writer, record = store.decode(value)
    except DecodeError as exc:
        return ValueView(size=len(value), error=str(exc), hex_preview=preview)
    except Exception as exc:  # a hostile value must not break an operator's read
        reason = f"{type(exc).__name__}: {exc}"
        return ValueView(size=len(value), error=reason, hex_preview=preview)
    return ValueView(
        size=len(value),
        decoded=_json_safe(record),
        schema=f"{writer.event_type} v{writer.version}",
    )


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return "hex:" + bytes(value).hex()
    return value


# --- positions -------------------------------------------------------------------------


def parse_position(text: str) -> tuple[int, int]:
    """``"3:42"`` -> (3, 42); DlqError saying what is wrong otherwise."""
    parts = text.strip().split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise DlqError(
            f"bad position {text!r}: expected PARTITION:OFFSET with two non-negative "
            "integers, e.g. 3:42 (as printed by `streams dlq list`)"
        )
    return int(parts[0]), int(parts[1])


def dlq_topic_for(settings: Settings, catalog: Catalog, family: str) -> str:
    """The DLQ topic of ``family``; CatalogError names the known families."""
    return dlq_topic(settings.topic_prefix, catalog.family(family).name)


# --- partitions and selections --------------------------------------------------------


@dataclass(frozen=True)
class PartitionRange:
    partition: int
    low: int  # first offset still stored
    high: int  # next offset to be written

    @property
    def count(self) -> int:
        return max(0, self.high - self.low)


def _order(record: DlqRecord) -> tuple[int, int, int]:
    return (record.failed_at_ms or 0, record.partition, record.offset)


def latest(records: Iterable[DlqRecord], limit: int) -> list[DlqRecord]:
    """The ``limit`` most recent of ``records`` (by failure time), oldest first."""
    return sorted(records, key=_order)[-limit:] if limit > 0 else []


def with_reason(records: Iterable[DlqRecord], reason: str) -> list[DlqRecord]:
    """The records dead-lettered for ``reason`` (any case), in the order given."""
    wanted = reason.lower()
    return [r for r in records if r.reason == wanted]


# --- statistics ------------------------------------------------------------------------


@dataclass
class FingerprintGroup:
    fingerprint: str
    error_class: str
    sample_message: str
    count: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    first_ms: int | None = None
    last_ms: int | None = None
    example: str = ""  # a position to `show`

    def as_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "count": self.count,
            "error_class": self.error_class,
            "sample_message": self.sample_message,
            "reasons": dict(self.reasons),
            "first_failed_at": iso_ms(self.first_ms),
            "last_failed_at": iso_ms(self.last_ms),
            "example": self.example,
        }


@dataclass
class DlqStats:
    topic: str
    total: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    by_event_type: Counter[str] = field(default_factory=Counter)
    by_partition: Counter[int] = field(default_factory=Counter)
    groups: dict[str, FingerprintGroup] = field(default_factory=dict)
    oldest_ms: int | None = None
    newest_ms: int | None = None

    def add(self, record: DlqRecord) -> None:
        self.total += 1
        self.by_reason[record.reason] += 1
        self.by_event_type[record.event_type or "(unknown)"] += 1
        self.by_partition[record.partition] += 1
        when = record.failed_at_ms
        fp = record.fingerprint
        group = self.groups.get(fp)
        if group is None:
            group = FingerprintGroup(
                fp, record.error_class or "(none)", record.error_message, example=record.position
            )
            self.groups[fp] = group
        group.count += 1
        group.reasons[record.reason] += 1
        if when is not None:
            group.first_ms = when if group.first_ms is None else min(group.first_ms, when)
            group.last_ms = when if group.last_ms is None else max(group.last_ms, when)
            self.oldest_ms = when if self.oldest_ms is None else min(self.oldest_ms, when)
            self.newest_ms = when if self.newest_ms is None else max(self.newest_ms, when)

    def top_groups(self, limit: int | None = None) -> list[FingerprintGroup]:
        ordered = sorted(self.groups.values(), key=lambda g: (-g.count, g.fingerprint))
        return ordered if limit is None else ordered[:limit]

    def as_json(self, top: int | None = None) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "total": self.total,
            "oldest_failed_at": iso_ms(self.oldest_ms),
            "newest_failed_at": iso_ms(self.newest_ms),
            "by_reason": dict(self.by_reason.most_common()),
            "by_event_type": dict(self.by_event_type.most_common()),
            "by_partition": {str(p): n for p, n in sorted(self.by_partition.items())},
            "by_error": [g.as_json() for g in self.top_groups(top)],
        }


def summarize(topic: str, records: Iterable[DlqRecord]) -> DlqStats:
    """Counts by reason, event type, partition and error fingerprint."""
    stats = DlqStats(topic)
    for record in records:
        stats.add(record)
    return stats
