"""Reading a day back from Kafka with a plain consumer (blocking: run it in a thread).

``read_day`` assigns partitions directly (no group membership, nothing committed), finds the
day's first offsets with ``offsets_for_times`` and reads each family's main topic up to the
first offset of the next day, and its retry tiers and DLQ from the day's start up to their
high watermarks at call time (a retry or a dead letter may be written days after its
event). The worker group's committed offsets come from the same consumer (``committed``),
which uses the worker's group id without joining the group.

Records of a partition are assumed to carry non-decreasing timestamps (CreateTime from one
producer, or LogAppendTime); a record stamped out of order across the day boundary can
fall into the neighbouring day.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from streams.broker.clients import base_conf
from streams.catalog import Catalog
from streams.core import headers as h
from streams.jobs.analytics_rollup import FamilyLog, Seen
from streams.settings import Settings

Window = tuple[int, int | None]
"""(start ms, end ms or None for "up to now")."""


def _end_offsets(
    consumer: Any, tps: list[TopicPartition], end_ms: int | None, timeout_s: float
) -> list[int]:
    highs = [consumer.get_watermark_offsets(tp, timeout=timeout_s)[1] for tp in tps]
    if end_ms is None:
        return highs
    ends = consumer.offsets_for_times(
        [TopicPartition(tp.topic, tp.partition, end_ms) for tp in tps], timeout=timeout_s
    )
    return [e.offset if e.offset >= 0 else high for e, high in zip(ends, highs, strict=True)]


def _ranges(
    consumer: Any, topic: str, partitions: int, window: Window, timeout_s: float
) -> dict[tuple[str, int], tuple[int, int]]:
    start_ms, end_ms = window
    tps = [TopicPartition(topic, p, start_ms) for p in range(partitions)]
    starts = consumer.offsets_for_times(tps, timeout=timeout_s)
    ends = _end_offsets(consumer, tps, end_ms, timeout_s)
    out = {}
    for start, end in zip(starts, ends, strict=True):
        first = start.offset if start.offset >= 0 else end
        if first < end:
            out[(topic, start.partition)] = (first, end)
    return out


def _consume(
    consumer: Any, ranges: dict[tuple[str, int], tuple[int, int]], deadline: float
) -> list[Seen]:
    consumer.assign([TopicPartition(t, p, first) for (t, p), (first, _) in ranges.items()])
    remaining = {key: end for key, (_, end) in ranges.items()}
    out: list[Seen] = []
    while remaining:
        if time.monotonic() > deadline:
            raise TimeoutError(f"analytics: {len(remaining)} partitions not read in time")
        batch = consumer.consume(1000, timeout=0.2)
        for msg in batch:
            key = (msg.topic(), msg.partition())
            end = remaining.get(key)
            if msg.error() is not None or end is None or msg.offset() >= end:
                continue
            headers = h.decode(msg.headers() or [])
            out.append(Seen(key[0], key[1], msg.offset(), msg.timestamp()[1], headers, msg.value()))
            if msg.offset() >= end - 1:
                del remaining[key]
        if not batch:  # gaps (compaction, control records): ask where the consumer is
            positions = consumer.position([TopicPartition(t, p) for t, p in remaining])
            for tp in positions:
                if tp.offset >= remaining[(tp.topic, tp.partition)]:
                    del remaining[(tp.topic, tp.partition)]
    return out


def read_day(
    settings: Settings,
    catalog: Catalog,
    families: Iterable[str],
    day_start_ms: int,
    day_end_ms: int,
    *,
    timeout_s: float = 120.0,
) -> dict[str, FamilyLog]:
    """The records of ``families`` for the UTC day [day_start_ms, day_end_ms) (module doc).

    Raises TimeoutError when the topics cannot be read within ``timeout_s``, and
    confluent-kafka's KafkaException when the broker refuses a request.
    """
    deadline = time.monotonic() + timeout_s
    conf = {"group.id": settings.app_id, "enable.auto.commit": False, "enable.partition.eof": False}
    consumer = Consumer(base_conf(settings, **conf))
    try:
        plan: dict[str, dict[str, dict[tuple[str, int], tuple[int, int]]]] = {}
        tracked: list[TopicPartition] = []
        for name in families:
            family = catalog.family(name)
            topics = family.topics(settings.topic_prefix)
            windows = {"main": (day_start_ms, day_end_ms), "later": (day_start_ms, None)}
            parts = family.partitions
            plan[name] = {
                "main": _ranges(consumer, topics.main, parts, windows["main"], timeout_s),
                "retries": {
                    k: v
                    for tier in topics.retries
                    for k, v in _ranges(consumer, tier, parts, windows["later"], timeout_s).items()
                },
                "dead": _ranges(consumer, topics.dlq, parts, windows["later"], timeout_s),
            }
            tracked += [TopicPartition(t, p) for t in (topics.main, *topics.retries)
                        for p in range(parts)]  # fmt: skip
        committed = {
            (tp.topic, tp.partition): tp.offset
            for tp in consumer.committed(tracked, timeout=timeout_s)
            if tp.offset >= 0
        }
        everything = {k: v for kinds in plan.values() for r in kinds.values() for k, v in r.items()}
        records = _consume(consumer, everything, deadline) if everything else []
    finally:
        consumer.close()
    by_topic: dict[str, list[Seen]] = {}
    for record in records:
        by_topic.setdefault(record.topic, []).append(record)
    return {name: _family_log(name, kinds, by_topic, committed, day_start_ms, day_end_ms)
            for name, kinds in plan.items()}  # fmt: skip


def _family_log(
    name: str,
    kinds: dict[str, dict[tuple[str, int], tuple[int, int]]],
    by_topic: dict[str, list[Seen]],
    committed: dict[tuple[str, int], int],
    day_start_ms: int,
    day_end_ms: int,
) -> FamilyLog:
    def of(kind: str) -> list[Seen]:
        topics = sorted({t for t, _ in kinds[kind]})
        return [r for t in topics for r in by_topic.get(t, [])]

    main = [r for r in of("main") if day_start_ms <= r.timestamp_ms < day_end_ms]
    return FamilyLog(name, main, of("retries"), of("dead"), committed)
