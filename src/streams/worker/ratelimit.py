"""Token buckets in a changelog-backed faust table (one per family).

Scopes (topics.yaml ``rate_limits``): ``key`` — one bucket per partition key (user, tenant);
``provider`` — the provider's limit split evenly across the family's partitions, one bucket
per partition keyed by provider *and* partition, because a table key must be unique across
partitions (faust's memory store is one dict) and each partition's owner spends only its
share. Bucket state survives restarts and rebalances with the table; writes are batched by
the ``ChangelogWriter`` (an event does not wait for its bucket write: after a crash at most
one flush of token spending is forgotten).

Over a limit the event is deferred (``Deferred``, no attempt used; past ``max_defer`` the
planner sends it to the DLQ as ``expired``) or rejected (``Rejected`` -> DLQ ``rejected``).
A deferred event reserves its tokens (see ``RateGate.check``): deferred events come back
paced at the limit's rate rather than as a herd that re-defers all but one.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Collection, Mapping
from typing import Any

from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]

from streams.catalog import Family
from streams.core import headers as h
from streams.core.planner import deferral_expires
from streams.core.ratelimit import BucketState, Defer, Reject, bucket_key, decide
from streams.errors import Deferred, Rejected
from streams.metrics import Metrics
from streams.worker.changelog import ChangelogWriter
from streams.worker.ordering import Entry

_STATE = struct.Struct(">dq")


def pack_state(state: BucketState) -> bytes:
    return _STATE.pack(state.tokens, state.updated_ms)


def unpack_state(value: bytes | None) -> BucketState | None:
    if not value or len(value) != _STATE.size:
        return None
    tokens, updated_ms = _STATE.unpack(value)
    if not math.isfinite(tokens):  # corrupt: a full bucket rather than a key blocked forever
        return None
    return BucketState(tokens=tokens, updated_ms=updated_ms)


class RateGate:
    def __init__(
        self,
        *,
        family: Family,
        store: Any,
        writer: ChangelogWriter,
        metrics: Metrics,
        clock_ms: Callable[[], int],
    ) -> None:
        self._family = family
        self._limits = family.rate_limits
        self._store = store
        self._writer = writer
        self._metrics = metrics
        self._clock_ms = clock_ms

    def check(self, event: Any, entry: Entry, headers: Mapping[str, str]) -> None:
        """Spend one token of every limit; raises Deferred or Rejected when over one.

        Over a ``reject`` limit: Rejected, nothing spent. Over a ``defer`` limit: the event
        *reserves* its token of every limit (buckets may go into debt) and is deferred until
        the last of them is due, so events deferred together come back one refill interval
        apart instead of all at once; the deferred record carries ``streams-rate-reserved``
        and is not charged again. A wait past the deferral budget reserves nothing: the
        planner sends the event to the DLQ as ``expired`` at once.
        """
        if not self._limits or headers.get(h.RATE_RESERVED) == "1":
            return
        if not getattr(event, "RATE_LIMITED", True):  # feedback events (push.token_invalid)
            return
        key = str(getattr(event, self._family.key_field))
        now_ms = self._clock_ms()
        states: list[tuple[bytes, BucketState]] = []
        deferring: list[tuple[str, Defer]] = []
        for limit in self._limits:
            table_key = bucket_key(limit, key=key, partition=entry.partition).encode()
            new_state, decision = decide(
                limit,
                unpack_state(self._store.get(table_key)),
                partitions=self._family.partitions,
                now_ms=now_ms,
                reserving=True,
            )
            if isinstance(decision, Reject):
                self._metrics.rate_limited.labels(self._family.name, limit.name, "reject").inc()
                raise Rejected(decision.reason)
            if isinstance(decision, Defer):
                deferring.append((limit.name, decision))
            states.append((table_key, new_state))
        deferral = None
        if deferring:
            for name, _ in deferring:
                self._metrics.rate_limited.labels(self._family.name, name, "defer").inc()
            strictest = max((d for _, d in deferring), key=lambda d: d.wait_ms)
            max_defer_ms = min(d.max_defer_ms for _, d in deferring)
            # past the budget the planner sends it to the DLQ: it must hold no tokens
            if deferral_expires(headers, now_ms, strictest.wait_ms, max_defer_ms):
                raise Deferred(
                    strictest.wait_ms / 1000,
                    strictest.reason,
                    max_defer_s=max_defer_ms / 1000,
                    kind="rate_limited",
                )
            deferral = Deferred(
                strictest.wait_ms / 1000,
                strictest.reason,
                max_defer_s=max_defer_ms / 1000,
                kind="rate_limited",
                reserved=True,
            )
        for table_key, new_state in states:
            self._writer.put(entry.partition, table_key, pack_state(new_state))
        if deferral is not None:
            raise deferral

    def reset(self, key: str, partitions: Collection[int]) -> int:
        """Refill every bucket of ``key`` that lives in one of ``partitions`` (this worker's
        share): the table entry is deleted (a missing bucket is full) and the deletion
        written through to the changelog. Returns how many buckets were reset."""
        count = 0
        for limit in self._limits:
            if limit.scope == "key":
                owners = [key_partition(key, self._family.partitions)]
            elif limit.provider == key:
                owners = list(range(self._family.partitions))
            else:
                continue
            for p in owners:
                if p in partitions:
                    self._writer.put(p, bucket_key(limit, key=key, partition=p).encode(), None)
                    count += 1
        return count


def key_partition(key: str, partitions: int) -> int:
    """The partition of record key ``key``: Kafka's default (murmur2) partitioner, where the
    SDK, aiokafka and Java clients put it; a key-scoped bucket lives there."""
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions
