"""Reading a family's dead-letter topic: list, show one record, statistics, tail.

Every read uses ``assign()`` with explicit offsets and never commits, so it joins no
consumer group (the worker's group id stays reserved for faust). librdkafka wants a
``group.id`` even then: ours is ``streams-dlq-reader-<random>``, never used for a join.
What a record holds, and the statistics over many, is ``streams.dlq.records`` (pure).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streams.broker.clients import base_conf, check_security
from streams.broker.watermarks import watermarks
from streams.dlq.records import DlqRecord, PartitionRange, latest
from streams.errors import DlqError, TopologyError
from streams.settings import Settings

__all__ = ["DlqReader", "DlqTail"]

METADATA_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 10.0
"""A read gives up when nothing at all arrives for this long (broker gone)."""
_BATCH = 500


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
            # librdkafka prefetches up to 100k messages / 64 MB per partition by default, so
            # a scan of a large DLQ held most of it (export of 100k: 211 MB RSS); 16 MB per
            # partition keeps a read's memory bounded (126 MB) at a similar speed
            "queued.min.messages": 10000,
            "queued.max.messages.kbytes": 16384,
        },
    )
    check_security(settings)  # a wrong password or CA fails here, saying which
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
    """(low, high) of ``tp``; retries a leader moving or a busy broker for up to
    METADATA_TIMEOUT_S (``broker/watermarks.py``), then DlqError."""
    try:
        return watermarks(consumer, tp, METADATA_TIMEOUT_S)
    except KafkaException as exc:
        raise DlqError(
            f"cannot read the offsets of {tp.topic}[{tp.partition}]: {_kafka_reason(exc)}"
        ) from None


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
        return latest(self.read(starts, {r.partition: r.high for r in ranges}), limit)

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
