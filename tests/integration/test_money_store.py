# ruff: noqa: F811  (the store_url and postgres_server fixtures are imported by name)
"""The money jobs' tables on real SQLite and PostgreSQL: cancellations and provider
webhook ids are idempotent upserts (a redelivery or a racing duplicate writes nothing)."""

from __future__ import annotations

import asyncio

from tests.support.postgres import postgres_server, store_url  # noqa: F401 - fixtures

from streams.api import provider_routes
from streams.jobs.payment_stripe import PaymentSettings
from streams.jobs.subscription import SubscriptionJob, SubscriptionSettings
from streams.store import Database


async def test_cancellations_are_recorded_once(store_url: str) -> None:
    settings = SubscriptionSettings(database_url=store_url, payment_api_key="sk_test_x")
    job = SubscriptionJob(settings, publisher=object(), provider=object(), clock_ms=lambda: 7)
    await job.ensure_started()
    try:
        assert not await job.is_cancelled("s-1")
        await asyncio.gather(*(job.record_cancellation("s-1", "dunning") for _ in range(4)))
        assert await job.is_cancelled("s-1")
        assert not await job.is_cancelled("s-2")
    finally:
        await job.stop()
    assert isinstance(settings, PaymentSettings)


async def test_provider_event_ids_are_seen_once_per_provider(store_url: str) -> None:
    db = Database(store_url)
    await db.migrate()
    try:
        assert not await provider_routes._seen(db, "stripe", "evt_1")
        await asyncio.gather(*(provider_routes._record(db, "stripe", "evt_1") for _ in range(3)))
        assert await provider_routes._seen(db, "stripe", "evt_1")
        assert not await provider_routes._seen(db, "other", "evt_1")
    finally:
        await db.dispose()
