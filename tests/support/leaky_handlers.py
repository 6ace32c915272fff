"""A handler whose errors quote secrets: ``details["message"]`` is raised as a Permanent
failure, so the record goes to the DLQ at once with that text (scrubbed) in its headers."""

from __future__ import annotations

from typing import Any

from streams.errors import Permanent
from streams.jobs.base import JobContext
from streams.jobs.registry import handler


@handler("audit.claim_submitted")
async def leak(event: Any, ctx: JobContext) -> None:
    raise Permanent(dict(event.details)["message"])
