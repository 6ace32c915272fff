"""The analytics job: daily rollups and rating recalculation, read back from Kafka.

Design: **nothing is published or written per event.** Kafka already holds every event
(the families' main topics) and every failure (their retry tiers and DLQs, whose records
name the event they came from), and the worker group's committed offsets say how far each
partition is finished. An ``analytics.rollup_requested`` event for a UTC day makes the job
read that day back with a plain consumer (``analytics_scan``: ``assign`` +
``offsets_for_times``, no group membership) and derive each event's outcome from where its
records are (``analytics_rollup``: done, pending, retrying or ``dlq.<reason>``). So the
hot path of every other family pays nothing, and a rollup can be recomputed at any time
within the topics' retention (7 days by default; the review topic keeps 30).

- ``kind=daily_counts``: events by (day, scope, family, event type, outcome) for every
  family except ``analytics`` itself (a rollup request would count itself as pending);
- ``kind=ratings``: the day's ``review.submitted`` events (not dead-lettered) become one row
  per review (its latest rating) and the averages and counts of the subjects they touch are
  recomputed from all their stored reviews.

``scope`` is ``global`` (everything) or a tenant id (only events whose envelope carries
it). Rows are written in one store transaction by upserts on their natural keys
(``analytics_tables``), and the day's count rows that no longer occur are deleted, so
running a rollup twice leaves the same rows. No personal data: user ids are dropped (not
hashed). The day's counts are final once the day's events are finished; a rollup of a day
still in progress counts the rest as pending and a later run replaces them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from pydantic import Field

from streams.catalog import Catalog, load_catalog
from streams.errors import DecodeError, Permanent, Retryable
from streams.events import AnalyticsRollupRequested, ReviewSubmitted, now_ms
from streams.jobs.analytics_rollup import FamilyLog, Rating, Seen, daily_counts, latest_ratings
from streams.jobs.analytics_rollup import outcomes as outcomes_of
from streams.jobs.analytics_scan import read_day
from streams.jobs.analytics_tables import record_run, write_daily_counts, write_ratings
from streams.jobs.base import JobContext, JobSpec
from streams.serde import SchemaStore
from streams.settings import Settings
from streams.store import Database, StoreSettings

log = logging.getLogger(__name__)

GLOBAL_SCOPE = "global"
SELF_FAMILY = "analytics"
REVIEW_FAMILY = "review"


class AnalyticsSettings(StoreSettings):
    """The store (``STREAMS_DATABASE_URL``, ...) and how long reading a day may take."""

    analytics_read_timeout_s: float = Field(default=120.0, gt=0)


def day_window_ms(day: str) -> tuple[int, int]:
    """[start, end) of a UTC day ``YYYY-MM-DD`` in epoch milliseconds."""
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    end = start + timedelta(days=1)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


class AnalyticsJob:
    """Handles ``analytics.rollup_requested`` (see the module docstring)."""

    event_types: ClassVar[tuple[str, ...]] = ("analytics.rollup_requested",)

    def __init__(
        self,
        settings: AnalyticsSettings,
        *,
        platform: Settings | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        self.settings = settings
        self.platform = platform if platform is not None else Settings()
        self.catalog = catalog if catalog is not None else load_catalog(self.platform.catalog_path)
        self.schemas = SchemaStore.load(self.platform.schemas_dir)
        self._db: Database | None = None

    async def start(self) -> None:
        """Open the store and bring its schema to the newest migration."""
        if self._db is None:
            db = Database.from_settings(self.settings)
            await db.migrate()
            self._db = db

    async def stop(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.dispose()

    @property
    def db(self) -> Database:
        if self._db is None:
            raise RuntimeError("AnalyticsJob.start() was not awaited")
        return self._db

    async def handle(self, event: Any, ctx: JobContext) -> None:
        request: AnalyticsRollupRequested = event
        start_ms, end_ms = day_window_ms(request.day)
        if start_ms > now_ms():
            raise Permanent(f"day: {request.day} has not started yet")
        if self._db is None:
            await self.start()
        families = (
            [REVIEW_FAMILY]
            if request.kind == "ratings"
            else sorted(f for f in self.catalog.families if f != SELF_FAMILY)
        )
        if request.kind == "ratings" and REVIEW_FAMILY not in self.catalog.families:
            raise Permanent("kind: ratings needs the review family in topics.yaml")
        logs = await self._read(families, start_ms, end_ms)
        keep = self._scope_filter(request.scope)
        async with self.db.transaction() as conn:
            if request.kind == "ratings":
                ratings = self._ratings(logs[REVIEW_FAMILY], keep)
                rows = await write_ratings(conn, request.scope, ratings.values())
            else:
                counts: Counter[tuple[str, str, str]] = Counter()
                for family_log in logs.values():
                    counts.update(daily_counts(family_log, keep))
                rows = await write_daily_counts(conn, request.day, request.scope, counts)
            await record_run(
                conn, request.day, request.scope, request.kind, ctx.event_id, rows, now_ms()
            )
        log.info("analytics %s %s %s: %d rows", request.kind, request.day, request.scope, rows)

    async def _read(self, families: list[str], start_ms: int, end_ms: int) -> dict[str, FamilyLog]:
        try:
            return await asyncio.to_thread(
                read_day,
                self.platform,
                self.catalog,
                families,
                start_ms,
                end_ms,
                timeout_s=self.settings.analytics_read_timeout_s,
            )
        except TimeoutError as exc:
            raise Retryable(str(exc)) from exc

    def _tenant(self, record: Seen) -> str | None:
        try:
            _, body = self.schemas.decode(record.value or b"")
        except DecodeError:
            return None
        envelope = body.get("envelope")
        return envelope.get("tenant_id") if isinstance(envelope, dict) else None

    def _scope_filter(self, scope: str) -> Callable[[Seen], bool]:
        if scope == GLOBAL_SCOPE:
            return lambda _: True
        return lambda record: self._tenant(record) == scope

    def _ratings(self, review_log: FamilyLog, keep: Callable[[Seen], bool]) -> dict[str, Rating]:
        fate = outcomes_of(review_log)
        found: list[Rating] = []
        for record in review_log.main:
            if fate[record.position].startswith("dlq.") or not keep(record):
                continue
            try:
                event = self.schemas.decode_event(record.value or b"")
            except (DecodeError, ValueError):
                continue  # undecodable or invalid: dead-lettered by the worker as well
            if isinstance(event, ReviewSubmitted):
                found.append(
                    Rating(
                        event.review_id, event.subject_id, event.rating,
                        event.envelope.occurred_at_ms,
                    )
                )  # fmt: skip
        return latest_ratings(found)


JOB = JobSpec(family="analytics", job_type=AnalyticsJob, settings_type=AnalyticsSettings)
