"""Cleared backlogs, recorded so that nothing is silently lost: ``streams.skipped`` holds,
per clear, the offset ranges (per topic and partition, ``from`` inclusive, ``to``
exclusive) an admin skipped; ``replay`` re-reads those records from their topics and
publishes them again (same key, value and headers, so the idempotency ledger still knows
any that had already run).

Records on the topic (key = family, JSON):
``{"kind": "clear", "clear_id", "family", "actor", "at_ms", "ranges": [...]}`` before the
group's offsets move; ``{"kind": "aborted", "clear_id", ...}`` when the move was refused
(the ranges were not skipped); ``{"kind": "replayed", "clear_id", "records", ...}`` after a
replay. A range can be replayed while its topic retains it (the family's retention).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from streams.broker.clients import base_conf
from streams.errors import TopologyError
from streams.settings import Settings

READ_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class SkippedRange:
    topic: str
    partition: int
    start: int  # first skipped offset
    end: int  # one past the last

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "from": self.start,
            "to": self.end,
        }


@dataclass
class ClearRecord:
    clear_id: str
    family: str
    actor: str
    at_ms: int
    ranges: list[SkippedRange] = field(default_factory=list)
    outcome: str = "skipped"  # skipped | aborted | replayed

    @property
    def skipped(self) -> int:
        return sum(r.end - r.start for r in self.ranges)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": "clear",
            "clear_id": self.clear_id,
            "family": self.family,
            "actor": self.actor,
            "at_ms": self.at_ms,
            "skipped": self.skipped,
            "ranges": [r.as_dict() for r in self.ranges],
            "outcome": self.outcome,
        }


def parse(value: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) and isinstance(body.get("clear_id"), str) else None


def read_clears(settings: Settings, topic: str, family: str | None = None) -> list[ClearRecord]:
    """Every clear recorded on ``topic`` (of ``family``), with its latest outcome."""
    clears: dict[str, ClearRecord] = {}
    for value in _read_all(settings, topic):
        body = parse(value)
        if body is None or (family is not None and body.get("family") != family):
            continue
        cid = body["clear_id"]
        if body.get("kind") == "clear":
            clears[cid] = ClearRecord(
                clear_id=cid,
                family=str(body.get("family")),
                actor=str(body.get("actor")),
                at_ms=int(body.get("at_ms", 0)),
                ranges=[
                    SkippedRange(str(r["topic"]), int(r["partition"]), int(r["from"]), int(r["to"]))
                    for r in body.get("ranges", [])
                ],
            )
        elif cid in clears and body.get("kind") in ("aborted", "replayed"):
            clears[cid].outcome = str(body["kind"])
    return list(clears.values())


def _read_all(settings: Settings, topic: str) -> list[bytes]:
    consumer = Consumer(
        base_conf(
            settings,
            **{
                "group.id": "streams.skipped-reader",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            },
        )
    )
    try:
        meta = consumer.list_topics(topic, timeout=READ_TIMEOUT_S).topics.get(topic)
        if meta is None or meta.error is not None:
            return []
        values: list[bytes] = []
        for p in meta.partitions:
            values.extend(v for _, v, _ in _read_range(consumer, topic, p, None, None))
        return values
    finally:
        consumer.close()


def _read_range(
    consumer: Consumer, topic: str, partition: int, start: int | None, end: int | None
) -> list[tuple[bytes | None, bytes, Any]]:
    """(key, value, headers) of the records in [start, end) (None: the watermarks)."""
    low, high = consumer.get_watermark_offsets(
        TopicPartition(topic, partition), timeout=READ_TIMEOUT_S
    )
    first = max(low, start if start is not None else low)
    stop = min(high, end if end is not None else high)
    if stop <= first:
        return []
    consumer.assign([TopicPartition(topic, partition, first)])
    out = []
    position = first
    try:
        while position < stop:
            # no more than remain: consume() waits its whole timeout for a full batch
            batch = consumer.consume(min(500, stop - position), timeout=READ_TIMEOUT_S)
            if not batch:
                raise TopologyError(f"reading {topic}[{partition}] stalled at offset {position}")
            for msg in batch:
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise TopologyError(f"reading {topic}[{partition}]: {err}")
                    position = stop  # the end: offsets up to stop were compacted away
                    continue
                position = _offset(msg) + 1
                value = msg.value()
                if _offset(msg) < stop and value is not None:
                    out.append((msg.key(), value, list(msg.headers() or [])))
    finally:
        consumer.unassign()
    return out


def _offset(msg: Any) -> int:
    offset = msg.offset()
    return int(offset) if offset is not None else -1


def replay(
    settings: Settings,
    record: ClearRecord,
    *,
    marker_topic: str,
    on_record: Callable[[], None] | None = None,
) -> int:
    """Publish every still-retained record of ``record``'s ranges again to its topic;
    returns how many. The clear is then marked ``replayed`` on ``marker_topic``."""
    consumer = Consumer(
        base_conf(
            settings,
            **{
                "group.id": "streams.skipped-reader",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            },
        )
    )
    producer = Producer(base_conf(settings, **{"acks": "all", "enable.idempotence": True}))
    count = 0
    try:
        for r in record.ranges:
            for key, value, headers in _read_range(consumer, r.topic, r.partition, r.start, r.end):
                producer.produce(
                    r.topic, value=value, key=key, headers=headers, partition=r.partition
                )
                count += 1
                if on_record is not None:
                    on_record()
                producer.poll(0)
        marker = {
            "kind": "replayed",
            "clear_id": record.clear_id,
            "family": record.family,
            "records": count,
        }
        producer.produce(
            marker_topic, key=record.family.encode(), value=json.dumps(marker).encode()
        )
        if producer.flush(READ_TIMEOUT_S) > 0:
            raise TopologyError("the replayed records were not all acknowledged in time")
    finally:
        consumer.close()
    return count
