"""Circuit breakers: closed -> open -> half_open -> closed, on an injected ms clock.

Pure state machines (no IO, no asyncio): the worker's dependency guard calls ``check()``
before a call to a dependency, defers the event when it returns > 0, and reports the
outcome with ``record_success()`` / ``record_failure()``, or ``release_probe()`` when the
call ended without an outcome (cancelled). One event loop drives them; not thread-safe.
"""

from __future__ import annotations

from collections.abc import Callable

from streams.core.policies import CircuitBreakerPolicy

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"

Clock = Callable[[], int]  # ms; monotonic is best, backwards steps are tolerated
OnTransition = Callable[[str, str, str], None]  # (breaker name, from state, to state)


class CircuitBreaker:
    """One dependency's breaker.

    closed: every call proceeds; ``failure_threshold`` consecutive failures open it.
    open: calls wait until ``cooldown_ms`` after opening, then it half-opens.
    half_open: exactly one probe proceeds; its success closes, its failure re-opens with
    a new cool-down. A probe that reports nothing for ``probe_timeout_ms`` (default:
    ``cooldown_ms``) or is released frees the slot for a new probe, so a cancelled probe
    cannot wedge the breaker.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int,
        cooldown_ms: int,
        clock: Clock,
        on_transition: OnTransition | None = None,
        probe_timeout_ms: int | None = None,
    ) -> None:
        """Raises ValueError when failure_threshold < 1 or a duration is negative."""
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if cooldown_ms < 0:
            raise ValueError(f"cooldown_ms must be >= 0, got {cooldown_ms}")
        if probe_timeout_ms is not None and probe_timeout_ms < 1:
            raise ValueError(f"probe_timeout_ms must be >= 1, got {probe_timeout_ms}")
        self.name = name
        self.failure_threshold = failure_threshold
        self.cooldown_ms = cooldown_ms
        self.probe_timeout_ms = (
            max(1, cooldown_ms) if probe_timeout_ms is None else probe_timeout_ms
        )
        self._clock = clock
        self._on_transition = on_transition
        self._state = CLOSED
        self._failures = 0
        self._opened_at_ms = 0
        self._probe_started_at_ms: int | None = None

    @property
    def state(self) -> str:
        """closed | open | half_open, as of the last call (open turns half_open in check())."""
        return self._state

    @property
    def consecutive_failures(self) -> int:
        """Failures in a row while closed."""
        return self._failures

    def check(self) -> int:
        """0 when a call may proceed now, else the ms to wait before asking again."""
        now_ms = self._clock()
        if self._state == OPEN:
            remaining_ms = _remaining_ms(self._opened_at_ms, self.cooldown_ms, now_ms)
            if remaining_ms > 0:
                return remaining_ms
            self._transition(HALF_OPEN)
        if self._state == HALF_OPEN:
            return self._check_half_open(now_ms)
        return 0

    def _check_half_open(self, now_ms: int) -> int:
        started_ms = self._probe_started_at_ms
        if started_ms is not None:
            remaining_ms = _remaining_ms(started_ms, self.probe_timeout_ms, now_ms)
            if remaining_ms > 0:
                return remaining_ms
        self._probe_started_at_ms = now_ms  # no probe, or it timed out: this call probes
        return 0

    def record_success(self) -> None:
        """A call succeeded: reset the failure count; a half-open breaker closes."""
        self._failures = 0
        if self._state == HALF_OPEN:
            self._probe_started_at_ms = None
            self._transition(CLOSED)

    def record_failure(self) -> None:
        """A call failed: count it while closed (opening at the threshold); re-open a
        half-open breaker with a new cool-down. Ignored while open (a late straggler)."""
        if self._state == CLOSED:
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._open()
        elif self._state == HALF_OPEN:
            self._open()

    def release_probe(self) -> None:
        """The probe ended without an outcome (cancelled): let the next check() probe."""
        if self._state == HALF_OPEN:
            self._probe_started_at_ms = None

    def _open(self) -> None:
        self._opened_at_ms = self._clock()
        self._probe_started_at_ms = None
        self._failures = 0
        self._transition(OPEN)

    def _transition(self, to_state: str) -> None:
        from_state, self._state = self._state, to_state
        if self._on_transition is not None:
            self._on_transition(self.name, from_state, to_state)


def _remaining_ms(started_ms: int, duration_ms: int, now_ms: int) -> int:
    """ms left of ``duration_ms`` begun at ``started_ms``; a clock that went back does not
    stretch it beyond ``duration_ms``."""
    return min(duration_ms, max(0, started_ms + duration_ms - now_ms))


class BreakerRegistry:
    """Breakers by dependency name, created on first use from ``policy_for(name)``.

    Breakers are never evicted: name dependencies by endpoint (host:port), not by URL.
    """

    def __init__(
        self,
        policy_for: Callable[[str], CircuitBreakerPolicy],
        clock: Clock,
        *,
        on_transition: OnTransition | None = None,
    ) -> None:
        self._policy_for = policy_for
        self._clock = clock
        self._on_transition = on_transition
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, name: str) -> CircuitBreaker:
        """The breaker of ``name`` (the same object on every call)."""
        breaker = self._breakers.get(name)
        if breaker is None:
            policy = self._policy_for(name)
            breaker = CircuitBreaker(
                name,
                failure_threshold=policy.failure_threshold,
                cooldown_ms=policy.cooldown_ms,
                clock=self._clock,
                on_transition=self._on_transition,
            )
            self._breakers[name] = breaker
        return breaker

    def states(self) -> dict[str, str]:
        """Every known breaker's state, by name (for health and metrics)."""
        return {name: breaker.state for name, breaker in self._breakers.items()}
