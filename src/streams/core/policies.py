"""The policy values the core decides with: plain frozen dataclasses, units in the names.

``streams.catalog`` validates topics.yaml (pydantic, durations like "30s") and builds these;
the planner, the rate-limit arithmetic and the circuit breaker take them as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class RetryPolicy:
    """The retry ladder: attempt n (n >= 2) waits ``delays_ms[n-2]`` (the last one repeats).

    ``jitter`` is the +/- fraction of a delay; ``max_attempts`` counts the first run.
    """

    delays_ms: tuple[int, ...]
    jitter: float = 0.1
    max_attempts: int = 5
    retention_ms: int = 7 * 86_400_000

    def delay_ms_for(self, attempt: int) -> int:
        """The nominal wait before ``attempt`` (2 = first retry), without jitter."""
        if attempt < 2:
            raise ValueError(f"attempt {attempt} has no delay: the first run is immediate")
        return self.delays_ms[min(attempt - 2, len(self.delays_ms) - 1)]

    @property
    def tier_delays_ms(self) -> list[int]:
        return sorted(set(self.delays_ms))


@dataclass(frozen=True)
class RateLimit:
    """A token bucket: ``limit`` tokens per ``per_ms`` window, refilled continuously.

    ``scope`` "key" keeps one bucket per partition key, "provider" one per ``provider``
    (split across partitions); ``burst`` is the bucket size (default: ``limit``).
    """

    name: str
    scope: Literal["key", "provider"]
    limit: int
    per_ms: int
    provider: str | None = None
    burst: int | None = None
    on_exceed: Literal["defer", "reject"] = "defer"
    max_defer_ms: int = 86_400_000

    @property
    def capacity(self) -> int:
        return self.burst or self.limit


@dataclass(frozen=True)
class CircuitBreakerPolicy:
    """Open after ``failure_threshold`` consecutive failures; probe after ``cooldown_ms``."""

    failure_threshold: int = 5
    cooldown_ms: int = 30_000
