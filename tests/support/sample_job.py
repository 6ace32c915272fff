"""A job as a third-party package would ship it (tests of job discovery)."""

from __future__ import annotations

from typing import Any, ClassVar

from streams.jobs.base import JobContext, JobSettings, JobSpec


class SampleSettings(JobSettings):
    sample_greeting: str = "hello"


class SampleJob:
    event_types: ClassVar[tuple[str, ...]] = ("push.requested",)

    def __init__(self, settings: SampleSettings) -> None:
        self.settings = settings
        self.handled: list[str] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def handle(self, event: Any, ctx: JobContext) -> None:
        self.handled.append(f"{self.settings.sample_greeting} {ctx.event_id}")


JOB = JobSpec(
    family="push", job_type=SampleJob, settings_type=SampleSettings, dependencies=("pushprov",)
)
NOT_A_SPEC = object()
