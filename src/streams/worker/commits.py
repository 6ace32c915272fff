"""The committed offsets of our topics: the latest finished prefix of each partition.

faust never sees our records (``compat/batch_fetch.py``), so its own commit loop commits
nothing for them. ``PartitionLog`` reports each advance here; ``commit`` sends the offsets
that moved since the last commit (of partitions still assigned) in one request, from a
periodic loop and on every revoke and at shutdown. A failed commit keeps the offsets
pending: the next one sends them again (the next owner re-reads from the last commit).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping

from streams.worker.tp import TP

log = logging.getLogger(__name__)

CommitFn = Callable[[Mapping[TP, int]], Awaitable[bool]]


class Committer:
    def __init__(self, commit: CommitFn, assignment: Callable[[], Collection[TP]]) -> None:
        self._commit = commit
        self._assignment = assignment
        self._pending: dict[TP, int] = {}
        self.committed: dict[TP, int] = {}
        self._lock = asyncio.Lock()

    def advance(self, tp: TP, next_offset: int) -> None:
        """``tp`` may commit up to ``next_offset`` (the offset of its next unfinished record)."""
        if next_offset > self._pending.get(tp, -1):
            self._pending[tp] = next_offset

    def forget(self, tps: Collection[TP]) -> None:
        """Partitions given up: their uncommitted advances are dropped (after the release's
        commit), and what they committed is forgotten."""
        for tp in tps:
            self._pending.pop(tp, None)
            self.committed.pop(tp, None)

    async def commit(self) -> bool:
        """Commit every pending advance of an assigned partition; True when one was sent."""
        async with self._lock:
            if not self._pending:
                return False
            assigned = set(self._assignment())
            offsets = {
                tp: off
                for tp, off in self._pending.items()
                if tp in assigned and off > self.committed.get(tp, -1)
            }
            self._pending = {tp: off for tp, off in self._pending.items() if tp in assigned}
            if not offsets:
                self._pending.clear()
                return False
            try:
                done = await self._commit(offsets)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("commit of %d partition(s) failed: %r", len(offsets), exc)
                return False
            if not done:
                return False
            for tp, off in offsets.items():
                self.committed[tp] = off
                if self._pending.get(tp) == off:
                    del self._pending[tp]
            return True

    async def commit_through(self, offsets: Mapping[TP, int]) -> bool:
        """Commit ``offsets`` (each partition's next offset to read) now, with any other
        pending advance; True once the broker acknowledged every one of them (already
        committed that far counts). An at-most-once family commits before it runs."""
        for tp, next_offset in offsets.items():
            self.advance(tp, next_offset)
        await self.commit()
        return all(self.committed.get(tp, -1) >= off for tp, off in offsets.items())

    async def run(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self.commit()
