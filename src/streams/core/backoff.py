"""Backoff arithmetic: jitter around a nominal delay, and the tier that fits a wait.

Pure: randomness is injected (``rand`` returns a float in [0, 1), like ``random.random``).
Every duration is an integer number of milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence


def jittered_delay_ms(delay_ms: int, jitter: float, rand: Callable[[], float]) -> int:
    """``delay_ms`` moved uniformly within +/- ``jitter * delay_ms``; never negative.

    ``jitter`` is a fraction (0.1 = +/-10 %). The result always lies in
    [ceil(delay_ms * (1 - jitter)), floor(delay_ms * (1 + jitter))], clamped at 0.
    Raises ValueError when ``delay_ms`` or ``jitter`` is negative, or ``rand()`` is
    outside [0, 1].
    """
    if delay_ms < 0:
        raise ValueError(f"delay_ms must be >= 0, got {delay_ms}")
    if jitter < 0:
        raise ValueError(f"jitter must be >= 0, got {jitter}")
    sample = rand()
    if not 0.0 <= sample <= 1.0:
        raise ValueError(f"rand() must return a value in [0, 1], got {sample}")
    spread_ms = jitter * delay_ms
    low_ms = max(0, math.ceil(delay_ms - spread_ms))
    high_ms = math.floor(delay_ms + spread_ms)
    wanted_ms = round(delay_ms + (2.0 * sample - 1.0) * spread_ms)
    return min(high_ms, max(low_ms, wanted_ms))


def tier_for_delay_ms(tier_delays_ms: Sequence[int], wait_ms: int) -> int:
    """The smallest tier delay >= ``wait_ms``, else the largest tier (all in ms).

    Used for deferrals: the record goes to a tier whose processor expects waits at least
    this long. Raises ValueError when ``tier_delays_ms`` is empty.
    """
    if not tier_delays_ms:
        raise ValueError("tier_delays_ms must not be empty")
    fitting = [tier_ms for tier_ms in tier_delays_ms if tier_ms >= wait_ms]
    return min(fitting) if fitting else max(tier_delays_ms)
