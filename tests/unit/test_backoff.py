"""backoff: jitter bounds and tier selection."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.backoff import jittered_delay_ms, tier_for_delay_ms


def fixed(value: float) -> Callable[[], float]:
    """A frozen ``rand``."""
    return lambda: value


@pytest.mark.parametrize(
    ("delay_ms", "jitter", "rand_value", "expected_ms"),
    [
        (1000, 0.1, 0.5, 1000),  # centre
        (1000, 0.1, 0.0, 900),  # lowest
        (1000, 0.1, 1.0, 1100),  # highest
        (1000, 0.1, 0.75, 1050),
        (1000, 0.0, 0.0, 1000),  # no jitter
        (1000, 0.0, 1.0, 1000),
        (0, 0.5, 0.0, 0),
        (1000, 1.0, 0.0, 0),  # full jitter reaches zero, never below
        (1000, 2.0, 0.0, 0),  # more than full jitter is clamped at zero
        (1000, 2.0, 1.0, 3000),
        (3, 0.5, 1.0, 4),  # 4.5 would exceed the bound after rounding: floor(4.5) = 4
        (3, 0.5, 0.0, 2),  # 1.5 rounds to 2 = ceil(1.5)
    ],
)
def test_jittered_delay_table(
    delay_ms: int, jitter: float, rand_value: float, expected_ms: int
) -> None:
    assert jittered_delay_ms(delay_ms, jitter, fixed(rand_value)) == expected_ms


@pytest.mark.parametrize(
    ("delay_ms", "jitter", "rand_value"),
    [(-1, 0.1, 0.5), (1000, -0.1, 0.5), (1000, 0.1, 1.5), (1000, 0.1, -0.01)],
)
def test_jittered_delay_rejects_bad_input(delay_ms: int, jitter: float, rand_value: float) -> None:
    with pytest.raises(ValueError):
        jittered_delay_ms(delay_ms, jitter, fixed(rand_value))


@settings(database=None)
@given(
    delay_ms=st.integers(min_value=0, max_value=10**9),
    jitter=st.floats(min_value=0.0, max_value=1.0),
    rand_value=st.floats(min_value=0.0, max_value=1.0),
)
def test_jittered_delay_stays_within_bounds(
    delay_ms: int, jitter: float, rand_value: float
) -> None:
    result_ms = jittered_delay_ms(delay_ms, jitter, fixed(rand_value))
    spread_ms = jitter * delay_ms
    assert result_ms >= 0
    assert math.ceil(delay_ms - spread_ms) <= result_ms <= math.floor(delay_ms + spread_ms)


@settings(database=None)
@given(
    delay_ms=st.integers(min_value=0, max_value=10**9),
    jitter=st.floats(min_value=0.0, max_value=1.0),
    low=st.floats(min_value=0.0, max_value=1.0),
    high=st.floats(min_value=0.0, max_value=1.0),
)
def test_jittered_delay_is_monotonic_in_rand(
    delay_ms: int, jitter: float, low: float, high: float
) -> None:
    low, high = sorted((low, high))
    assert jittered_delay_ms(delay_ms, jitter, fixed(low)) <= jittered_delay_ms(
        delay_ms, jitter, fixed(high)
    )


TIERS_MS = [1_000, 10_000, 60_000]


@pytest.mark.parametrize(
    ("tiers_ms", "wait_ms", "expected_ms"),
    [
        (TIERS_MS, 0, 1_000),
        (TIERS_MS, 1, 1_000),
        (TIERS_MS, 1_000, 1_000),  # exact fit
        (TIERS_MS, 1_001, 10_000),
        (TIERS_MS, 10_000, 10_000),
        (TIERS_MS, 59_999, 60_000),
        (TIERS_MS, 60_001, 60_000),  # longer than every tier: the largest
        (TIERS_MS, 86_400_000, 60_000),
        ([60_000, 1_000, 10_000], 5_000, 10_000),  # unsorted input
        ([30_000], 1, 30_000),
        ([30_000], 90_000, 30_000),
    ],
)
def test_tier_for_delay_table(tiers_ms: list[int], wait_ms: int, expected_ms: int) -> None:
    assert tier_for_delay_ms(tiers_ms, wait_ms) == expected_ms


def test_tier_for_delay_rejects_empty_tiers() -> None:
    with pytest.raises(ValueError):
        tier_for_delay_ms([], 1_000)


@settings(database=None)
@given(
    tiers_ms=st.lists(st.integers(min_value=1, max_value=10**8), min_size=1, max_size=8),
    wait_ms=st.integers(min_value=0, max_value=10**9),
)
def test_tier_fits_the_wait_when_any_tier_can(tiers_ms: list[int], wait_ms: int) -> None:
    tier_ms = tier_for_delay_ms(tiers_ms, wait_ms)
    assert tier_ms in tiers_ms
    if wait_ms <= max(tiers_ms):
        assert tier_ms >= wait_ms
        assert all(t < wait_ms or t >= tier_ms for t in tiers_ms)  # the smallest that fits
    else:
        assert tier_ms == max(tiers_ms)
