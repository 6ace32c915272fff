"""Idempotency bookkeeping without one table write per event.

The done-marker of an event is a 64-bit hash of its id. Finished events are written in
*batches*: one table entry per partition per flush, keyed ``b"<partition>|<created_ms>|<nonce>"``
(unique across partitions: faust's memory store is one dict for all of them) with the value
``expires_at_ms`` (8 bytes, big-endian) followed by the packed 8-byte hashes.

A slow trickle of events writes tiny batches (one or two hashes each), and every table entry
costs a few hundred bytes of Python objects beside its 8 bytes per hash. So small batches are
*merged* as they age (``Compaction``): those of one partition whose expiries fall into the same
window become one entry, holding their hashes, sorted and unique, and the expiry of the latest
of them (a key may be held up to one window longer than its TTL, never shorter); the merged-away
entries are deleted with tombstones once the merged entry is durable. ``plan_merge`` decides
which entries become one; it is pure.

The in-memory index (``DoneIndex``) holds per partition the hashes as one sorted
``array('q')`` (8 bytes per hash, looked up by bisection) plus a set of the hashes added since
it was last sealed; the set is folded into the array once it holds an eighth of it. It is
rebuilt from the table after each assignment, and whole batches are dropped when they expire,
so memory and recovery time stay bounded by the TTL.

A record routed to a retry tier or the DLQ leaves a marker of its position (``route_hash``)
in the same index, so a redelivered copy is not routed twice.

A 64-bit hash makes a false "already done" possible but negligible: about n^2 / 2^65, i.e.
3e-8 with a million ids held per partition.
"""

from __future__ import annotations

import hashlib
import struct
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby

_EXPIRY = struct.Struct(">q")
_HASH_BYTES = 8


def event_hash(event_id: str) -> int:
    """The 64-bit done-marker of an event id (blake2b, stable across processes)."""
    digest = hashlib.blake2b(event_id.encode("utf-8"), digest_size=_HASH_BYTES).digest()
    return int.from_bytes(digest, "big", signed=True)


_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # odd: multiplying by it is a bijection on 64-bit offsets


def route_salt(topic: str) -> int:
    """The per-topic part of ``route_hash`` (cache it: one blake2b per topic)."""
    return event_hash("\x00routed\x00" + topic) & _MASK


def route_hash(salt: int, offset: int) -> int:
    """The 64-bit marker of "the record at ``offset`` of the topic of ``salt`` was routed
    (to a retry tier or the DLQ) and acknowledged there". Kept in the same index as the
    done-markers, of the record's partition: a redelivery of that record (after a rebalance
    or a crash between the route and the commit) is acked without routing it a second time.
    Distinct offsets of one topic never collide (an odd multiplier is a bijection); a
    collision with an event id's hash is as unlikely as one between two of those."""
    mixed = salt ^ ((offset * _GOLDEN) & _MASK)
    return mixed - (1 << 64) if mixed >= 1 << 63 else mixed


class RouteMarkers:
    """``route_hash`` of a record by topic and offset, the topic's salt computed once."""

    __slots__ = ("_salts",)

    def __init__(self) -> None:
        self._salts: dict[str, int] = {}

    def of(self, topic: str, offset: int) -> int:
        salt = self._salts.get(topic)
        if salt is None:
            salt = self._salts[topic] = route_salt(topic)
        return route_hash(salt, offset)


def pack_batch(expires_at_ms: int, hashes: Iterable[int]) -> bytes:
    """Table value of a batch: expiry then the hashes (8 bytes each, big-endian)."""
    body = array("q", hashes)
    if body.itemsize != _HASH_BYTES:  # pragma: no cover - every CPython platform has 8-byte q
        raise RuntimeError("array('q') is not 8 bytes wide on this platform")
    if _little_endian():
        body.byteswap()
    return _EXPIRY.pack(expires_at_ms) + body.tobytes()


def batch_header(value: bytes) -> tuple[int, int]:
    """(expires_at_ms, number of hashes) of a batch without unpacking its hashes."""
    if len(value) < _EXPIRY.size or (len(value) - _EXPIRY.size) % _HASH_BYTES:
        raise ValueError(f"malformed idempotency batch of {len(value)} bytes")
    return _EXPIRY.unpack_from(value)[0], (len(value) - _EXPIRY.size) // _HASH_BYTES


def unpack_batch(value: bytes) -> tuple[int, array[int]]:
    """(expires_at_ms, hashes); raises ValueError on a malformed value."""
    if len(value) < _EXPIRY.size or (len(value) - _EXPIRY.size) % _HASH_BYTES:
        raise ValueError(f"malformed idempotency batch of {len(value)} bytes")
    (expires_at_ms,) = _EXPIRY.unpack_from(value)
    body = array("q")
    body.frombytes(value[_EXPIRY.size :])
    if _little_endian():
        body.byteswap()
    return expires_at_ms, body


def _little_endian() -> bool:
    return array("q", [1]).tobytes()[0] == 1


def batch_key(partition: int, created_ms: int, nonce: str) -> bytes:
    """A table key unique across partitions and workers."""
    return f"{partition}|{created_ms}|{nonce}".encode()


