"""The consent job: ``consent.changed`` events kept in the consent family's state table.

The ``consent`` family has push's partition count and key (``user_id``), so partition p
of consent, its state table and partition p of push are on one worker (faust's assignor
co-partitions the co-subscribed topics of equal partition counts): the push job reads a
user's consent locally (``jobs/push.py``). A revocation is durable in the table's
changelog before its event is acked, so the next push to that user — on this worker or,
after a restart or rebalance, on the next owner — sees it. Workers that run ``push`` must
run ``consent`` too (the default runs every family). An older change (by
``occurred_at_ms``) never overwrites a newer one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from streams.errors import Retryable
from streams.jobs.base import JobContext, JobSettings, JobSpec

log = logging.getLogger(__name__)


def consent_key(user_id: str) -> str:
    return f"consent/{user_id}"


@dataclass(frozen=True)
class ConsentState:
    promotional: bool = False
    opted_out: bool = False
    at_ms: int = -1

    def encode(self) -> bytes:
        return json.dumps(
            {"promotional": self.promotional, "opted_out": self.opted_out, "at_ms": self.at_ms}
        ).encode()

    @classmethod
    def decode(cls, value: bytes | None) -> ConsentState:
        """The stored state; no record (or a corrupt one) = no consent, not opted out."""
        if not value:
            return cls()
        try:
            data = json.loads(value)
            return cls(bool(data["promotional"]), bool(data["opted_out"]), int(data["at_ms"]))
        except (ValueError, KeyError, TypeError):
            return cls()


class ConsentJob:
    event_types: ClassVar[tuple[str, ...]] = ("consent.changed",)

    def __init__(self, settings: JobSettings) -> None:
        self.settings = settings

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def handle(self, event: Any, ctx: JobContext) -> None:
        table = ctx.tables.get(ctx.family)
        if table is None:
            raise Retryable(f"family {ctx.family!r} has no state table (state_table: true)")
        key = consent_key(event.user_id)
        at_ms = event.envelope.occurred_at_ms
        if ConsentState.decode(table.get(key)).at_ms > at_ms:
            log.info("consent %s: older than the stored change, ignored", event.event_id)
            return
        state = ConsentState(event.promotional, event.opted_out, at_ms)
        await table.put(ctx.partition, key, state.encode())


JOB = JobSpec(family="consent", job_type=ConsentJob, settings_type=JobSettings)
