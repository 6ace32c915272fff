"""A family as an operator sees it, from the cluster and the heartbeats.

Per topic it reads (main and retry tiers: what the worker group consumes) every partition's
watermarks and the group's committed offset: **lag** = high watermark - next unprocessed
offset, and the **oldest unprocessed age** = now - the timestamp of the record at that
offset (the record the group reads next; for a retry tier that record may simply not be
due yet). **DLQ depth** = records the DLQ retains (high - low watermark; the DLQ is read by
operators, not consumed by the group). **In flight** and **paused** come from the live
workers' heartbeats, as do the workers holding the family's partitions.
"""

from __future__ import annotations

from typing import Any

from streams.broker.clear import consumed_topics
from streams.broker.offsets import ClusterOffsets, PartitionOffsets
from streams.catalog import Family
from streams.core import heartbeat

topic_roles = consumed_topics


def read_family(
    offsets: ClusterOffsets, family: Family, prefix: str, now_ms: int
) -> dict[str, Any]:
    """Everything the cluster says about ``family`` (blocking: run it in a thread)."""
    roles = topic_roles(family, prefix)
    consumed = offsets.offsets([t for t, _ in roles])
    topics = []
    for topic, role in roles:
        parts = [p for p in consumed if p.topic == topic]
        topics.append(_topic(offsets, topic, role, parts, now_ms))
    dlq = family.topics(prefix).dlq
    dlq_parts = offsets.offsets([dlq])
    ages = [t["oldest_unprocessed_age_ms"] for t in topics if t["oldest_unprocessed_age_ms"]]
    return {
        "family": family.name,
        "partitions": family.partitions,
        "lag": sum(t["lag"] for t in topics),
        "oldest_unprocessed_age_ms": max(ages) if ages else None,
        "dlq_depth": sum(p.high - p.low for p in dlq_parts),
        "topics": topics,
    }


def _topic(
    offsets: ClusterOffsets, topic: str, role: str, parts: list[PartitionOffsets], now_ms: int
) -> dict[str, Any]:
    rows = []
    oldest_ms: int | None = None
    for p in sorted(parts, key=lambda p: p.partition):
        age = None
        if p.lag > 0:
            ts = offsets.timestamp_at(topic, p.partition, p.next_offset)
            if ts is not None:
                age = max(0, now_ms - ts)
                oldest_ms = age if oldest_ms is None else max(oldest_ms, age)
        rows.append(
            {
                "partition": p.partition,
                "committed": p.committed,
                "low": p.low,
                "high": p.high,
                "lag": p.lag,
                "oldest_unprocessed_age_ms": age,
            }
        )
    return {
        "topic": topic,
        "role": role,
        "lag": sum(r["lag"] for r in rows),
        "oldest_unprocessed_age_ms": oldest_ms,
        "partitions": rows,
    }


def with_workers(
    view: dict[str, Any], beats: list[heartbeat.Heartbeat], family: Family, prefix: str
) -> dict[str, Any]:
    """``view`` plus what the live workers report for the family."""
    holding = sorted(
        b.worker_id
        for b in beats
        if family.name in b.families and any(b.families[family.name].partitions.values())
    )
    main = family.topics(prefix).main
    return {
        **view,
        "in_flight": heartbeat.in_flight(beats, family.name),
        "waiting": heartbeat.waiting(beats, family.name),
        "paused": any(b.families[family.name].paused for b in beats if family.name in b.families),
        "workers": holding,
        "owners": {str(p): w for p, w in sorted(heartbeat.owners(beats, main).items())},
    }
