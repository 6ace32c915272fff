"""Clearing a family's backlog (``POST /v1/families/{family}:clear``, ``streams families
clear``): skip what is pending, recording what was skipped.

Safety with live workers: the clear moves the worker group's committed offsets, which the
broker allows **only while the group has no members** (AlterConsumerGroupOffsets is refused
for an active group). A clear is therefore refused (``GroupActive``; HTTP 409) while any
worker runs, and a worker that joins between the check and the move makes the broker
refuse the move: no live worker can commit over the moved offsets, or be running records
the clear claims skipped. (A control command applied by live workers would avoid stopping
them, but every worker would have to drop exactly the offsets below the clear point from
its in-memory retry schedules and partition logs; the empty-group rule gets the guarantee
from the broker. The cost: the whole group stops, every family of it.)

Order: the ranges (per topic and partition of the main topic and retry tiers: from the
group's next offset to the high watermark) are written to ``streams.skipped`` and
acknowledged first; then the offsets move; a refused move is recorded as ``aborted``. So
every skipped record is named durably before it is skipped (``streams families
replay-skipped`` publishes them again).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

from streams.broker.offsets import ClusterOffsets
from streams.broker.skipped import ClearRecord, SkippedRange
from streams.catalog import Family
from streams.core import topology
from streams.errors import StreamsError, TopologyError
from streams.settings import Settings


class GroupActive(StreamsError):
    """The worker group has members: the broker would refuse to move its offsets."""


def consumed_topics(family: Family, prefix: str) -> list[tuple[str, str]]:
    """(topic, role) of what the worker group consumes of ``family``: main, priority lanes
    and retry tiers."""
    names = family.topics(prefix)
    return [
        (names.main, "main"),
        *((t, "lane") for t in names.lane_topics),
        *((t, "retry") for t in names.retries),
    ]


Produce = Callable[[str, bytes, bytes], int]  # (topic, key, value) -> offset, acks=all


def clear_backlog(
    offsets: ClusterOffsets,
    settings: Settings,
    family: Family,
    *,
    actor: str,
    now_ms: int,
    produce: Produce,
) -> ClearRecord:
    """Record, then skip, ``family``'s pending records (blocking: run it in a thread)."""
    members = offsets.members()
    if members:
        raise GroupActive(
            f"consumer group {offsets.group} has {members} member(s): stop the workers "
            "first (the broker moves a group's offsets only while it is empty)",
        )
    parts = offsets.offsets([t for t, _ in consumed_topics(family, settings.topic_prefix)])
    record = ClearRecord(
        clear_id=uuid.uuid4().hex,
        family=family.name,
        actor=actor,
        at_ms=now_ms,
        ranges=[
            SkippedRange(p.topic, p.partition, p.next_offset, p.high) for p in parts if p.lag > 0
        ],
    )
    topic = topology.skipped_topic(settings.topic_prefix)
    key = family.name.encode()
    if not record.ranges:
        record.outcome = "nothing"
        return record
    produce(topic, key, json.dumps(record.as_dict()).encode())
    try:
        offsets.move({(r.topic, r.partition): r.end for r in record.ranges})
    except TopologyError as exc:
        aborted = {
            "kind": "aborted",
            "clear_id": record.clear_id,
            "family": family.name,
            "reason": str(exc),
        }
        produce(topic, key, json.dumps(aborted).encode())
        raise GroupActive(f"the broker refused to move the offsets: {exc}") from None
    return record
