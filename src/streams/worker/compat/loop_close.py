"""mode's worker closes its event loop without a fixed one-second sleep.

After the loop has stopped, mode's ``Worker`` runs one more future on it before closing
it, so that callbacks scheduled by the last shutdowns (transports closing) still run; that
future is ``asyncio.sleep(1.0)``, a second added to every worker exit. A few loop turns
run those callbacks just as well: ``QuickLoopClose`` waits ``LOOP_CLOSE_GRACE_S``.
"""

from __future__ import annotations

import asyncio

import faust

LOOP_CLOSE_GRACE_S = 0.05


class QuickLoopClose(faust.Worker):
    async def _sentinel_task(self) -> None:
        await asyncio.sleep(LOOP_CLOSE_GRACE_S)
