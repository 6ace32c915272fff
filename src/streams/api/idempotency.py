"""``Idempotency-Key`` on ingest: the same key with the same body answers the first result
and publishes nothing; with another body, 409.

The store is in-process and bounded (``STREAMS_API_IDEMPOTENCY_MAX_KEYS``, least recently
used evicted first), keyed by (tenant, key) and holding the SHA-256 of the request body
and the answer the broker's acknowledgement produced. Only acknowledged answers are kept:
a refused or failed request may be retried with the same key. Concurrent requests with
one key are serialised (the second waits for the first's verdict).

What survives an API restart (or an eviction, or a second API replica): nothing. That is
still safe because the key *is* the event id (``event_id_for``): a repeat after a restart
is published again with the same event id, and the worker's idempotency ledger (per
family, kept for the family's ``idempotency.ttl``) runs its handler once. What is lost is
the answer's fidelity: the repeat gets the new record's offset, and a *different* body
under a forgotten key is published (the worker skips it as a duplicate) instead of 409.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

MAX_KEY_CHARS = 200
"""Leaves room in the 256-character event id for the tenant and a batch index."""


@dataclass(frozen=True)
class Remembered:
    body_sha256: str
    status: int
    answer: dict[str, Any]


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def check_key(key: str) -> str | None:
    """Why ``key`` is unusable (None when fine): 1-200 printable ASCII characters."""
    if not 1 <= len(key) <= MAX_KEY_CHARS:
        return f"must be 1-{MAX_KEY_CHARS} characters"
    if not all(0x21 <= ord(c) <= 0x7E for c in key):
        return "must be printable ASCII without spaces"
    return None


def event_id_for(tenant: str | None, key: str, index: int | None = None) -> str:
    """The event id an idempotency key gives: the key itself, prefixed ``<tenant>/`` for a
    tenant-bound principal (so tenants cannot collide in the worker's ledger), suffixed
    ``#<index>`` for the index-th event of a batch."""
    base = key if tenant is None else f"{tenant}/{key}"
    return base if index is None else f"{base}#{index}"


class IdempotencyStore:
    """Bounded (tenant, key) -> ``Remembered``, with per-key locks (module docstring)."""

    def __init__(self, max_keys: int) -> None:
        self.max_keys = max_keys
        self._done: OrderedDict[tuple[str | None, str], Remembered] = OrderedDict()
        self._locks: dict[tuple[str | None, str], asyncio.Lock] = {}

    def __len__(self) -> int:
        return len(self._done)

    def lock(self, tenant: str | None, key: str) -> asyncio.Lock:
        return self._locks.setdefault((tenant, key), asyncio.Lock())

    def release(self, tenant: str | None, key: str, lock: asyncio.Lock) -> None:
        """Drop the key's lock once nobody waits on it (keeps ``_locks`` bounded)."""
        if not lock.locked() and self._locks.get((tenant, key)) is lock:
            del self._locks[(tenant, key)]

    def get(self, tenant: str | None, key: str) -> Remembered | None:
        found = self._done.get((tenant, key))
        if found is not None:
            self._done.move_to_end((tenant, key))
        return found

    def put(self, tenant: str | None, key: str, remembered: Remembered) -> None:
        self._done[(tenant, key)] = remembered
        self._done.move_to_end((tenant, key))
        while len(self._done) > self.max_keys:
            self._done.popitem(last=False)
