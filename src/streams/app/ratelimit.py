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
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from streams.app.changelog import ChangelogWriter
from streams.app.ordering import Entry
from streams.catalog import Family
from streams.core.ratelimit import BucketState, Defer, Reject, bucket_key, decide
from streams.errors import Deferred, Rejected
from streams.metrics import Metrics

_STATE = struct.Struct(">dq")


def pack_state(state: BucketState) -> bytes:
    return _STATE.pack(state.tokens, state.updated_ms)


def unpack_state(value: bytes | None) -> BucketState | None:
    if not value or len(value) != _STATE.size:
        return None
    tokens, updated_ms = _STATE.unpack(value)
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

    def check(self, event: Any, entry: Entry) -> None:
        """Spend one token of every limit; raises Deferred or Rejected when over one."""
        if not self._limits:
            return
        key = str(getattr(event, self._family.key_field))
        now_ms = self._clock_ms()
        spent: list[tuple[bytes, BucketState]] = []
        for limit in self._limits:
            table_key = bucket_key(limit, key=key, partition=entry.partition).encode()
            state = unpack_state(self._store.get(table_key))
            new_state, decision = decide(
                limit, state, partitions=self._family.partitions, now_ms=now_ms
            )
            if isinstance(decision, Defer):
                self._metrics.rate_limited.labels(self._family.name, limit.name, "defer").inc()
                raise Deferred(
                    decision.wait_ms / 1000,
                    decision.reason,
                    max_defer_s=decision.max_defer_ms / 1000,
                )
            if isinstance(decision, Reject):
                self._metrics.rate_limited.labels(self._family.name, limit.name, "reject").inc()
                raise Rejected(decision.reason)
            spent.append((table_key, new_state))
        # spend tokens only when every limit allows (a refusal leaves all buckets untouched)
        for table_key, new_state in spent:
            self._writer.put(entry.partition, table_key, pack_state(new_state))
