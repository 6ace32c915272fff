"""core.policies: the values the core decides with (no catalog, no pydantic)."""

from __future__ import annotations

import dataclasses

import pytest

from streams.core.policies import CircuitBreakerPolicy, RateLimit, RetryPolicy

LADDER = RetryPolicy(
    delays_ms=(30_000, 1_000, 10_000, 1_000), jitter=0.1, max_attempts=6, retention_ms=86_400_000
)


@pytest.mark.parametrize(
    ("attempt", "delay_ms"),
    [(2, 30_000), (3, 1_000), (4, 10_000), (5, 1_000), (6, 1_000), (50, 1_000)],
)
def test_delay_ms_for_walks_the_ladder_and_repeats_the_last(attempt: int, delay_ms: int) -> None:
    assert LADDER.delay_ms_for(attempt) == delay_ms


@pytest.mark.parametrize("attempt", [1, 0, -3])
def test_the_first_run_has_no_delay(attempt: int) -> None:
    with pytest.raises(ValueError, match="first run is immediate"):
        LADDER.delay_ms_for(attempt)


def test_tier_delays_are_distinct_and_ascending() -> None:
    assert LADDER.tier_delays_ms == [1_000, 10_000, 30_000]


@pytest.mark.parametrize(("burst", "capacity"), [(None, 50), (80, 80), (1, 1)])
def test_a_rate_limit_capacity_is_its_burst_else_its_limit(
    burst: int | None, capacity: int
) -> None:
    limit = RateLimit("per_user", "key", limit=50, per_ms=3_600_000, burst=burst)
    assert limit.capacity == capacity


def test_policies_are_frozen_values() -> None:
    policy = CircuitBreakerPolicy(failure_threshold=2, cooldown_ms=5_000)
    assert policy == CircuitBreakerPolicy(2, 5_000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.cooldown_ms = 1  # type: ignore[misc]
    assert hash(LADDER) == hash(dataclasses.replace(LADDER))
