"""Priority lanes against the real broker: provisioning, the SDK's lane topics, and a DLQ
redrive that sends each event back to its own lane (resumable without sending twice).

No worker: the DLQ records are what the worker writes, built with the real planner from
the published records (``plan_failure`` with the lane topic as origin).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer
from tests.support.engine import provision, write_catalog

from streams.broker.clients import base_conf
from streams.catalog import Catalog
from streams.core import headers as h
from streams.core.planner import DeadLetter, plan_failure
from streams.dlq.filters import DlqFilter
from streams.dlq.kafka_io import CheckpointStore
from streams.dlq.reader import DlqReader
from streams.dlq.records import DlqRecord
from streams.dlq.redrive import Options, Redrive
from streams.dlq.replay import REPLAY_ID
from streams.dlq.tenants import TenantLookup
from streams.errors import InvalidPayload, Permanent
from streams.publish.publisher import Publisher
from streams.settings import Settings

pytestmark = pytest.mark.kafka

PRIORITIES = ["high", None, "low", "normal"]  # None and the default go to the main topic


def email(i: int) -> dict[str, str]:
    return {
        "user_id": f"user-{i % 5}",
        "to": f"u{i}@example.com",
        "locale": "en",
        "template": "welcome",
    }


def scan(settings: Settings, topic: str) -> list[DlqRecord]:
    with DlqReader(settings, topic) as reader:
        return list(reader.scan())


def dead_letter(settings: Settings, catalog: Catalog, records: list[DlqRecord]) -> None:
    """Write each record to the DLQ as the worker would after a permanent failure."""
    fam = catalog.family("email")
    dlq = fam.topics(settings.topic_prefix).dlq
    producer = Producer(base_conf(settings, **{"acks": "all"}))
    for rec in records:
        decision = plan_failure(
            family="email",
            prefix=settings.topic_prefix,
            retry=fam.retry,
            error=Permanent("mailbox unavailable"),
            headers=rec.headers,
            origin=h.Origin(rec.topic, rec.partition, rec.offset, rec.timestamp_ms),
            now_ms=int(time.time() * 1000),
            default_max_defer_ms=86_400_000,
        )
        assert isinstance(decision, DeadLetter)
        producer.produce(
            dlq, rec.value, rec.key, partition=rec.partition, headers=h.encode(decision.headers)
        )
    assert producer.flush(30) == 0


@pytest.fixture
def lanes_rig(make_settings: Callable[..., Settings], tmp_path: Path) -> tuple[Settings, Catalog]:
    path = write_catalog(tmp_path, {"email": {"partitions": 2, "rate_limits": []}})
    settings = make_settings(catalog_path=path)
    return settings, provision(settings)


def test_lanes_are_provisioned_published_to_and_redriven_to(
    lanes_rig: tuple[Settings, Catalog],
) -> None:
    settings, catalog = lanes_rig
    topics = catalog.family("email").topics(settings.topic_prefix)
    high, low = topics.topic_for_lane("high"), topics.topic_for_lane("low")
    with Publisher(settings, catalog=catalog) as publisher:
        results = [
            publisher.publish("email.requested", email(i), priority=PRIORITIES[i % 4])
            for i in range(12)
        ]
        with pytest.raises(InvalidPayload, match="its lanes are high, normal, low"):
            publisher.publish("email.requested", email(0), priority="urgent")
    assert [r.topic for r in results[:4]] == [high, topics.main, low, topics.main]
    published = {t: scan(settings, t) for t in (high, low, topics.main)}
    assert [len(published[t]) for t in (high, low, topics.main)] == [3, 3, 6]
    assert {r.headers.get(h.LANE) for r in published[high]} == {"high"}
    assert {r.headers.get(h.LANE) for r in published[topics.main]} == {None}
    # a record the SDK did not mark (another producer) still gets its lane from the topic
    for rec in published[low]:
        del rec.headers[h.LANE]
    dead_letter(settings, catalog, [r for recs in published.values() for r in recs])
    dlq = scan(settings, topics.dlq)
    assert (
        sorted(r.headers.get(h.LANE) or "-" for r in dlq) == ["-"] * 6 + ["high"] * 3 + ["low"] * 3
    )

    engine = Redrive(settings, catalog, "email", tenants=TenantLookup(None))
    report = engine.start(DlqFilter(), Options(), actor="test")
    assert (report.state, report.sent) == ("done", 12)

    def replays(topic: str) -> list[DlqRecord]:
        return [r for r in scan(settings, topic) if r.headers.get(REPLAY_ID)]

    for topic, lane, n in ((high, "high", 3), (low, "low", 3), (topics.main, None, 6)):
        sent = replays(topic)
        assert len(sent) == n, topic
        assert {r.headers.get(h.LANE) for r in sent} == {lane}
        before = {r.headers[h.EVENT_ID]: (r.key, r.value, r.partition) for r in published[topic]}
        assert {r.headers[h.EVENT_ID]: (r.key, r.value, r.partition) for r in sent} == before

    # a resume from the first checkpoint (a kill before the next one) finds the replays on
    # the lane topics as well as on the main topic, and sends none of them again
    store = CheckpointStore(settings)
    cp = store.load(report.redrive_id)
    assert cp is not None and set(cp.lane_marks) == {high, low}
    cp.next_offsets = dict.fromkeys(cp.end_offsets, 0)
    cp.main_marks = {p: 0 for p in cp.main_marks}
    cp.lane_marks = {t: {p: 0 for p in marks} for t, marks in cp.lane_marks.items()}
    cp.state, cp.updated_at_ms = "stopped", 0
    store.save(cp)
    again = engine.resume(report.redrive_id)
    assert again.skipped["sent before the resume"] == 12 and again.sent == 0
    assert [len(replays(t)) for t in (high, low, topics.main)] == [3, 3, 6]
