"""The cleanup job: run a retention policy for each ``cleanup.due`` event.

The run id is the event id (a schedule's tick id, ``schedule:<name>:<tick_ms>``), so a
redelivery resumes the same run (``retention.engine``). Notices of the inactive-accounts
policy are ``email.requested`` events with the deterministic id
``retention-notice:<table>:<key>`` (a re-publish after a crash is deduplicated by the email
worker). Each run ends with one ``audit.admin_action`` event (id ``retention-run:<run id>``)
listing per rule what was deleted/archived/anonymised/noticed and why.

Outcomes: a bad policy or schema (ConfigError) is Permanent (DLQ 'permanent', the message
names the rule and column); database and archive failures are Retryable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from streams.errors import ConfigError, Permanent
from streams.jobs.base import JobContext, JobSpec
from streams.retention.engine import RetentionEngine, RunReport
from streams.retention.rules import RetentionConfig, Rule, load_retention
from streams.store.database import Database
from streams.store.settings import StoreSettings

log = logging.getLogger(__name__)
DEPENDENCY_PREFIX = "retentiondb"


class CleanupSettings(StoreSettings):
    retention_path: Path = Field(default_factory=lambda: Path("retention.yaml"))
    retention_archive_dir: Path | None = None

    def archive_dir(self) -> Path:
        return self.retention_archive_dir or self.home / "archive"


def audit_payload(report: RunReport) -> dict[str, Any]:
    details: dict[str, str] = {
        "run_id": report.run_id,
        "dry_run": str(report.dry_run).lower(),
        "tick": datetime.fromtimestamp(report.tick_ms / 1000, UTC).isoformat(),
    }
    for r in report.rules:
        details[f"{r.rule}.why"] = r.why
        if report.dry_run:
            details[f"{r.rule}.would_{r.action}"] = str(r.matched)
        for k, n in r.counts.items():
            if n:
                details[f"{r.rule}.{k}"] = str(n)
    return {
        "subject_id": report.policy,
        "actor_id": "streams.retention",
        "action": "retention.dry_run" if report.dry_run else "retention.run",
        "details": details,
    }


class CleanupJob:
    event_types: ClassVar[tuple[str, ...]] = ("cleanup.due",)

    def __init__(self, settings: CleanupSettings) -> None:
        self.settings = settings
        self.db: Database | None = None
        self.config: RetentionConfig | None = None
        self.engine: RetentionEngine | None = None
        self._publisher: Any = None
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        async with self._starting:
            if self.db is not None:
                return
            path = self.settings.retention_path
            if not path.is_absolute() and not path.exists():
                from streams.settings import _default_path

                path = _default_path(str(path))
            self.config = load_retention(path)
            db = Database.from_settings(self.settings)
            try:
                await db.migrate()
            except BaseException:
                await db.dispose()
                raise
            self.db = db
            self.engine = RetentionEngine(
                db, self.config, archive_dir=self.settings.archive_dir(), notify=self._notify
            )

    def _pub(self) -> Any:
        if self._publisher is None:
            from streams.publish.publisher import Publisher

            self._publisher = Publisher(producer_name="streams.retention")
        return self._publisher

    async def _notify(self, rule: Rule, rows: Sequence[dict[str, Any]], tick_ms: int) -> None:
        assert rule.notice is not None and rule.table is not None
        items = [
            {
                "event_type": "email.requested",
                "event_id": f"retention-notice:{rule.table}:{row[rule.key]}",
                "payload": {
                    "user_id": str(row[rule.key]),
                    "to": row[rule.notice.email_column],
                    "locale": rule.notice.locale,
                    "template": rule.notice.template,
                    "variables": {"subject": rule.notice.subject, "reason": rule.why},
                },
            }
            for row in rows
        ]
        await self._pub().publish_batch_async(items)

    async def stop(self) -> None:
        if self._publisher is not None:
            await asyncio.to_thread(self._publisher.close)
            self._publisher = None
        if self.db is not None:
            await self.db.dispose()
            self.db = None

    async def handle(self, event: Any, ctx: JobContext) -> None:
        if self.engine is None:
            try:
                await self.start()
            except ConfigError as exc:
                raise Permanent(str(exc)) from None
        assert self.engine is not None and self.db is not None
        try:
            async with ctx.dependency(f"{DEPENDENCY_PREFIX}:{self.db.dialect}"):
                report = await self.engine.run(
                    event.policy,
                    run_id=ctx.event_id,
                    tick_ms=event.scheduled_for_ms,
                    dry_run=event.dry_run,
                    batch_size=event.batch_size,
                )
        except ConfigError as exc:
            raise Permanent(str(exc)) from None
        log.info("retention %s %s: %s", event.policy, ctx.event_id, report.totals())
        await self._pub().publish_async(
            "audit.admin_action", audit_payload(report), event_id=f"retention-run:{ctx.event_id}"
        )


JOB = JobSpec(
    family="cleanup",
    job_type=CleanupJob,
    settings_type=CleanupSettings,
    dependencies=(DEPENDENCY_PREFIX,),
)
