"""The idempotency ledger of one family: done event ids in a changelog-backed faust table.

See ``streams.core.idempotency`` for the layout. ``record`` (``record_many`` for a batch)
marks ids done in memory at once (a duplicate arriving meanwhile is skipped) and calls back
when the batch holding them is acknowledged by the broker; only then is the source event
acked. After an assignment the index is rebuilt from the table (which faust recovered from
the changelog) on first use; keys of partitions this worker no longer owns are dropped from
the store.

Small batches are merged as they age (``core.idempotency.Compaction``): right before a
flush, a partition with many small batches, or with old ones, gets one merged entry in
their place, written to the changelog like any batch; the small entries leave the store at
once and get their tombstones once the merged entry is acknowledged (a crash in between
leaves both in the changelog: the same hashes twice, nothing lost). Tombstones go out at most
``TOMBSTONES_PER_FLUSH`` per flush, so a recovered trickle of half a million tiny batches
does not hold up the done-markers of live events. Small batches recovered from the
changelog are merged right after the rebuild.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

from streams.core.idempotency import (
    Compaction,
    DoneIndex,
    Retiring,
    batch_header,
    batch_key,
    created_of_key,
    merge_hashes,
    pack_batch,
    partition_of_key,
    plan_merge,
    unpack_batch,
)
from streams.worker.changelog import ChangelogWriter
from streams.worker.compat.memory_store import forget_keys, shrink

log = logging.getLogger(__name__)

TOMBSTONES_PER_FLUSH = 2_000
_SHRINK_AFTER = 10_000  # deleted store keys before the store's dicts are rebuilt


class Ledger:
    def __init__(
        self,
        *,
        writer: ChangelogWriter,
        store: Any,
        ttl_ms: int,
        clock_ms: Callable[[], int],
        on_size: Callable[[int], None] = lambda n: None,
        compaction: Compaction | None = None,
    ) -> None:
        self._writer = writer
        self._store = store
        self._ttl_ms = ttl_ms
        self._clock_ms = clock_ms
        self._on_size = on_size
        self._compaction = compaction or Compaction.for_ttl(ttl_ms)
        self._index = DoneIndex()
        self._assigned: set[int] = set()
        self._stale = True
        # partition -> hashes finished since the last batch was cut
        self._open: dict[int, list[int]] = {}
        # partition -> small batch key -> created_ms (candidates for the next merge)
        self._small: dict[int, dict[bytes, int]] = {}
        self._merged_at: dict[int, int] = {}  # partition -> when its small batches last merged
        self._retiring = Retiring()
        self._dripping: int | None = None  # partition holding the next-chunk callback
        self._deleted = 0  # store keys deleted since its dicts were last rebuilt
        self._dripped = 0  # tombstones written by the current chain
        # keys are unique by construction: this ledger's random nonce and a counter (two
        # random bytes per key collided within one millisecond: a batch overwrote another)
        self._nonce = secrets.token_hex(4)
        self._keys = itertools.count()
        writer.before_flush(self._cut_batches)

    # --- assignment ---------------------------------------------------------------------

    def assign(self, partitions: set[int]) -> None:
        self._assigned = set(partitions)
        self._stale = True

    def revoke(self, partitions: set[int]) -> None:
        for p in partitions:
            self._index.drop_partition(p)
            self._open.pop(p, None)
            self._small.pop(p, None)
            self._merged_at.pop(p, None)
        self._writer.discard(partitions)
        self._retiring.drop(partitions)
        if self._dripping in partitions:  # its callback was discarded with the partition
            self._dripping = None
            self._drip()
        self._assigned -= partitions

    def _rebuild(self) -> None:
        self._stale = False
        self._index = DoneIndex()
        self._small = {}
        foreign: list[bytes] = []
        small: dict[int, list[tuple[bytes, int, int]]] = {}
        for key in list(self._store.keys()):
            try:
                partition = partition_of_key(key)
                if partition not in self._assigned:
                    foreign.append(key)
                    continue
                value = self._store[key]
                expires_at_ms, count = batch_header(value)
                if count < self._compaction.small_below:
                    small.setdefault(partition, []).append((key, expires_at_ms, count))
                else:
                    self._index.load(partition, key, expires_at_ms, unpack_batch(value)[1])
            except (ValueError, TypeError):
                log.warning("ledger: ignoring malformed table entry %r", key[:40])
        self._forget(foreign)
        for partition, batches in small.items():
            self._merge(partition, batches, loaded=False)
        for partition, hashes in self._open.items():  # finished, batch not cut yet
            for digest in hashes:
                self._index.add(partition, digest)
        self._shrink_if_many_deleted()
        self._on_size(len(self._index))

    # --- the hot path -------------------------------------------------------------------

    def seen(self, partition: int, digest: int) -> bool:
        if self._stale:
            self._rebuild()
        return self._index.contains(partition, digest)

    def seen_many(self, partition: int, digests: Sequence[int]) -> list[bool]:
        """``seen`` for each of ``digests`` of one partition, in order."""
        if self._stale:
            self._rebuild()
        contains = self._index.contains
        return [contains(partition, d) for d in digests]

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

    def record_many(
        self, partition: int, digests: Iterable[int], callback: Callable[[], None]
    ) -> None:
        """Mark ``digests`` of one partition done now; ``callback`` runs once, when all of
        their markers are durable (they go into the same batch)."""
        if self._stale:
            self._rebuild()
        hashes = self._open.get(partition)
        if hashes is None:
            self._open[partition] = hashes = []
        before = len(hashes)
        for digest in digests:
            self._index.add(partition, digest)
            hashes.append(digest)
        self._writer.on_next_flush(partition, callback, count=max(1, len(hashes) - before))

    def _cut_batches(self) -> None:
        """Turn the open hash lists into one batch entry per partition, and merge the
        small batches that are due (before a flush)."""
        now_ms = self._clock_ms()
        if self._open:
            expires_at_ms = now_ms + self._ttl_ms
            small_below = self._compaction.small_below
            for partition, hashes in self._open.items():
                key = self._new_key(partition, now_ms)
                self._writer.put(partition, key, pack_batch(expires_at_ms, hashes))
                self._index.note_batch(partition, key, expires_at_ms)
                if len(hashes) < small_below:
                    self._small.setdefault(partition, {})[key] = now_ms
            self._open = {}
            self._on_size(len(self._index))
        policy = self._compaction
        for partition, small in list(self._small.items()):
            oldest_ms = min(small.values(), default=now_ms)
            last_ms = self._merged_at.get(partition, -policy.min_age_ms)
            if policy.due(len(small), oldest_ms, last_ms, now_ms):
                self._merge_small(partition)
        self._shrink_if_many_deleted()

    def _new_key(self, partition: int, now_ms: int) -> bytes:
        return batch_key(partition, now_ms, f"{self._nonce}{next(self._keys):x}")

    # --- merging small batches ----------------------------------------------------------

    def _merge_small(self, partition: int) -> None:
        self._merged_at[partition] = self._clock_ms()
        batches: list[tuple[bytes, int, int]] = []
        for key in self._small.pop(partition, {}):
            value = self._store.get(key)
            expires_at_ms = self._index.expires_at(partition, key)
            if value is None or expires_at_ms is None:
                continue  # expired meanwhile
            batches.append((key, expires_at_ms, batch_header(value)[1]))
        self._merge(partition, batches, loaded=True)

    def _merge(
        self, partition: int, batches: list[tuple[bytes, int, int]], *, loaded: bool
    ) -> None:
        """Replace ``batches`` (key, expires_at_ms, hash count) by merged ones. ``loaded``:
        their hashes are in the index already (else they are loaded here)."""
        now_ms = self._clock_ms()
        small = self._small.setdefault(partition, {})
        for group in plan_merge(batches, self._compaction):
            if len(group.keys) == 1:
                (key,) = group.keys
                if not loaded:
                    value = self._store[key]
                    self._index.load(partition, key, group.expires_at_ms, unpack_batch(value)[1])
                small[key] = _created(key, now_ms)
                continue
            hashes = merge_hashes(unpack_batch(self._store[k])[1] for k in group.keys)
            key = self._new_key(partition, now_ms)
            retire = partial(self._retire, partition, group.keys)
            self._writer.put(partition, key, pack_batch(group.expires_at_ms, hashes), retire)
            self._index.replace_batches(partition, group.keys, key, group.expires_at_ms)
            if not loaded:
                self._index.load(partition, key, group.expires_at_ms, hashes)
            self._forget(group.keys)
            if len(hashes) < self._compaction.small_below:
                small[key] = now_ms
        if not small:
            self._small.pop(partition, None)

    def _shrink_if_many_deleted(self) -> None:
        if self._deleted >= _SHRINK_AFTER:
            self._deleted = 0
            shrink(self._store)

    def _forget(self, keys: Sequence[bytes]) -> None:
        if keys:
            forget_keys(self._store, keys)
            self._deleted += len(keys)

    def _retire(self, partition: int, keys: Sequence[bytes]) -> None:
        """The merged entry replacing ``keys`` is durable: tombstone them."""
        if partition in self._assigned:
            self._retiring.add(partition, keys)
            if self._dripping is None:
                self._drip()

    def _drip(self) -> None:
        """Write the next chunk of tombstones; the last one's callback writes the next."""
        self._dripping = None
        chunk = self._retiring.take(TOMBSTONES_PER_FLUSH)
        if not chunk:  # all written: what they held can go back to the system
            self._deleted += self._dripped
            self._dripped = 0
            self._shrink_if_many_deleted()
            return
        self._dripped += len(chunk)
        for i, (partition, key) in enumerate(chunk):
            last = i == len(chunk) - 1
            self._writer.put(partition, key, None, self._drip if last else None)
            if last:
                self._dripping = partition

    # --- expiry -------------------------------------------------------------------------

    def expire(self) -> int:
        """Delete batches past their TTL (tombstones to the changelog); returns how many."""
        expired = list(self._index.expired(self._clock_ms()))
        by_partition: dict[int, list[bytes]] = {}
        for partition, key in expired:
            by_partition.setdefault(partition, []).append(key)
        for partition, keys in by_partition.items():
            hashes: list[int] = []
            small = self._small.get(partition, {})
            for key in keys:
                value = self._store.get(key)
                if value:
                    hashes.extend(unpack_batch(value)[1])
                small.pop(key, None)
                self._writer.put(partition, key, None)
            self._index.forget_batches(partition, keys, hashes)
        if expired:
            self._on_size(len(self._index))
        return len(expired)

    def __len__(self) -> int:
        return len(self._index)


def _created(key: bytes, default_ms: int) -> int:
    try:
        return created_of_key(key)
    except ValueError:
        return default_ms
