"""Reading a family's dead-letter topic: list, show one record, statistics, tail.

Every read uses ``assign()`` with explicit offsets and never commits, so it joins no
consumer group (the worker's group id stays reserved for faust). librdkafka wants a
``group.id`` even then: ours is ``streams-dlq-reader-<random>``, never used for a join.

A record's failure headers (``streams.core.headers``) are decoded as text; its value is
decoded with the schema store when it is one of our Avro events, otherwise it is shown
as a hex preview marked undecodable (an ``undecodable`` DLQ record is exactly that).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streams.broker.clients import base_conf
from streams.catalog import Catalog
from streams.core import headers as h
from streams.core.topology import dlq_topic
from streams.errors import DecodeError, StreamsError, TopologyError
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.serde import SchemaStore

__all__ = [
    "DlqError",
    "DlqReader",
    "DlqRecord",
    "DlqStats",
    "DlqTail",
    "PartitionRange",
    "ValueView",
    "describe_value",
    "dlq_topic_for",
    "iso_ms",
    "parse_position",
    "summarize",
]

METADATA_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 10.0
"""A read gives up when nothing at all arrives for this long (broker gone)."""
HEX_PREVIEW_BYTES = 64
_BATCH = 500


class DlqError(StreamsError):
    """A DLQ read that cannot be done as asked (bad position, missing topic, ...)."""


# --- records ---------------------------------------------------------------------------


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
    def from_message(cls, message: Message) -> DlqRecord:
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


# --- reading ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PartitionRange:
    partition: int
    low: int  # first offset still stored
    high: int  # next offset to be written

    @property
    def count(self) -> int:
        return max(0, self.high - self.low)


def _consumer(settings: Settings) -> Consumer:
    conf = base_conf(
        settings,
        **{
            "group.id": f"streams-dlq-reader-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "client.id": "streams-dlq-reader",
            "log_level": 0,
        },
    )
    return Consumer(conf)


def _partitions(consumer: Consumer, settings: Settings, name: str) -> list[PartitionRange]:
    try:
        metadata = consumer.list_topics(name, timeout=METADATA_TIMEOUT_S)
    except KafkaException as exc:
        raise DlqError(f"cannot read the cluster's metadata: {_kafka_reason(exc)}") from None
    topic = metadata.topics.get(name)
    if topic is None or (
        topic.error is not None and topic.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    ):
        raise TopologyError(
            f"DLQ topic {name} does not exist on {settings.bootstrap}; "
            "check STREAMS_TOPIC_PREFIX, or create it with `streams topics apply`"
        )
    if topic.error is not None:
        raise DlqError(f"cannot describe {name}: {topic.error.str()}")
    out = []
    for number in sorted(topic.partitions):
        low, high = _watermarks(consumer, TopicPartition(name, number))
        out.append(PartitionRange(number, low, high))
    return out


def _watermarks(consumer: Consumer, tp: TopicPartition) -> tuple[int, int]:
    """(low, high) of ``tp``; retries retriable errors (a leader moving, a busy broker)
    for up to METADATA_TIMEOUT_S, then DlqError."""
    deadline = time.monotonic() + METADATA_TIMEOUT_S
    delay_s = 0.1
    while True:
        left_s = max(0.5, deadline - time.monotonic())
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=left_s)
            return int(low), int(high)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            retriable = isinstance(err, KafkaError) and (
                err.retriable()
                or err.code()
                in (
                    KafkaError.NOT_LEADER_FOR_PARTITION,
                    KafkaError.LEADER_NOT_AVAILABLE,
                    KafkaError._TIMED_OUT,
                )
            )
            if not retriable or time.monotonic() + delay_s > deadline:
                raise DlqError(
                    f"cannot read the offsets of {tp.topic}[{tp.partition}]: {_kafka_reason(exc)}"
                ) from None
        time.sleep(delay_s)
        delay_s = min(1.0, delay_s * 2)


def _kafka_reason(exc: KafkaException) -> str:
    err = exc.args[0] if exc.args else None
    if isinstance(err, KafkaError):
        return f"{err.name()}: {err.str()}"
    return str(exc)


class DlqReader:
    """Read one DLQ topic by offsets. ``with DlqReader(settings, topic) as reader: ...``."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        *,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.idle_timeout_s = idle_timeout_s
        self._consumer: Consumer | None = None

    def __enter__(self) -> DlqReader:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                consumer.close()

    @property
    def consumer(self) -> Consumer:
        if self._consumer is None:
            self._consumer = _consumer(self.settings)
        return self._consumer

    def partitions(self) -> list[PartitionRange]:
        """Every partition with its stored offsets; TopologyError when the topic is missing."""
        return _partitions(self.consumer, self.settings, self.topic)

    def read(self, starts: dict[int, int], ends: dict[int, int]) -> Iterator[DlqRecord]:
        """Records of every partition from ``starts[p]`` up to (not incl.) ``ends[p]``."""
        wanted = {p: ends[p] for p, start in starts.items() if start < ends.get(p, 0)}
        if not wanted:
            return
        consumer = self.consumer
        consumer.assign([TopicPartition(self.topic, p, starts[p]) for p in wanted])
        try:
            idle_since: float | None = None
            while wanted:
                batch = consumer.consume(num_messages=_BATCH, timeout=0.5)
                if not batch:
                    now = time.monotonic()
                    idle_since = idle_since or now
                    if now - idle_since > self.idle_timeout_s:
                        missing = ", ".join(f"[{p}] up to {e}" for p, e in sorted(wanted.items()))
                        raise DlqError(
                            f"reading {self.topic} stalled for {self.idle_timeout_s:g}s "
                            f"(still expected {missing})"
                        )
                    continue
                idle_since = None
                for message in batch:
                    partition = int(message.partition() or 0)
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            wanted.pop(partition, None)
                            continue
                        raise DlqError(f"reading {self.topic}[{partition}]: {error.str()}")
                    end = wanted.get(partition)
                    if end is None:
                        continue
                    offset = int(message.offset() or 0)
                    if offset >= end:
                        wanted.pop(partition, None)
                        continue
                    yield DlqRecord.from_message(message)
                    if offset + 1 >= end:
                        wanted.pop(partition, None)
        finally:
            with contextlib.suppress(Exception):
                consumer.unassign()

    def scan(self, ranges: Sequence[PartitionRange] | None = None) -> Iterator[DlqRecord]:
        """Every stored record, partition by partition interleaved as fetched."""
        ranges = self.partitions() if ranges is None else ranges
        return self.read(
            {r.partition: r.low for r in ranges}, {r.partition: r.high for r in ranges}
        )

    def newest(self, limit: int, ranges: Sequence[PartitionRange] | None = None) -> list[DlqRecord]:
        """The ``limit`` most recent records (by failure time), oldest first."""
        ranges = self.partitions() if ranges is None else ranges
        starts = {r.partition: max(r.low, r.high - limit) for r in ranges}
        records = list(self.read(starts, {r.partition: r.high for r in ranges}))
        return sorted(records, key=_order)[-limit:] if limit > 0 else []

    def get(self, partition: int, offset: int) -> DlqRecord:
        """The record at ``partition:offset``; DlqError saying why when there is none."""
        ranges = {r.partition: r for r in self.partitions()}
        found = ranges.get(partition)
        if found is None:
            last = max(ranges) if ranges else -1
            raise DlqError(
                f"partition {partition} does not exist: {self.topic} has partitions 0-{last}"
            )
        if found.count == 0:
            raise DlqError(
                f"no record at {partition}:{offset}: {self.topic}[{partition}] is empty"
                + (f" (next offset {found.high})" if found.high else "")
            )
        if not found.low <= offset < found.high:
            held = (
                f"offset {found.low}"
                if found.count == 1
                else f"offsets {found.low}-{found.high - 1}"
            )
            raise DlqError(
                f"no record at {partition}:{offset}: {self.topic}[{partition}] holds {held}"
                + (" (older ones were removed by retention)" if offset < found.low else "")
            )
        for record in self.read({partition: offset}, {partition: found.high}):
            if record.offset == offset:
                return record
            raise DlqError(
                f"no record at {partition}:{offset} (a transaction marker or compacted away); "
                f"the next one is {partition}:{record.offset}"
            )
        raise DlqError(f"no record at {partition}:{offset}")


def _order(record: DlqRecord) -> tuple[int, int, int]:
    return (record.failed_at_ms or 0, record.partition, record.offset)


class DlqTail:
    """New records of some DLQ topics from now on (the demo's per-run DLQ view).

    ``start()`` assigns every partition at its current end; ``poll()`` returns what
    arrived since. No group is joined, nothing is committed.
    """

    def __init__(self, settings: Settings, topics: Iterable[str]) -> None:
        self.settings = settings
        self.topics = list(topics)
        self._consumer: Consumer | None = None

    def start(self) -> None:
        consumer = _consumer(self.settings)
        assignment = []
        try:
            for topic in self.topics:
                for part in _partitions(consumer, self.settings, topic):
                    assignment.append(TopicPartition(topic, part.partition, part.high))
            consumer.assign(assignment)
        except BaseException:
            consumer.close()
            raise
        self._consumer = consumer

    def poll(self, timeout_s: float = 0.2) -> list[DlqRecord]:
        if self._consumer is None:
            raise RuntimeError("DlqTail.poll() before start()")
        out = []
        for message in self._consumer.consume(num_messages=_BATCH, timeout=timeout_s):
            if message.error() is None:
                out.append(DlqRecord.from_message(message))
        return out

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                consumer.close()


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
