"""The dunning planner with a frozen clock: 1 d, 3 d, 7 d, then cancel."""

from __future__ import annotations

import pytest

from streams.jobs.subscription_dunning import (
    DEFAULT_DELAYS_S,
    Cancel,
    RetryAt,
    after_failure,
    parse_delays,
    wait_ms,
)

NOW_MS = 1_780_000_000_000
DAY_MS = 86_400_000


def test_default_schedule_walks_to_cancellation() -> None:
    delays = parse_delays("1d,3d,7d")
    assert delays == DEFAULT_DELAYS_S
    clock = NOW_MS
    steps: list[RetryAt | Cancel] = []
    step = 0
    while True:
        plan = after_failure(step, clock, delays)
        steps.append(plan)
        if isinstance(plan, Cancel):
            break
        assert wait_ms(plan.due_at_ms, clock) > 0  # not due yet when planned
        clock = plan.due_at_ms  # the frozen clock jumps to the due time; it fails again
        assert wait_ms(plan.due_at_ms, clock) == 0
        step = plan.step
    assert steps[:3] == [
        RetryAt(1, NOW_MS + DAY_MS),
        RetryAt(2, NOW_MS + 4 * DAY_MS),
        RetryAt(3, NOW_MS + 11 * DAY_MS),
    ]
    assert isinstance(steps[3], Cancel)
    assert "failed 4 times" in steps[3].reason


def test_parse_delays_units_and_errors() -> None:
    assert parse_delays("500ms, 2s, 1m, 1h") == (0.5, 2.0, 60.0, 3600.0)
    assert parse_delays("30") == (30.0,)
    with pytest.raises(ValueError, match=r"delays\[1\]: 'soon' is not a duration"):
        parse_delays("1d,soon")
    with pytest.raises(ValueError, match=r"delays\[0\]: '0s' must be > 0"):
        parse_delays("0s")


def test_wait_and_bad_step() -> None:
    assert wait_ms(None, NOW_MS) == 0
    assert wait_ms(NOW_MS + 5, NOW_MS) == 5
    with pytest.raises(ValueError):
        after_failure(-1, NOW_MS, DEFAULT_DELAYS_S)
