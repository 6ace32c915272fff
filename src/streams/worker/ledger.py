"""The idempotency ledger of one family: done event ids in a changelog-backed faust table.

See ``streams.core.idempotency`` for the layout. ``record`` marks an id done in memory at
once (a duplicate arriving meanwhile is skipped) and calls back when the batch holding it
is acknowledged by the broker; only then is the source event acked. After an assignment
the index is rebuilt from the table (which faust recovered from the changelog) on first
use; keys of partitions this worker no longer owns are dropped from the store.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

from streams.core.idempotency import (
    DoneIndex,
    batch_key,
    pack_batch,
    partition_of_key,
    unpack_batch,
)
from streams.worker.changelog import ChangelogWriter

log = logging.getLogger(__name__)


class Ledger:
    def __init__(
        self,
        *,
        writer: ChangelogWriter,
        store: Any,
        ttl_ms: int,
        clock_ms: Callable[[], int],
        on_size: Callable[[int], None] = lambda n: None,
    ) -> None:
        self._writer = writer
        self._store = store
        self._ttl_ms = ttl_ms
        self._clock_ms = clock_ms
        self._on_size = on_size
        self._index = DoneIndex()
        self._assigned: set[int] = set()
        self._stale = True
        # partition -> hashes finished since the last batch was cut
        self._open: dict[int, list[int]] = {}
        self._nonce = secrets.token_hex(4)
        writer.before_flush(self._cut_batches)

    # --- assignment ---------------------------------------------------------------------

    def assign(self, partitions: set[int]) -> None:
        self._assigned = set(partitions)
        self._stale = True

    def revoke(self, partitions: set[int]) -> None:
        for p in partitions:
            self._index.drop_partition(p)
            self._open.pop(p, None)
        self._writer.discard(partitions)
        self._assigned -= partitions

    def _rebuild(self) -> None:
        self._stale = False
        self._index = DoneIndex()
        foreign: list[bytes] = []
        for key, value in list(self._store.items()):
            try:
                partition = partition_of_key(key)
                if partition not in self._assigned:
                    foreign.append(key)
                    continue
                self._index.load_batch(key, value)
            except (ValueError, TypeError):
                log.warning("ledger: ignoring malformed table entry %r", key[:40])
        for key in foreign:
            self._store.pop(key, None)
        self._on_size(len(self._index))

    # --- the hot path -------------------------------------------------------------------

    def seen(self, partition: int, digest: int) -> bool:
        if self._stale:
            self._rebuild()
        return self._index.contains(partition, digest)

    def record(self, partition: int, digest: int, callback: Callable[[], None]) -> None:
        """Mark done now; ``callback`` runs when the marker is durable."""
        if self._stale:
            self._rebuild()
        self._index.add(partition, digest)
        hashes = self._open.get(partition)
        if hashes is None:
            self._open[partition] = hashes = []
        hashes.append(digest)
        self._writer.on_next_flush(partition, callback)

    def _cut_batches(self) -> None:
        """Turn the open hash lists into one batch entry per partition (before a flush)."""
        if not self._open:
            return
        now_ms = self._clock_ms()
        expires_at_ms = now_ms + self._ttl_ms
        for partition, hashes in self._open.items():
            key = batch_key(partition, now_ms, f"{self._nonce}{secrets.token_hex(2)}")
            self._writer.put(partition, key, pack_batch(expires_at_ms, hashes))
            self._index.note_batch(partition, key, expires_at_ms)
        self._open = {}
        self._on_size(len(self._index))

    # --- expiry -------------------------------------------------------------------------

    def expire(self) -> int:
        """Delete batches past their TTL (tombstones to the changelog); returns how many."""
        expired = list(self._index.expired(self._clock_ms()))
        for partition, key in expired:
            value = self._store.get(key)
            hashes = unpack_batch(value)[1] if value else []
            self._index.forget_batch(partition, key, hashes)
            self._writer.put(partition, key, None)
        if expired:
            self._on_size(len(self._index))
        return len(expired)

    def __len__(self) -> int:
        return len(self._index)