def created_of_key(key: bytes) -> int:
    """The creation time (ms) written into a batch key; raises ValueError for foreign keys."""
    parts = key.split(b"|", 2)
    if len(parts) != 3:
        raise ValueError(f"not a batch key: {key[:40]!r}")
    return int(parts[1])


def partition_of_key(key: bytes) -> int:
    """The partition a batch key belongs to; raises ValueError for foreign keys."""
    head, sep, _ = key.partition(b"|")
    if not sep:
        raise ValueError(f"not a batch key: {key[:40]!r}")
    return int(head)


# --- merging small batches ------------------------------------------------------------------


@dataclass(frozen=True)
class Compaction:
    """When small batches are merged, and how large a merged one may grow.

    A batch with fewer than ``small_below`` hashes is small. A partition's small batches are
    merged once there are ``max_small`` of them or the oldest is ``min_age_ms`` old (and always
    after an assignment, when they were recovered from the changelog); batches merge only with
    those whose expiry lies in the same ``window_ms``; a merged batch holds at most
    ``max_hashes`` (128 KiB with 16,384), well below a changelog record's size limit.
    """

    window_ms: int
    small_below: int = 512
    max_small: int = 64
    min_age_ms: int = 60_000
    max_hashes: int = 16_384

    @classmethod
    def for_ttl(cls, ttl_ms: int) -> Compaction:
        """Windows of 1/32 of the TTL (a key is held at most ~3% longer than its TTL)."""
        return cls(window_ms=max(1_000, ttl_ms // 32))

    def due(self, count: int, oldest_created_ms: int, last_merge_ms: int, now_ms: int) -> bool:
        """Whether a partition's ``count`` small batches, the oldest created at
        ``oldest_created_ms``, should be merged now (the last merge ran at ``last_merge_ms``:
        batches that could not be merged then are not looked at again at every flush)."""
        if count >= self.max_small:
            return True
        return (
            count >= 2
            and now_ms - oldest_created_ms >= self.min_age_ms
            and now_ms - last_merge_ms >= self.min_age_ms
        )


@dataclass(frozen=True)
class MergeGroup:
    """Batches to replace by one: their keys, the merged expiry, their hash count."""

    keys: tuple[bytes, ...]
    expires_at_ms: int
    hashes: int


def plan_merge(
    batches: Iterable[tuple[bytes, int, int]], policy: Compaction
) -> Iterator[MergeGroup]:
    """Group small batches ``(key, expires_at_ms, hashes)`` of one partition into merges.

    Batches whose expiries share a window go together, in the order given, cut whenever the
    next one would take a group past ``policy.max_hashes``. Groups of one batch are yielded
    too (nothing to merge: the caller keeps the batch as it is).
    """
    windows: dict[int, list[tuple[bytes, int, int]]] = {}
    for batch in batches:
        windows.setdefault(batch[1] // policy.window_ms, []).append(batch)
    for members in windows.values():
        keys: list[bytes] = []
        expires_at_ms = 0
        count = 0
        for key, expiry, hashes in members:
            if keys and count + hashes > policy.max_hashes:
                yield MergeGroup(tuple(keys), expires_at_ms, count)
                keys, expires_at_ms, count = [], 0, 0
            keys.append(key)
            expires_at_ms = max(expires_at_ms, expiry)
            count += hashes
        if keys:
            yield MergeGroup(tuple(keys), expires_at_ms, count)


def merge_hashes(parts: Iterable[Iterable[int]]) -> array[int]:
    """The hashes of ``parts``, sorted, each once."""
    merged: list[int] = []
    for part in parts:
        merged.extend(part)
    merged.sort()
    return array("q", (digest for digest, _ in groupby(merged)))


class Retiring:
    """Keys waiting for their tombstone, compactly: one bytes blob per merge.

    A merge of half a million recovered batches would otherwise hold half a million key
    objects until the tombstones are all written.
    """

    def __init__(self) -> None:
        self._groups: list[tuple[int, bytes]] = []  # (partition, b"\n".join(keys))
        self._head = 0  # read position in the first group
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def add(self, partition: int, keys: Sequence[bytes]) -> None:
        if keys:
            self._groups.append((partition, b"\n".join(keys)))
            self.count += len(keys)

    def take(self, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` (partition, key), oldest first."""
        out: list[tuple[int, bytes]] = []
        while self._groups and len(out) < limit:
            partition, blob = self._groups[0]
            end = blob.find(b"\n", self._head)
            if end < 0:
                out.append((partition, blob[self._head :]))
                self._groups.pop(0)
                self._head = 0
            else:
                out.append((partition, blob[self._head : end]))
                self._head = end + 1
        self.count -= len(out)
        return out

    def drop(self, partitions: set[int]) -> None:
        """Forget the keys of ``partitions`` (moved away: their next owner merges again)."""
        if not self._groups:
            return
        first, rest = self._groups[0], self._groups[1:]
        kept_first = [] if first[0] in partitions else [(first[0], first[1][self._head :])]
        self._groups = kept_first + [g for g in rest if g[0] not in partitions]
        self._head = 0
        self.count = sum(blob.count(b"\n") + 1 for _, blob in self._groups)


# --- the in-memory index --------------------------------------------------------------------

_SEAL_MIN = 16_384  # fresh hashes kept in a set before they are sorted into the array


@dataclass
class _Partition:
    sealed: array[int] = field(default_factory=lambda: array("q"))  # sorted
    fresh: set[int] = field(default_factory=set)  # added since the last seal
    staged: array[int] = field(default_factory=lambda: array("q"))  # loaded, not yet sorted
    # batch key -> expires_at_ms (the hashes are re-read from the table on expiry)
    batches: dict[bytes, int] = field(default_factory=dict)
    limit: int = _SEAL_MIN  # fresh hashes that trigger a seal

    def seal(self) -> None:
        """Sort fresh and staged hashes into ``sealed``.

        Loaded batches may overlap (a merged batch beside its parts, until their tombstones):
        those are deduplicated. Fresh hashes are not looked up in ``sealed`` first (that
        would cost a bisection per record, and ``record`` follows a negative ``seen``), so
        a hash recorded twice in a race may be held twice, until its batches expire.
        """
        if self.staged:
            self.sealed = merge_hashes((self.sealed, self.fresh, self.staged))
        elif self.fresh:
            merged = self.sealed.tolist()
            merged.extend(self.fresh)
            merged.sort()  # two runs for timsort: the sealed ones and the fresh ones
            self.sealed = array("q", merged)
        else:
            return
        self.fresh = set()
        self.staged = array("q")
        self.limit = max(_SEAL_MIN, len(self.sealed) // 8)

    def contains(self, digest: int) -> bool:
        if self.staged:
            self.seal()
        if digest in self.fresh:
            return True
        sealed = self.sealed
        i = bisect_left(sealed, digest)
        return i < len(sealed) and sealed[i] == digest

    def remove(self, hashes: Iterable[int]) -> None:
        drop = set(hashes)
        if not drop:
            return
        self.seal()
        self.sealed = array("q", (d for d in self.sealed if d not in drop))


class DoneIndex:
    """The in-memory view of done event ids, per partition."""

    def __init__(self) -> None:
        self._parts: dict[int, _Partition] = {}

    def __len__(self) -> int:
        for part in self._parts.values():
            if part.staged:
                part.seal()
        return sum(len(p.sealed) + len(p.fresh) for p in self._parts.values())

    def _part(self, partition: int) -> _Partition:
        part = self._parts.get(partition)
        if part is None:
            self._parts[partition] = part = _Partition()
        return part

    def contains(self, partition: int, digest: int) -> bool:
        part = self._parts.get(partition)
        return part is not None and part.contains(digest)

    def add(self, partition: int, digest: int) -> None:
        """Mark done in memory (before the batch holding it is durable)."""
        part = self._parts.get(partition) or self._part(partition)
        fresh = part.fresh
        fresh.add(digest)
        if len(fresh) >= part.limit:
            part.seal()

    def load_batch(self, key: bytes, value: bytes) -> int:
        """Index a batch read from the table; returns its partition."""
        partition = partition_of_key(key)
        expires_at_ms, hashes = unpack_batch(value)
        self.load(partition, key, expires_at_ms, hashes)
        return partition

    def load(self, partition: int, key: bytes, expires_at_ms: int, hashes: array[int]) -> None:
        """Index a batch whose hashes are known (sorted in on the next lookup)."""
        part = self._part(partition)
        part.staged.extend(hashes)
        part.batches[key] = expires_at_ms

    def note_batch(self, partition: int, key: bytes, expires_at_ms: int) -> None:
        """Record that a batch was written (its hashes were ``add``-ed already)."""
        self._part(partition).batches[key] = expires_at_ms

    def replace_batches(
        self, partition: int, old: Iterable[bytes], key: bytes, expires_at_ms: int
    ) -> None:
        """Batches ``old`` were merged into ``key`` (the hashes stay as they are)."""
        batches = self._part(partition).batches
        for k in old:
            batches.pop(k, None)
        batches[key] = expires_at_ms

    def expires_at(self, partition: int, key: bytes) -> int | None:
        part = self._parts.get(partition)
        return None if part is None else part.batches.get(key)

    def expired(self, now_ms: int) -> Iterator[tuple[int, bytes]]:
        """(partition, key) of every batch whose expiry has passed."""
        for partition, part in self._parts.items():
            for key, expires_at_ms in part.batches.items():
                if expires_at_ms <= now_ms:
                    yield partition, key

    def forget_batch(self, partition: int, key: bytes, hashes: Iterable[int]) -> None:
        self.forget_batches(partition, [key], hashes)

    def forget_batches(self, partition: int, keys: Iterable[bytes], hashes: Iterable[int]) -> None:
        """Drop batches ``keys`` and their ``hashes`` (one pass over the partition's array)."""
        part = self._parts.get(partition)
        if part is None:
            return
        for key in keys:
            part.batches.pop(key, None)
        part.remove(hashes)

    def drop_partition(self, partition: int) -> None:
        self._parts.pop(partition, None)

    def partitions(self) -> set[int]:
        return set(self._parts)
