"""Long waits on a retry tier: hold a record in memory for at most ``max_hold_ms``, then
*hop* it -- produce the unchanged record (key, value, headers, same partition) to the end
of the same tier and ack the original -- until its ``streams-due-at-ms`` is reached.

This is what makes a delayed event (``Publisher.publish(..., delay_s=...)``, up to 30 days)
durable without pinning memory or a partition: at any moment the record is in Kafka (the
original stays unacked until its copy is acknowledged), a restart or rebalance re-reads it
and holds it again, and the due time in its header never changes. A crash between the copy
and the ack leaves two copies with one event id: the second to run is skipped by the
family's idempotency ledger. Records due within ``max_hold_ms`` (ordinary retries: it is
twice the tier's delay) are never hopped, and neither is one the scheduler expedited (a
cancelled event: admitted at once so it is acked as cancelled).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from streams.core import headers as h
from streams.core.planner import is_due
from streams.worker.ordering import Entry

log = logging.getLogger(__name__)


class HopOrAdmit:
    """The dispatch of a tier's ``DueScheduler``: admit a due record, hop one still early."""

    def __init__(
        self,
        admit: Callable[[Entry], Awaitable[None]],
        *,
        producer: Any,
        clock_ms: Callable[[], int],
        skew_margin_ms: int,
        on_hop: Callable[[], None] = lambda: None,
        retry_backoff_s: float = 0.5,
    ) -> None:
        self._admit = admit
        self._producer = producer
        self._clock_ms = clock_ms
        self._margin_ms = skew_margin_ms
        self._on_hop = on_hop
        self._backoff_s = retry_backoff_s
        self.hops = 0

    async def __call__(self, entry: Entry) -> None:
        headers = h.decode(entry.headers)
        if entry.expedited or is_due(headers, self._clock_ms(), self._margin_ms) <= 0:
            await self._admit(entry)
            return
        while not entry.log.closed:
            try:
                fut = await self._producer.send(
                    entry.topic,
                    entry.key,
                    entry.value,
                    entry.partition,
                    None,
                    list(entry.headers or []),
                )
                await fut
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("hop of a delayed record on %s failed (%r); retrying", entry.topic, exc)
                await asyncio.sleep(self._backoff_s)
        else:
            return  # revoked: left unacked, the next owner holds it again
        self.hops += 1
        self._on_hop()
        entry.finish()
