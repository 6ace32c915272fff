"""ratelimit: token bucket arithmetic, bucket keys and decisions, with a frozen clock."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.catalog import RateLimitSpec
from streams.core.policies import RateLimit
from streams.core.ratelimit import (
    Allow,
    BucketState,
    Defer,
    Reject,
    bucket_key,
    bucket_params,
    decide,
    reserve,
    take,
)

NOW_MS = 1_700_000_000_000
HOUR_MS = 3_600_000


def rate_limit(**overrides: Any) -> RateLimit:
    body: dict[str, Any] = {"name": "per_user", "scope": "key", "limit": 50, "per": "1h"}
    return RateLimitSpec.model_validate(body | overrides).policy()


PER_USER = rate_limit()
PROVIDER = rate_limit(name="stripe_api", scope="provider", provider="stripe", limit=100, per="1s")


# --- take -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "capacity", "refill_per_ms", "now_ms", "cost", "expected_state", "wait_ms"),
    [
        # a new bucket is full
        (None, 10, 0.01, NOW_MS, 1, BucketState(9.0, NOW_MS), 0),
        (None, 1, 0.01, NOW_MS, 1, BucketState(0.0, NOW_MS), 0),
        # empty: the exact wait for one token (1 / 0.01 per ms), nothing consumed
        (BucketState(0.0, NOW_MS), 10, 0.01, NOW_MS, 1, BucketState(0.0, NOW_MS), 100),
        (BucketState(0.5, NOW_MS), 10, 0.01, NOW_MS, 1, BucketState(0.5, NOW_MS), 50),
        # refused, but refilled to now
        (BucketState(0.0, NOW_MS - 50), 10, 0.01, NOW_MS, 1, BucketState(0.5, NOW_MS), 50),
        # refill reaches one token exactly
        (BucketState(0.0, NOW_MS - 100), 10, 0.01, NOW_MS, 1, BucketState(0.0, NOW_MS), 0),
        # refill stops at capacity
        (BucketState(5.0, NOW_MS - 10**9), 10, 0.01, NOW_MS, 1, BucketState(9.0, NOW_MS), 0),
        # clock went backwards: no refill, no crash, re-anchored
        (BucketState(3.0, NOW_MS + 1_000), 10, 0.01, NOW_MS, 1, BucketState(2.0, NOW_MS), 0),
        (BucketState(0.0, NOW_MS + 1_000), 10, 0.01, NOW_MS, 1, BucketState(0.0, NOW_MS), 100),
        # a cost of several tokens
        (BucketState(1.5, NOW_MS), 10, 0.01, NOW_MS, 2, BucketState(1.5, NOW_MS), 50),
        (BucketState(2.5, NOW_MS), 10, 0.01, NOW_MS, 2, BucketState(0.5, NOW_MS), 0),
        # a negative balance is a debt of reservations: paid back before a token is there
        (BucketState(-4.0, NOW_MS), 10, 0.01, NOW_MS, 1, BucketState(-4.0, NOW_MS), 500),
        # fast refill: a fraction of a ms still waits a whole ms
        (BucketState(0.0, NOW_MS), 10, 4.0, NOW_MS, 1, BucketState(0.0, NOW_MS), 1),
    ],
)
def test_take_table(
    state: BucketState | None,
    capacity: int,
    refill_per_ms: float,
    now_ms: int,
    cost: float,
    expected_state: BucketState,
    wait_ms: int,
) -> None:
    new_state, got_wait_ms = take(
        state, capacity=capacity, refill_per_ms=refill_per_ms, now_ms=now_ms, cost=cost
    )
    assert got_wait_ms == wait_ms
    assert new_state.updated_ms == expected_state.updated_ms
    assert new_state.tokens == pytest.approx(expected_state.tokens, abs=1e-9)


def test_float_slack_counts_sums_of_tenths_as_whole_tokens() -> None:
    # 0.7 + 3 * 0.1 is 0.9999999999999999 in floats: still a whole token
    state, wait_ms = take(
        BucketState(0.7, NOW_MS - 3), capacity=10, refill_per_ms=0.1, now_ms=NOW_MS
    )
    assert wait_ms == 0
    assert state.tokens == 0.0


@pytest.mark.parametrize(
    ("capacity", "refill_per_ms", "cost"),
    [(0, 0.01, 1), (10, 0.0, 1), (10, -1.0, 1), (10, math.nan, 1), (10, math.inf, 1),
     (10, 0.01, 0), (10, 0.01, 11)],
)  # fmt: skip
def test_take_rejects_bad_parameters(capacity: int, refill_per_ms: float, cost: float) -> None:
    with pytest.raises(ValueError):
        take(None, capacity=capacity, refill_per_ms=refill_per_ms, now_ms=NOW_MS, cost=cost)


# --- parameters and keys ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "partitions", "capacity", "refill_per_ms"),
    [
        (PER_USER, 1, 50, 50 / HOUR_MS),
        (PER_USER, 12, 50, 50 / HOUR_MS),  # a key lives on one partition: not split
        (rate_limit(burst=80), 6, 80, 50 / HOUR_MS),
        (PROVIDER, 1, 100, 0.1),
        (PROVIDER, 4, 25, 0.025),  # split evenly across partitions
        (rate_limit(scope="provider", provider="p", limit=10, per="1s"), 3, 3, 10 / 1000 / 3),
        (rate_limit(scope="provider", provider="p", limit=2, per="1s"), 8, 1, 2 / 1000 / 8),
    ],
)
def test_bucket_params(
    limit: RateLimit, partitions: int, capacity: int, refill_per_ms: float
) -> None:
    got_capacity, got_refill_per_ms = bucket_params(limit, partitions=partitions)
    assert got_capacity == capacity
    assert got_refill_per_ms == pytest.approx(refill_per_ms)


def test_bucket_params_rejects_no_partitions() -> None:
    with pytest.raises(ValueError):
        bucket_params(PER_USER, partitions=0)


@pytest.mark.parametrize(
    ("limit", "key", "partition", "expected"),
    [
        (PER_USER, "user-1", 0, "per_user|k|user-1"),
        (PER_USER, "user-1", 7, "per_user|k|user-1"),  # the key already fixes the partition
        (PER_USER, "a|p|b", 0, "per_user|k|a|p|b"),
        (PROVIDER, "user-1", 0, "stripe_api|p|stripe|0"),
        (PROVIDER, "user-2", 3, "stripe_api|p|stripe|3"),  # per provider, not per key
    ],
)
def test_bucket_key(limit: RateLimit, key: str, partition: int, expected: str) -> None:
    assert bucket_key(limit, key=key, partition=partition) == expected


_NAMES = st.sampled_from(["per_user", "per_user_1", "stripe_api", "a"])


@settings(database=None)
@given(
    first=st.tuples(_NAMES, st.sampled_from(["key", "provider"]), st.text(max_size=8),
                    st.integers(0, 64)),
    second=st.tuples(_NAMES, st.sampled_from(["key", "provider"]), st.text(max_size=8),
                     st.integers(0, 64)),
)  # fmt: skip
def test_bucket_keys_are_unique_across_partitions(
    first: tuple[str, str, str, int], second: tuple[str, str, str, int]
) -> None:
    def key_of(name: str, scope: str, key: str, partition: int) -> tuple[str, object]:
        limit = rate_limit(name=name, scope=scope, provider="p" if scope == "provider" else None)
        identity = (name, scope, key) if scope == "key" else (name, scope, partition)
        return bucket_key(limit, key=key, partition=partition), identity

    first_key, first_identity = key_of(*first)
    second_key, second_identity = key_of(*second)
    assert (first_key == second_key) == (first_identity == second_identity)


# --- decide -------------------------------------------------------------------------------------


def test_decide_allows_then_defers_with_the_exact_wait() -> None:
    limit = rate_limit(limit=2, per="1s", max_defer="10m")
    state, decision = decide(limit, None, partitions=1, now_ms=NOW_MS)
    assert decision == Allow()
    state, decision = decide(limit, state, partitions=1, now_ms=NOW_MS)
    assert decision == Allow()
    refused_state, decision = decide(limit, state, partitions=1, now_ms=NOW_MS + 100)
    assert isinstance(decision, Defer)
    assert (decision.wait_ms, decision.max_defer_ms) == (400, 600_000)  # 0.2 of 1 token there
    assert "per_user" in decision.reason
    assert refused_state.tokens == pytest.approx(0.2)  # refilled, not consumed
    _, decision = decide(limit, refused_state, partitions=1, now_ms=NOW_MS + 500)
    assert decision == Allow()


def test_decide_rejects_when_the_family_rejects() -> None:
    limit = rate_limit(limit=1, per="1s", on_exceed="reject")
    state, _ = decide(limit, None, partitions=1, now_ms=NOW_MS)
    new_state, decision = decide(limit, state, partitions=1, now_ms=NOW_MS)
    assert isinstance(decision, Reject)
    assert "per_user" in decision.reason
    assert new_state.tokens == 0.0


def test_decide_splits_a_provider_limit_across_partitions() -> None:
    allowed = 0
    state: BucketState | None = None
    for _ in range(100):
        state, decision = decide(PROVIDER, state, partitions=4, now_ms=NOW_MS)
        allowed += decision == Allow()
    assert allowed == 25  # this partition's quarter of the burst


# --- properties -----------------------------------------------------------------------------


@st.composite
def bucket_cases(draw: st.DrawFn) -> tuple[int, int, int, list[int]]:
    """(capacity, limit, per_ms, request times at non-decreasing ms)."""
    capacity = draw(st.integers(1, 20))
    limit = draw(st.integers(1, 50))
    per_ms = draw(st.integers(1, 5_000))
    gaps_ms = draw(st.lists(st.integers(0, 400), min_size=1, max_size=200))
    times_ms = [NOW_MS + sum(gaps_ms[: i + 1]) for i in range(len(gaps_ms))]
    return capacity, limit, per_ms, times_ms


@settings(database=None, max_examples=300, deadline=None)
@given(bucket_cases())
def test_no_window_of_per_ms_allows_more_than_capacity_plus_limit(
    case: tuple[int, int, int, list[int]],
) -> None:
    capacity, limit, per_ms, times_ms = case
    state: BucketState | None = None
    allowed_ms: list[int] = []
    for now_ms in times_ms:
        state, wait_ms = take(state, capacity=capacity, refill_per_ms=limit / per_ms, now_ms=now_ms)
        if wait_ms == 0:
            allowed_ms.append(now_ms)
    for start_ms in allowed_ms:
        in_window = sum(1 for t in allowed_ms if start_ms <= t <= start_ms + per_ms)
        assert in_window <= capacity + limit


@st.composite
def refused_cases(draw: st.DrawFn) -> tuple[int, float, float, float]:
    """(capacity, refill_per_ms, cost <= capacity, tokens < cost): a bucket that refuses."""
    capacity = draw(st.integers(1, 20))
    refill_per_ms = draw(st.floats(1e-7, 10))
    cost = capacity * draw(st.floats(0.001, 1))
    tokens = cost * draw(st.floats(0, 0.999))
    return capacity, refill_per_ms, cost, tokens


@settings(database=None, max_examples=500, deadline=None)
@given(refused_cases())
def test_a_refused_request_is_allowed_after_exactly_wait_ms(
    case: tuple[int, float, float, float],
) -> None:
    capacity, refill_per_ms, cost, tokens = case

    def take_at(state: BucketState, now_ms: int) -> tuple[BucketState, int]:
        return take(state, capacity=capacity, refill_per_ms=refill_per_ms, now_ms=now_ms, cost=cost)

    refused, wait_ms = take_at(BucketState(tokens, NOW_MS), NOW_MS)
    assert wait_ms > 0
    _, early_wait_ms = take_at(refused, NOW_MS + wait_ms - 1)
    _, due_wait_ms = take_at(refused, NOW_MS + wait_ms)
    assert early_wait_ms > 0  # the wait is not longer than needed
    assert due_wait_ms == 0


@settings(database=None, deadline=None)
@given(
    times_ms=st.lists(st.integers(NOW_MS - 10**6, NOW_MS + 10**6), min_size=1, max_size=50),
    capacity=st.integers(1, 10),
)
def test_a_clock_jumping_around_never_breaks_the_bucket(times_ms: list[int], capacity: int) -> None:
    state: BucketState | None = None
    for now_ms in times_ms:
        state, wait_ms = take(state, capacity=capacity, refill_per_ms=0.001, now_ms=now_ms)
        assert 0.0 <= state.tokens <= capacity
        assert wait_ms >= 0


def test_reservations_queue_one_refill_interval_apart() -> None:
    state, waits = None, []
    for _ in range(6):  # capacity 2, one token per 100 ms
        state, wait = reserve(state, capacity=2, refill_per_ms=0.01, now_ms=NOW_MS)
        waits.append(wait)
    assert waits == [0, 0, 100, 200, 300, 400]
    assert state.tokens == pytest.approx(-4.0)
    # take() at the last reservation's due time finds the debt paid and no token left
    _, wait = take(state, capacity=2, refill_per_ms=0.01, now_ms=NOW_MS + 400)
    assert wait == 100
    _, wait = take(state, capacity=2, refill_per_ms=0.01, now_ms=NOW_MS + 500)
    assert wait == 0
