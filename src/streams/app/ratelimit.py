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
from collections.abc import Callable, Mapping
from typing import Any

from streams.app.changelog import ChangelogWriter
from streams.app.ordering import Entry
from streams.catalog import Family
from streams.core import headers as h
from streams.core.ratelimit import BucketState, Defer, Reject, bucket_key, decide, reserve_for
from streams.errors import Deferred, Rejected
from streams.metrics import Metrics

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
        key = str(getattr(event, self._family.key_field))
        now_ms = self._clock_ms()
        partitions = self._family.partitions
        looked: list[tuple[Any, bytes, BucketState | None, BucketState, Any]] = []
        for limit in self._limits:
            table_key = bucket_key(limit, key=key, partition=entry.partition).encode()
            state = unpack_state(self._store.get(table_key))
            new_state, decision = decide(limit, state, partitions=partitions, now_ms=now_ms)
            if isinstance(decision, Reject):
                self._metrics.rate_limited.labels(self._family.name, limit.name, "reject").inc()
                raise Rejected(decision.reason)
            looked.append((limit, table_key, state, new_state, decision))
        deferring = [item for item in looked if isinstance(item[4], Defer)]
        if not deferring:
            for _, table_key, _, new_state, _ in looked:
                self._writer.put(entry.partition, table_key, pack_state(new_state))
            return
        reserved = []
        wait_ms = 0
        for limit, table_key, state, _, _ in looked:
            debt_state, limit_wait_ms = reserve_for(
                limit, state, partitions=partitions, now_ms=now_ms
            )
            reserved.append((table_key, debt_state))
            wait_ms = max(wait_ms, limit_wait_ms)
        strictest = max(deferring, key=lambda item: item[4].wait_ms)
        max_defer_ms = min(item[4].max_defer_ms for item in deferring)
        for limit, *_ in deferring:
            self._metrics.rate_limited.labels(self._family.name, limit.name, "defer").inc()
        first_deferred_ms = h.int_header(headers, h.FIRST_DEFERRED_AT_MS, -1)
        waited_ms = now_ms - first_deferred_ms if first_deferred_ms >= 0 else 0
        if waited_ms + wait_ms > max_defer_ms:  # expired: hold no tokens for it
            raise Deferred(wait_ms / 1000, strictest[4].reason, max_defer_s=max_defer_ms / 1000)
        for table_key, debt_state in reserved:
            self._writer.put(entry.partition, table_key, pack_state(debt_state))
        raise Deferred(
            wait_ms / 1000, strictest[4].reason, max_defer_s=max_defer_ms / 1000, reserved=True
        )
