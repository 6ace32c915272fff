"""Token bucket arithmetic for the catalog's rate limits. Pure: the caller owns the store.

A bucket holds up to ``capacity`` tokens and gains ``refill_per_ms`` tokens per ms; a
request costs ``cost`` tokens. ``take`` returns the new state and 0 (allowed, consumed)
or the exact ms until enough tokens (refused, nothing consumed). ``decide`` applies a
``RateLimit`` from the catalog and says Allow, Defer or Reject.

With several limits on one family, ``decide`` each; if any refuses, persist none of the
allowed states (a refused ``take`` consumed nothing, so keeping the old states is exact).

``reserve`` is the deferral's take: it always takes the tokens, letting the bucket go into
debt, and says how long the caller must wait until the debt is paid back. A deferred request
therefore holds its place: requests deferred together come back one refill interval apart
instead of all at once (each would otherwise find one token and re-defer the rest), and new
requests queue behind them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from streams.core.policies import RateLimit

_EPSILON_TOKENS = 1e-9  # float slack, so 0.1 + 0.2 tokens count as 0.3


@dataclass(frozen=True)
class BucketState:
    """Tokens in a bucket as of ``updated_ms`` (ms since the epoch)."""

    tokens: float
    updated_ms: int


@dataclass(frozen=True)
class Allow:
    """The request may run; a token was consumed."""


@dataclass(frozen=True)
class Defer:
    """Run the request again in ``wait_ms``; give up after ``max_defer_ms`` of deferral."""

    wait_ms: int
    max_defer_ms: int
    reason: str = ""


@dataclass(frozen=True)
class Reject:
    """The family rejects requests over the limit: DLQ reason ``rejected``."""

    reason: str


RateDecision = Allow | Defer | Reject


def take(
    state: BucketState | None,
    *,
    capacity: int,
    refill_per_ms: float,
    now_ms: int,
    cost: float = 1,
) -> tuple[BucketState, int]:
    """Refill to ``now_ms``, then take ``cost`` tokens: (new state, wait_ms).

    ``state`` None is a full bucket. wait_ms 0: allowed and consumed; > 0: refused, the
    exact ms until ``cost`` tokens are there; the state is then only refilled. A clock
    that went backwards refills nothing and re-anchors the bucket at ``now_ms`` (the
    tokens stay capped at ``capacity``, so at most a full bucket can be gained from it).
    Raises ValueError when capacity < 1, refill_per_ms <= 0 or cost not in (0, capacity].
    """
    return _take(state, capacity, refill_per_ms, now_ms, cost, into_debt=False)


def reserve(
    state: BucketState | None,
    *,
    capacity: int,
    refill_per_ms: float,
    now_ms: int,
    cost: float = 1,
) -> tuple[BucketState, int]:
    """Refill to ``now_ms`` and take ``cost`` tokens even when they are not there yet:
    (new state, wait_ms), where wait_ms is 0 when they were there and otherwise the exact
    ms until the bucket would have held them (the same wait ``take`` reports). The new
    state may hold negative tokens (a debt later refills pay back first).
    Raises ValueError like ``take``.
    """
    return _take(state, capacity, refill_per_ms, now_ms, cost, into_debt=True)


def _take(
    state: BucketState | None,
    capacity: int,
    refill_per_ms: float,
    now_ms: int,
    cost: float,
    *,
    into_debt: bool,
) -> tuple[BucketState, int]:
    _check_params(capacity, refill_per_ms, cost)
    tokens = _refilled(state, capacity=capacity, refill_per_ms=refill_per_ms, now_ms=now_ms)
    if _enough(tokens, cost):
        return BucketState(max(0.0, tokens - cost), now_ms), 0
    wait_ms = _wait_ms(tokens, capacity, refill_per_ms, cost)
    return BucketState(tokens - cost if into_debt else tokens, now_ms), wait_ms


def _check_params(capacity: int, refill_per_ms: float, cost: float) -> None:
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    if not refill_per_ms > 0 or not math.isfinite(refill_per_ms):
        raise ValueError(f"refill_per_ms must be a positive number, got {refill_per_ms}")
    if not 0 < cost <= capacity:
        raise ValueError(f"cost must be in (0, capacity={capacity}], got {cost}")


def _refilled(
    state: BucketState | None, *, capacity: int, refill_per_ms: float, now_ms: int
) -> float:
    if state is None:
        return float(capacity)
    elapsed_ms = max(0, now_ms - state.updated_ms)
    # negative tokens are a debt of reservations (see reserve); refills pay it back first
    return min(float(capacity), state.tokens + elapsed_ms * refill_per_ms)


def _enough(tokens: float, cost: float) -> bool:
    return tokens + _EPSILON_TOKENS >= cost


def _wait_ms(tokens: float, capacity: int, refill_per_ms: float, cost: float) -> int:
    """The smallest whole ms after which ``take`` at that time allows ``cost``."""

    def enough_after(wait_ms: int) -> bool:  # the very expression take() evaluates later
        return _enough(min(float(capacity), tokens + wait_ms * refill_per_ms), cost)

    wait_ms = max(1, math.ceil((cost - tokens - _EPSILON_TOKENS) / refill_per_ms))
    while not enough_after(wait_ms):  # float rounding: a step or two either way
        wait_ms += 1
    while wait_ms > 1 and enough_after(wait_ms - 1):
        wait_ms -= 1
    return wait_ms


def bucket_params(limit: RateLimit, *, partitions: int) -> tuple[int, float]:
    """(capacity, refill_per_ms) of one bucket of ``limit``.

    Scope ``key``: the whole limit (a key lives on one partition). Scope ``provider``: one
    bucket per partition, each with limit/partitions of the refill and capacity // partitions
    (at least 1, so with more partitions than capacity the combined burst exceeds it).
    Raises ValueError when ``partitions`` < 1.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    refill_per_ms = limit.limit / limit.per_ms
    if limit.scope == "key":
        return limit.capacity, refill_per_ms
    return max(1, limit.capacity // partitions), refill_per_ms / partitions


def bucket_key(limit: RateLimit, *, key: str, partition: int) -> str:
    """The table key of the bucket ``limit`` uses for this record.

    Scope key: ``<limit name>|k|<key>``; scope provider: ``<limit name>|p|<provider>|
    <partition>``. faust's memory store is ONE dict for all partitions of a table, so a
    table key must be unique across partitions: a key-scoped bucket is safe because one
    key always hashes to one partition, a provider bucket names its partition. Limit
    names cannot contain ``|``, so keys of different limits never collide.
    """
    if limit.scope == "key":
        return f"{limit.name}|k|{key}"
    return f"{limit.name}|p|{limit.provider}|{partition}"


def decide(
    limit: RateLimit,
    state: BucketState | None,
    *,
    partitions: int,
    now_ms: int,
    reserving: bool = False,
) -> tuple[BucketState, RateDecision]:
    """Take one token from ``limit``'s bucket: (new state, Allow | Defer | Reject).

    Persist the returned state. With ``reserving`` a Defer's state holds the token as a
    debt (``reserve``): persist it only if the request is then deferred, not dropped.
    Raises ValueError when ``partitions`` < 1.
    """
    capacity, refill_per_ms = bucket_params(limit, partitions=partitions)
    spend = reserve if reserving and limit.on_exceed == "defer" else take
    new_state, wait_ms = spend(state, capacity=capacity, refill_per_ms=refill_per_ms, now_ms=now_ms)
    if wait_ms == 0:
        return new_state, Allow()
    reason = f"rate limit {limit.name} ({limit.limit} per {limit.per_ms} ms) exceeded"
    if limit.on_exceed == "reject":
        return new_state, Reject(reason)
    return new_state, Defer(wait_ms, limit.max_defer_ms, reason)
