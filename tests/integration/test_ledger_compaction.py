"""Ledger compaction on the real broker: a changelog written as a trickle (2-hash batches) is
recovered, merged into one entry per partition, its tiny records get tombstones, and after a
restart from that compacted changelog every id is still a duplicate."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from tests.support.engine import TEST_AUDIT, audit_rig, read_topic, wait_for

from streams.core import topology
from streams.core.idempotency import batch_key, event_hash, pack_batch, unpack_batch
from streams.settings import Settings

pytestmark = pytest.mark.kafka

OLD = 300  # ids done before: 150 two-hash batches per partition
NEW = 30


@pytest.fixture
def rig(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[dict[str, Any]]:
    with audit_rig(make_settings, tmp_path, TEST_AUDIT) as made:
        yield made


def submit_all(publisher: Any, event_ids: list[str]) -> None:
    publisher.publish_batch(
        [
            {
                "event_type": "audit.claim_submitted",
                "payload": {"subject_id": f"claim-{i}", "actor_id": "tester", "details": {}},
                "event_id": event_id,
            }
            for i, event_id in enumerate(event_ids)
        ]
    )


def write_trickle(settings: Settings, topic: str, event_ids: list[str]) -> set[bytes]:
    """Every id's hash in 2-hash batches on every partition (whichever one its event meets);
    returns the batch keys."""
    producer = Producer({"bootstrap.servers": settings.bootstrap})
    expires_at_ms = int(time.time() * 1000) + 86_400_000
    keys: set[bytes] = set()
    for p in range(TEST_AUDIT["partitions"]):
        for i in range(0, len(event_ids), 2):
            key = batch_key(p, 1_000 + i, f"trickle{i}")
            value = pack_batch(expires_at_ms, [event_hash(e) for e in event_ids[i : i + 2]])
            producer.produce(topic, value, key, partition=p)
            keys.add(key)
    assert producer.flush(30) == 0
    return keys


def compacted(records: list[Any]) -> dict[bytes, bytes]:
    """The changelog as a recovery reads it: in order, tombstones delete."""
    table: dict[bytes, bytes] = {}
    for msg in sorted(records, key=lambda m: (m.partition(), m.offset())):
        if msg.value() is None:
            table.pop(msg.key(), None)
        else:
            table[msg.key()] = msg.value()
    return table


def test_a_trickle_changelog_is_merged_and_a_restart_still_suppresses_every_id(
    rig: dict[str, Any],
) -> None:
    settings: Settings = rig["settings"]
    changelog = topology.changelog_topic(settings.app_id, topology.table_name("audit", "done"))
    partitions = TEST_AUDIT["partitions"]
    old = [str(uuid.uuid4()) for _ in range(OLD)]
    new = [str(uuid.uuid4()) for _ in range(NEW)]
    tiny = write_trickle(settings, changelog, old)

    worker = rig["start"]()
    worker.wait_ready()
    submit_all(rig["publisher"], old + new)
    wait_for(lambda: set(new) <= rig["ledger"].ids(), 60, "the new events")
    wait_for(
        lambda: worker.metric("streams_duplicates_skipped_total") >= OLD, 60, "the old ids skipped"
    )
    assert rig["ledger"].ids() == set(new)  # no old id ran its handler again
    assert worker.metric("streams_idempotency_keys", family="audit") == partitions * OLD + NEW

    def tombstoned() -> set[bytes]:
        records = read_topic(settings, changelog, partitions)
        return {m.key() for m in records if m.value() is None}

    wait_for(lambda: tiny <= tombstoned(), 60, "tombstones for every tiny batch")
    table = compacted(read_topic(settings, changelog, partitions))
    assert not tiny & set(table)
    assert len(table) <= 2 * partitions  # a merged entry (and the live batches) per partition
    for p in range(partitions):
        held = {h for k, v in table.items() if k.startswith(b"%d|" % p) for h in unpack_batch(v)[1]}
        assert {event_hash(e) for e in old} <= held

    worker.stop()
    again = rig["start"]("w1")
    again.wait_ready()
    submit_all(rig["publisher"], old + new)
    wait_for(
        lambda: again.metric("streams_duplicates_skipped_total") >= OLD + NEW,
        60,
        "every id skipped after the restart",
    )
    assert again.metric("streams_duplicates_skipped_total") == OLD + NEW
    assert rig["ledger"].ids() == set(new)
    assert rig["ledger"].duplicates() == 0
