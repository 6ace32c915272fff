"""The batch fast path on the real broker: what lands is the ordinary path's records.

``publish_batch`` of plain items takes the fast path (``streams.publish.fast``). With ids,
trace parents and the clock fixed, the ordinary path (``Preparer.batch_one_by_one``) makes
the expected records; every record read back from the main topic and the priority lanes
must equal its expected one: topic, key, value and headers, byte for byte, at the position
the result names. Then the same through ``publish_batch_async``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from streams import Publisher
from streams.broker import admin as topics_admin
from streams.catalog import Catalog, load_catalog
from streams.publish import fast, outgoing, prepare
from streams.publish.records import FastRecords
from streams.settings import Settings

EMAIL = "email.requested"
REPO = Path(__file__).resolve().parents[2]
LANES = ("high", "normal", "low", None)


def item(i: int) -> dict[str, Any]:
    payload = {
        "user_id": f"user-{i % 500}",  # repeated keys: same partition, order kept
        "to": f"user{i}@example.com",
        "template": "welcome" if i % 3 else "receipt",
        "variables": {"n": str(i)} if i % 2 else {},
    }
    return {"event_type": EMAIL, "payload": payload, "priority": LANES[i % len(LANES)]}


@pytest.fixture
def email_catalog() -> Catalog:
    full = load_catalog(REPO / "topics.yaml")
    return full.model_copy(update={"families": {"email": full.families["email"]}})


@pytest.fixture
def publisher(settings: Settings, email_catalog: Catalog) -> Iterator[Publisher]:
    """A publisher over the email family's topics (main, lanes, tiers); deleted after."""
    topics_admin.apply(settings, email_catalog)
    names = [s.name for s in topics_admin.catalog_topics(settings, email_catalog)]
    try:
        with Publisher(settings, catalog=email_catalog, producer_name="tests") as pub:
            yield pub
    finally:
        admin = AdminClient({"bootstrap.servers": settings.bootstrap})
        for future in admin.delete_topics(names, operation_timeout=30).values():
            future.result(timeout=60)


def fix_ids(monkeypatch: pytest.MonkeyPatch, start: int) -> None:
    """Both paths draw the same ids and trace parents, from ``start`` on."""
    ids = (str(uuid.UUID(int=i, version=4)) for i in itertools.count(start))
    tps = (f"00-{i:032x}-{i:016x}-01" for i in itertools.count(start))
    monkeypatch.setattr(fast, "new_event_ids", lambda n: [next(ids) for _ in range(n)])
    monkeypatch.setattr(fast, "new_traceparents", lambda n: [next(tps).encode() for _ in range(n)])
    monkeypatch.setattr(prepare, "new_event_id", lambda: next(ids))
    monkeypatch.setattr(outgoing, "new_traceparent", lambda: next(tps))


def read(settings: Settings, topics: set[str], expected: int) -> dict[tuple[str, int, int], Any]:
    """Every record of ``topics`` by (topic, partition, offset), from the beginning."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap,
            "group.id": f"test-reader-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
        }
    )
    try:
        parts = []
        for topic in topics:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            parts += [TopicPartition(topic, p, 0) for p in meta.partitions]
        consumer.assign(parts)
        out: dict[tuple[str, int, int], Any] = {}
        deadline = time.monotonic() + 60
        while len(out) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=2000, timeout=1.0):
                assert msg.error() is None, msg.error()
                out[(msg.topic(), msg.partition(), msg.offset())] = msg
        return out
    finally:
        consumer.close()


def test_fast_batches_land_as_the_ordinary_path_s_records(
    publisher: Publisher, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("streams.events.now_ms", lambda: 1_767_225_600_000)
    n = 4000
    items = [item(i) for i in range(n)]
    preparer = publisher._preparer  # the test compares its two paths
    fix_ids(monkeypatch, 1)
    expected = preparer.batch_one_by_one(items)
    fix_ids(monkeypatch, 1)
    assert isinstance(preparer.batch(items), FastRecords)  # plain items: the fast path

    fix_ids(monkeypatch, 1)
    results = publisher.publish_batch(items)
    fix_ids(monkeypatch, 1 + n)
    expected += preparer.batch_one_by_one(items)
    fix_ids(monkeypatch, 1 + n)

    async def publish_async() -> list[Any]:
        return await publisher.publish_batch_async(items)

    results += asyncio.run(publish_async())

    assert [r.event_id for r in results] == [rec[4] for rec in expected]
    stored = read(settings, {r.topic for r in results}, len(results))
    assert len(stored) == 2 * n
    for result, (topic, key, value, headers, _) in zip(results, expected, strict=True):
        msg = stored[(result.topic, result.partition, result.offset)]
        assert (msg.topic(), msg.key(), msg.value(), msg.headers()) == (
            topic,
            key,
            value,
            list(headers),
        )
    assert {r.topic for r in results} == {
        f"{settings.topic_prefix}email",
        f"{settings.topic_prefix}email.lane.high",
        f"{settings.topic_prefix}email.lane.low",
    }
