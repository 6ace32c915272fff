"""Idempotency bookkeeping without one table write per event.

The done-marker of an event is a 64-bit hash of its id. Finished events are written in
*batches*: one table entry per partition per flush, keyed ``b"<partition>|<created_ms>|<nonce>"``
(unique across partitions: faust's memory store is one dict for all of them) with the value
``expires_at_ms`` (8 bytes, big-endian) followed by the packed 8-byte hashes. A worker keeps an
in-memory index (a set of ints per partition), rebuilt from the table after each assignment,
and drops whole batches when they expire, so memory and recovery time stay bounded by the TTL.

A 64-bit hash makes a false "already done" possible but negligible: about n^2 / 2^65, i.e.
3e-8 with a million ids held per partition.
"""

from __future__ import annotations

import hashlib
import struct
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

_EXPIRY = struct.Struct(">q")
_HASH_BYTES = 8


def event_hash(event_id: str) -> int:
    """The 64-bit done-marker of an event id (blake2b, stable across processes)."""
    digest = hashlib.blake2b(event_id.encode("utf-8"), digest_size=_HASH_BYTES).digest()
    return int.from_bytes(digest, "big", signed=True)


def pack_batch(expires_at_ms: int, hashes: Iterable[int]) -> bytes:
    """Table value of a batch: expiry then the hashes (8 bytes each, big-endian)."""
    body = array("q", hashes)
    if body.itemsize != _HASH_BYTES:  # pragma: no cover - every CPython platform has 8-byte q
        raise RuntimeError("array('q') is not 8 bytes wide on this platform")
    if _little_endian():
        body.byteswap()
    return _EXPIRY.pack(expires_at_ms) + body.tobytes()


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


def partition_of_key(key: bytes) -> int:
    """The partition a batch key belongs to; raises ValueError for foreign keys."""
    head, sep, _ = key.partition(b"|")
    if not sep:
        raise ValueError(f"not a batch key: {key[:40]!r}")
    return int(head)


@dataclass
class _Partition:
    hashes: set[int] = field(default_factory=set)
    # batch key -> expires_at_ms (the hashes are re-read from the table on expiry)
    batches: dict[bytes, int] = field(default_factory=dict)


class DoneIndex:
    """The in-memory view of done event ids, per partition."""

    def __init__(self) -> None:
        self._parts: dict[int, _Partition] = {}

    def __len__(self) -> int:
        return sum(len(p.hashes) for p in self._parts.values())

    def contains(self, partition: int, digest: int) -> bool:
        part = self._parts.get(partition)
        return part is not None and digest in part.hashes

    def add(self, partition: int, digest: int) -> None:
        """Mark done in memory (before the batch holding it is durable)."""
        self._parts.setdefault(partition, _Partition()).hashes.add(digest)

    def load_batch(self, key: bytes, value: bytes) -> int:
        """Index a batch read from the table; returns its partition."""
        partition = partition_of_key(key)
        expires_at_ms, hashes = unpack_batch(value)
        part = self._parts.setdefault(partition, _Partition())
        part.hashes.update(hashes)
        part.batches[key] = expires_at_ms
        return partition

    def note_batch(self, partition: int, key: bytes, expires_at_ms: int) -> None:
        """Record that a batch was written (its hashes were ``add``-ed already)."""
        self._parts.setdefault(partition, _Partition()).batches[key] = expires_at_ms

    def expired(self, now_ms: int) -> Iterator[tuple[int, bytes]]:
        """(partition, key) of every batch whose expiry has passed."""
        for partition, part in self._parts.items():
            for key, expires_at_ms in part.batches.items():
                if expires_at_ms <= now_ms:
                    yield partition, key

    def forget_batch(self, partition: int, key: bytes, hashes: Iterable[int]) -> None:
        part = self._parts.get(partition)
        if part is None:
            return
        part.batches.pop(key, None)
        part.hashes.difference_update(hashes)

    def drop_partition(self, partition: int) -> None:
        self._parts.pop(partition, None)

    def partitions(self) -> set[int]:
        return set(self._parts)
