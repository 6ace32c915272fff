"""Per-principal request rate limit on ingest (default 60 per minute, seed 002): a token
bucket per principal id (``streams.core.ratelimit.take``), capacity = the per-minute
limit, refilled continuously. Over the limit: 429 with ``Retry-After`` (whole seconds).
In-process: each API replica limits on its own. Buckets idle long enough to be full again
are dropped, so the table stays bounded by the principals active in the last minute."""

from __future__ import annotations

import math
import time

from streams.api.problems import Problem
from streams.core.ratelimit import BucketState, take

_MS_PER_MIN = 60_000
_SWEEP_EVERY = 1024


class Throttle:
    def __init__(self, per_min: int) -> None:
        self.capacity = per_min
        self.refill_per_ms = per_min / _MS_PER_MIN
        self._buckets: dict[str, BucketState] = {}
        self._calls = 0

    def check(self, principal_id: str, *, now_ms: int | None = None) -> None:
        """Take a token for ``principal_id``; Problem 429 when there is none."""
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        state, wait_ms = take(
            self._buckets.get(principal_id),
            capacity=self.capacity,
            refill_per_ms=self.refill_per_ms,
            now_ms=now,
        )
        self._buckets[principal_id] = state
        self._calls += 1
        if self._calls % _SWEEP_EVERY == 0:
            self._sweep(now)
        if wait_ms > 0:
            retry_s = max(1, math.ceil(wait_ms / 1000))
            raise Problem(
                429,
                "rate-limited",
                f"more than {self.capacity} ingest requests per minute; retry in {retry_s}s",
                headers={"Retry-After": str(retry_s)},
            )

    def _sweep(self, now_ms: int) -> None:
        full_after_ms = _MS_PER_MIN
        stale = [k for k, s in self._buckets.items() if now_ms - s.updated_ms > full_after_ms]
        for key in stale:
            del self._buckets[key]
