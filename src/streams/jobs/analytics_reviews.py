"""The review family's job: accept ``review.submitted`` events and leave them in the log.

Reviews are facts that analytics reads back from the ``review`` topic when it rolls a day
up (``analytics_rollup``): the topic is the record, so accepting an event writes nothing.
The job exists so that a worker running every family finishes reviews as done instead of
dead-lettering them as "no handler"; invalid reviews (a rating outside 1..5) are already
refused by the event model, before any handler runs.
"""

from __future__ import annotations

from typing import Any, ClassVar

from streams.jobs.base import JobContext, JobSettings, JobSpec


class ReviewJob:
    event_types: ClassVar[tuple[str, ...]] = ("review.submitted",)

    def __init__(self, settings: JobSettings) -> None:
        self.settings = settings

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def handle(self, event: Any, ctx: JobContext) -> None:
        return None


JOB = JobSpec(family="review", job_type=ReviewJob, settings_type=JobSettings)
