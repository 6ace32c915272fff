"""The dunning planner (pure): what follows a failed subscription renewal.

The schedule is configuration (``subscription_dunning_delays``, default ``1d,3d,7d``):
after the first charge of a period fails, retry ``delays[0]`` after that failure; after
retry *n* fails, retry ``delays[n]`` after it; when the last retry fails, cancel. Every
step notifies the customer (the job does; this module only decides). Time comes from the
caller (``failed_at_ms``, ``now_ms``): no clock is read here.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_DELAYS_S = (86_400.0, 3 * 86_400.0, 7 * 86_400.0)
_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}


@dataclass(frozen=True)
class RetryAt:
    """Charge again as dunning step ``step`` (1 = first retry) not before ``due_at_ms``."""

    step: int
    due_at_ms: int


@dataclass(frozen=True)
class Cancel:
    """Give up: cancel the subscription."""

    reason: str


def parse_delays(text: str) -> tuple[float, ...]:
    """``"1d,3d,7d"`` -> seconds; ValueError names the bad item."""
    out: list[float] = []
    for i, raw in enumerate(part.strip() for part in text.split(",")):
        unit = next((u for u in ("ms", "s", "m", "h", "d") if raw.endswith(u)), None)
        number = raw[: -len(unit)] if unit else raw
        try:
            value = float(number) * (_UNITS_S[unit] if unit else 1.0)
        except ValueError:
            raise ValueError(f"dunning delays[{i}]: {raw!r} is not a duration like 1d") from None
        if not value > 0:
            raise ValueError(f"dunning delays[{i}]: {raw!r} must be > 0")
        out.append(value)
    if not out:
        raise ValueError("dunning delays: give at least one delay")
    return tuple(out)


def after_failure(step: int, failed_at_ms: int, delays_s: tuple[float, ...]) -> RetryAt | Cancel:
    """What follows the failure of dunning step ``step`` (0 = the period's first charge)."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step >= len(delays_s):
        return Cancel(f"renewal failed {step + 1} times; dunning schedule exhausted")
    return RetryAt(step + 1, failed_at_ms + round(delays_s[step] * 1000))


def wait_ms(due_at_ms: int | None, now_ms: int) -> int:
    """How long a step due at ``due_at_ms`` must still wait (0 = due)."""
    return 0 if due_at_ms is None else max(0, due_at_ms - now_ms)
