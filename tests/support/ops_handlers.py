"""Handlers for the operator-endpoint tests (``audit.claim_submitted``), driven by details:
  dep=<name>     the call goes through ``ctx.dependency(<name>)`` and fails (Retryable)
otherwise the event succeeds; every run appends its event id to $STREAMS_TEST_LEDGER (one
line per run, a progress count the tests wait on)."""

from __future__ import annotations

import os
from typing import Any

from streams.errors import Retryable
from streams.jobs.base import JobContext
from streams.jobs.registry import handler

_PATH = os.environ.get("STREAMS_TEST_LEDGER", "runs.txt")


@handler("audit.claim_submitted")
async def run(event: Any, ctx: JobContext) -> None:
    with open(_PATH, "a", encoding="utf-8") as out:
        out.write(f"{ctx.event_id}\n")
    dep = dict(event.details).get("dep")
    if dep:
        async with ctx.dependency(dep):
            raise Retryable(f"{dep} is down (test)")
