"""Commit the acked prefix of partitions being revoked before faust forgets it.

faust's ``Consumer.on_partitions_revoked`` drops its ack bookkeeping of the revoked
partitions (acked offsets, committed offset) *before* it runs the app's revoke handlers.
Our release (``worker/rebalance.py``) acks what finishes during the drain and commits, but
the acks made since the last periodic commit (every ``broker_commit_interval``) were
already forgotten: they were never committed, and the next owner -- often this same worker,
given the partition back -- ran those records again. Done events were skipped by the
idempotency ledger; a dead-lettered or retried one was routed again (the rebalance-storm
test of the fault matrix saw rejected events dead-lettered twice). So the consumer commits
first, then lets faust go on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

log = logging.getLogger(__name__)


class _RevokingConsumer(Protocol):
    on_partitions_revoked: Callable[[Any], Awaitable[None]]


def commit_before_revoke(consumer: object, commit: Callable[[], Awaitable[None]]) -> None:
    """Make ``consumer`` (faust's) run ``commit`` before its own revoke handling."""
    target = cast(_RevokingConsumer, consumer)
    original = target.on_partitions_revoked

    async def on_partitions_revoked(revoked: Any) -> None:
        try:
            await commit()
        except Exception as exc:  # the release commits what it can; the rest is re-read
            log.warning("commit before revoke failed: %r", exc)
        await original(revoked)

    target.on_partitions_revoked = on_partitions_revoked
