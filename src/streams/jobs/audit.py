"""The audit job: persist every ``audit.*`` event in the SQL store, tamper-evident.

Concurrent ``handle`` calls (the family's ``concurrency``) share transactions through a
group committer (``store.batch``): each handler enqueues its entry and awaits the one
transaction that writes it with the others of its batch. Idempotent by event id (a
unique constraint): a redelivery writes nothing and counts in
``streams_audit_duplicates_total``. Each subject's rows form a hash chain
(``audit_chain``) that ``streams audit verify`` checks.

Outcomes: database failures raise ``Retryable`` or ``Permanent`` (``store.errors``); a
batch failing permanently is written again one entry per transaction, so one bad event
does not fail its neighbours. The store is migrated when the job starts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from pydantic import Field

from streams.errors import Permanent
from streams.jobs import audit_store
from streams.jobs.audit_chain import AuditEntry, entry_from_event
from streams.jobs.base import JobContext, JobSpec
from streams.store.batch import GroupCommitter
from streams.store.database import Database
from streams.store.settings import StoreSettings

log = logging.getLogger(__name__)

AUDIT_EVENT_TYPES = (
    "audit.claim_submitted",
    "audit.claim_approved",
    "audit.claim_rejected",
    "audit.claim_settled",
    "audit.admin_action",
    "audit.payment_event",
)
DEPENDENCY_PREFIX = "auditdb"
_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class AuditSettings(StoreSettings):
    """The store's settings plus the audit batch bounds."""

    audit_batch_max: int = Field(default=500, ge=1, le=10_000, description="rows/transaction")
    audit_linger_ms: float = Field(
        default=2.0, ge=0, le=1000, description="how long a batch waits for more rows"
    )


@dataclass(frozen=True)
class AuditMetrics:
    written: Counter
    duplicates: Counter
    batch_rows: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> AuditMetrics:
        return cls(
            written=Counter(
                "audit_rows_written", "Audit rows stored", namespace="streams", registry=registry
            ),
            duplicates=Counter(
                "audit_duplicates",
                "Audit events already stored (redeliveries), not written again",
                namespace="streams",
                registry=registry,
            ),
            batch_rows=Histogram(
                "audit_batch_rows",
                "Audit events per store transaction",
                namespace="streams",
                registry=registry,
                buckets=_BATCH_BUCKETS,
            ),
        )


_metrics_by_registry: dict[int, AuditMetrics] = {}


def metrics_for(registry: CollectorRegistry) -> AuditMetrics:
    """The audit metrics on ``registry`` (created once per registry)."""
    found = _metrics_by_registry.get(id(registry))
    if found is None:
        found = _metrics_by_registry[id(registry)] = AuditMetrics.create(registry)
    return found


class AuditJob:
    """Handles the ``audit.*`` event types; ``registry`` receives its metrics (default:
    prometheus_client's global registry)."""

    event_types: ClassVar[tuple[str, ...]] = AUDIT_EVENT_TYPES

    def __init__(
        self, settings: AuditSettings, *, registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics_for(registry if registry is not None else REGISTRY)
        self.db: Database | None = None
        self._committer: GroupCommitter[AuditEntry, bool] | None = None
        self._dependency = ""
        self._starting = asyncio.Lock()
        self.duplicates = 0  # this job's redeliveries (the metric is per registry)

    async def start(self) -> None:
        """Open the pool and migrate the store (Retryable/Permanent when it fails)."""
        async with self._starting:  # concurrent first handle() calls start it once
            if self.db is None:
                await self._start()

    async def _start(self) -> None:
        db = Database.from_settings(self.settings)
        try:
            revision = await db.migrate()
        except BaseException:
            await db.dispose()
            raise
        self.db = db
        self._dependency = f"{DEPENDENCY_PREFIX}:{db.dialect}"
        self._committer = GroupCommitter(
            self._flush,
            max_batch=self.settings.audit_batch_max,
            linger_ms=self.settings.audit_linger_ms,
        )
        log.info("audit store %s at revision %s", db.describe(), revision)

    async def stop(self) -> None:
        """Flush what is queued, then close the pool."""
        committer, db = self._committer, self.db
        self._committer, self.db = None, None
        if committer is not None:
            await committer.close()
        if db is not None:
            await db.dispose()

    async def _flush(self, entries: list[AuditEntry]) -> Sequence[bool | BaseException]:
        assert self.db is not None
        self.metrics.batch_rows.observe(len(entries))
        try:
            return await audit_store.append(self.db, entries)
        except Permanent:
            if len(entries) == 1:
                raise
        outcomes: list[bool | BaseException] = []
        for entry in entries:  # find the bad one(s): each alone
            try:
                outcomes += await audit_store.append(self.db, [entry])
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    async def handle(self, event: Any, ctx: JobContext) -> None:
        """Store ``event``; returns once its transaction has committed."""
        if self._committer is None:
            await self.start()
        committer = self._committer
        assert committer is not None
        entry = entry_from_event(event)
        async with ctx.dependency(self._dependency):
            written = await committer.submit(entry)
        if written:
            self.metrics.written.inc()
        else:
            self.duplicates += 1
            self.metrics.duplicates.inc()
            log.info("audit event %s already stored: redelivery ignored", entry.event_id)


JOB = JobSpec(
    family="audit",
    job_type=AuditJob,
    settings_type=AuditSettings,
    dependencies=(DEPENDENCY_PREFIX,),
)
