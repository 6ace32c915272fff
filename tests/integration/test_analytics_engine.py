"""Analytics rollups inside a real worker, on SQLite and on a real PostgreSQL server.

The expected counts and ratings are computed from what the test itself produced (and the
outcome it knows each event must have); the rollup reads them back from Kafka. Running the
rollup a second time must leave every row as it was.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from sqlalchemy import select
from tests.support.engine import WorkerProcess, provision, read_topic, wait_for
from tests.support.postgres import postgres_server, store_url  # noqa: F401 - fixtures
from tests.support.receiver import ThreadedReceiver

from streams.broker.watermarks import watermarks
from streams.jobs.analytics_tables import (
    daily_event_counts,
    review_ratings,
    rollup_runs,
    subject_ratings,
)
from streams.publish.publisher import Publisher
from streams.settings import Settings
from streams.store import Database
from streams.testing.processes import write_catalog

pytestmark = pytest.mark.kafka

SECRET = "analytics-test-secret"
SHORT = {"partitions": 3, "retry": {"delays": ["1s"], "max_attempts": 2, "jitter": 0.0,
                                    "retention": "1d"}}  # fmt: skip
FAMILIES = {"review": SHORT, "webhook": {**SHORT, "handler_timeout": "5s"}, "analytics": SHORT}


def utc_day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).date().isoformat()


def all_committed(settings: Settings, families: list[str], partitions: int) -> bool:
    """The worker group has committed every main-topic partition up to its end."""
    consumer = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": settings.app_id})
    try:
        tps = [TopicPartition(f"{settings.topic_prefix}{f}", p) for f in families
               for p in range(partitions)]  # fmt: skip
        committed = consumer.committed(tps, timeout=10)
        for tp in committed:
            high = watermarks(consumer, tp, 30.0)[1]
            if high > 0 and tp.offset < high:
                return False
        return True
    finally:
        consumer.close()


def query(url: str, statement: Any) -> list[tuple[Any, ...]]:
    async def run() -> list[tuple[Any, ...]]:
        db = Database(url)
        try:
            async with db.transaction(write=False) as conn:
                return [tuple(r) for r in await conn.execute(statement)]
        finally:
            await db.dispose()

    return asyncio.run(run())


def rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    return {
        t.name: sorted(query(url, select(t)))
        for t in (daily_event_counts, review_ratings, subject_ratings)
    }


def rollup(publisher: Publisher, url: str, days: set[str], kind: str) -> None:
    ids = {
        day: publisher.publish(
            "analytics.rollup_requested", {"scope": "global", "day": day, "kind": kind}
        ).event_id
        for day in days
    }

    def finished() -> bool:
        done = query(url, select(rollup_runs.c.day, rollup_runs.c.kind, rollup_runs.c.event_id))
        return all((day, kind, event_id) in done for day, event_id in ids.items())

    wait_for(finished, 90, f"the {kind} rollup of {sorted(days)}")


def test_a_days_rollup_matches_the_produced_events_and_is_idempotent(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    store_url: str,  # noqa: F811
) -> None:
    settings = make_settings(catalog_path=write_catalog(tmp_path, FAMILIES))
    catalog = provision(settings)
    env = {
        "STREAMS_DATABASE_URL": store_url,
        "STREAMS_WEBHOOK_SIGNING_SECRET": SECRET,
        "STREAMS_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
    }
    worker = WorkerProcess(settings, list(FAMILIES), tmp_path / "unused.db",
                           tmp_path / "worker.log", extra_env=env,
                           handlers="streams.jobs.registry", builtin_jobs=True)  # fmt: skip
    publisher = Publisher(settings, catalog=catalog)
    expected: Counter[tuple[str, str, str]] = Counter()
    days: set[str] = set()
    latest: dict[str, tuple[str, int]] = {}  # review id -> (subject, rating)
    try:
        worker.start()
        worker.wait_ready(120)
        with ThreadedReceiver(SECRET) as receiver:
            reviews = [(f"rev-{i}", f"product-{i % 6}", 1 + i % 5) for i in range(30)]
            reviews += [
                ("rev-0", "product-0", 5),
                ("rev-7", "product-1", 1),
                ("rev-8", "product-2", 2),
            ]
            for review_id, subject, stars in reviews:  # one at a time: resubmissions come later
                result = publisher.publish(
                    "review.submitted",
                    {"subject_id": subject, "review_id": review_id, "user_id": "user-secret-9",
                     "rating": stars},
                )  # fmt: skip
                days.add(utc_day(result.timestamp_ms))
                latest[review_id] = (subject, stars)
                expected[("review", "review.submitted", "done")] += 1
            for i in range(8):
                path = "/ok" if i < 5 else "/fail/400"
                result = publisher.publish(
                    "webhook.requested",
                    {"subscription_id": f"s{i}", "url": receiver.url + path, "event_name": "x",
                     "body": "{}"},
                )  # fmt: skip
                days.add(utc_day(result.timestamp_ms))
                outcome = "done" if i < 5 else "dlq.permanent"
                expected[("webhook", "webhook.requested", outcome)] += 1
            raw = Producer({"bootstrap.servers": settings.bootstrap})
            for i in range(2):  # not published through streams: undecodable
                raw.produce(f"{settings.topic_prefix}review", key=f"k{i}", value=b"not avro")
                expected[("review", "unknown", "dlq.undecodable")] += 1
            raw.flush(10)
            days.add(utc_day(int(datetime.now(UTC).timestamp() * 1000)))
            wait_for(lambda: all_committed(settings, ["review", "webhook"], 3), 90, "all done")
            assert len(read_topic(settings, f"{settings.topic_prefix}webhook.dlq", 3)) == 3

        rollup(publisher, store_url, days, "daily_counts")
        rollup(publisher, store_url, days, "ratings")
        first = rows(store_url)
        counts = Counter({(f, t, o): n for _, _, f, t, o, n in first[daily_event_counts.name]})
        assert counts == expected

        by_subject: dict[str, list[int]] = {}
        for subject, stars in latest.values():
            by_subject.setdefault(subject, []).append(stars)
        assert first[subject_ratings.name] == sorted(
            ("global", s, len(v), sum(v), pytest.approx(sum(v) / len(v)))
            for s, v in by_subject.items()
        )
        assert len(first[review_ratings.name]) == 30  # three were resubmissions
        assert "user-secret-9" not in repr(first)  # no user ids in analytics rows

        rollup(publisher, store_url, days, "daily_counts")
        rollup(publisher, store_url, days, "ratings")
        assert rows(store_url) == first
    finally:
        publisher.close()
        worker.stop()
