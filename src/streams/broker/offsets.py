"""What an operator reads from the cluster about a consumer group: committed offsets, high
and low watermarks, the timestamp of the record at an offset, whether the group has members,
and (for a backlog clear) moving the committed offsets.

Blocking confluent-kafka calls behind one lock (a Consumer is not thread-safe); the API runs
them in a thread. Every call is bounded by ``timeout_s`` and raises TopologyError with the
reason when the cluster does not answer.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_INVALID,
    ConsumerGroupTopicPartitions,
    KafkaException,
    TopicPartition,
)
from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka.admin import AdminClient

from streams.broker.clients import base_conf
from streams.broker.watermarks import watermarks
from streams.errors import TopologyError
from streams.settings import Settings

DEFAULT_TIMEOUT_S = 5.0
Key = tuple[str, int]  # (topic, partition)


@dataclass(frozen=True)
class PartitionOffsets:
    topic: str
    partition: int
    low: int
    high: int
    committed: int | None  # None: the group never committed here

    @property
    def next_offset(self) -> int:
        """The first offset the group has not processed (the low watermark when it never
        committed or its commit fell out of retention)."""
        if self.committed is None or self.committed < self.low:
            return self.low
        return min(self.committed, self.high)

    @property
    def lag(self) -> int:
        return self.high - self.next_offset


class ClusterOffsets:
    def __init__(self, settings: Settings, group: str, *, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.group = group
        self.timeout_s = timeout_s
        self._admin = AdminClient(base_conf(settings))
        self._consumer = KafkaConsumer(
            base_conf(
                settings,
                **{
                    "group.id": f"{group}.operator-reader",  # never subscribes nor commits
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "enable.partition.eof": True,
                },
            )
        )
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._consumer.close()

    def partitions(self, topic: str) -> list[int]:
        try:
            meta = self._admin.list_topics(topic, timeout=self.timeout_s)
        except KafkaException as exc:
            raise TopologyError(f"cannot read topic {topic}: {exc}") from None
        found = meta.topics.get(topic)
        if found is None or found.error is not None:
            return []
        return sorted(found.partitions)

    def offsets(self, topics: Iterable[str]) -> list[PartitionOffsets]:
        """Watermarks and the group's committed offset of every partition of ``topics``."""
        keys = [(t, p) for t in topics for p in self.partitions(t)]
        committed = self.committed(keys)
        out = []
        with self._lock:
            for topic, p in keys:
                low, high = self._watermarks(topic, p)
                out.append(PartitionOffsets(topic, p, low, high, committed.get((topic, p))))
        return out

    def _watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        try:
            low, high = watermarks(self._consumer, TopicPartition(topic, partition), self.timeout_s)
        except KafkaException as exc:
            raise TopologyError(f"cannot read the offsets of {topic}[{partition}]: {exc}") from None
        return int(low), int(high)

    def committed(self, keys: Iterable[Key]) -> dict[Key, int]:
        request = [TopicPartition(t, p) for t, p in keys]
        if not request:
            return {}
        futures = self._admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(self.group, request)], request_timeout=self.timeout_s
        )
        result = _wait(futures[self.group], self.timeout_s, f"read group {self.group}'s offsets")
        return {
            (tp.topic, tp.partition): tp.offset
            for tp in result.topic_partitions
            if tp.offset != OFFSET_INVALID and tp.offset >= 0
        }

    def timestamp_at(self, topic: str, partition: int, offset: int) -> int | None:
        """The timestamp (ms) of the first record at or after ``offset``, None if there is none."""
        with self._lock:
            self._consumer.assign([TopicPartition(topic, partition, offset)])
            try:
                msg = self._consumer.poll(self.timeout_s)
            finally:
                self._consumer.unassign()
        if msg is None or msg.error() is not None:
            return None
        return int(msg.timestamp()[1])

    def last_values(
        self, topic: str, partition: int, keys: set[bytes]
    ) -> dict[bytes, tuple[bytes | None, int]]:
        """The latest (value, offset) of each of ``keys`` in one partition, read from the low to
        the high watermark (a compacted changelog: a scan of one partition's live keys)."""
        found: dict[bytes, tuple[bytes | None, int]] = {}
        with self._lock:
            low, high = self._watermarks(topic, partition)
            if high <= low:
                return found
            self._consumer.assign([TopicPartition(topic, partition, low)])
            try:
                position = low
                while position < high:
                    # no more than remain: consume() waits its whole timeout for a batch
                    want = min(500, high - position)
                    batch = self._consumer.consume(want, timeout=self.timeout_s)
                    if not batch:
                        raise TopologyError(f"reading {topic}[{partition}] stalled at {position}")
                    for msg in batch:
                        if msg.error() is not None:  # end of partition (compaction gaps)
                            position = high
                            continue
                        position = _offset(msg) + 1
                        key = msg.key()
                        if key in keys:
                            found[key] = (msg.value(), _offset(msg))
            finally:
                self._consumer.unassign()
        return found

    def members(self) -> int:
        """How many members the group has now (0: empty or unknown to the cluster)."""
        futures = self._admin.describe_consumer_groups([self.group], request_timeout=self.timeout_s)
        desc = _wait(futures[self.group], self.timeout_s, f"describe group {self.group}")
        return len(desc.members or [])

    def move(self, offsets: Mapping[Key, int]) -> None:
        """Set the group's committed offsets; the broker refuses it (TopologyError) while the
        group has members, which is what makes a backlog clear safe against live workers."""
        request = [TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())]
        futures = self._admin.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(self.group, request)], request_timeout=self.timeout_s
        )
        result = _wait(futures[self.group], self.timeout_s, f"move group {self.group}'s offsets")
        failed = [tp for tp in result.topic_partitions if tp.error is not None]
        if failed:
            raise TopologyError(
                f"cannot move {failed[0].topic}[{failed[0].partition}]: {failed[0].error}"
            )


def _offset(msg: Any) -> int:
    offset = msg.offset()
    return int(offset) if offset is not None else -1


def _wait(future: Any, timeout_s: float, what: str) -> Any:
    try:
        return future.result(timeout=timeout_s)
    except KafkaException as exc:
        raise TopologyError(f"cannot {what}: {exc}") from None
    except TimeoutError:
        raise TopologyError(f"cannot {what}: no answer within {timeout_s:g}s") from None
