"""breaker: every transition of the circuit breaker, on a fake ms clock."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from streams.catalog import CircuitBreakerSpec
from streams.core.breaker import CLOSED, HALF_OPEN, OPEN, BreakerRegistry, CircuitBreaker
from streams.core.policies import CircuitBreakerPolicy

START_MS = 1_700_000_000_000
THRESHOLD = 3
COOLDOWN_MS = 1_000


@dataclass
class FakeClock:
    now_ms: int = START_MS

    def __call__(self) -> int:
        return self.now_ms


Transition = tuple[str, str, str]  # (name, from state, to state)
StateChange = tuple[str, str]  # (from state, to state)

# A scenario is a list of steps, each checked as it runs:
#   ("fail",) ("ok",) ("release",)    report an outcome / release the probe
#   ("advance", ms)                   move the fake clock (negative: backwards)
#   ("check", expected_wait_ms)       check() must return exactly that
#   ("state", expected_state)
Step = tuple[str] | tuple[str, int] | tuple[str, str]

FAIL, OK, RELEASE = ("fail",), ("ok",), ("release",)
TRIP: list[Step] = [FAIL, FAIL, FAIL, ("state", OPEN)]
PROBING: list[Step] = [*TRIP, ("advance", COOLDOWN_MS), ("check", 0), ("state", HALF_OPEN)]

SCENARIOS: dict[str, tuple[list[Step], list[StateChange]]] = {
    "below the threshold stays closed": (
        [FAIL, FAIL, ("check", 0), ("state", CLOSED)],
        [],
    ),
    "a success resets the consecutive count": (
        [FAIL, FAIL, OK, FAIL, FAIL, ("state", CLOSED), FAIL, ("state", OPEN)],
        [(CLOSED, OPEN)],
    ),
    "open: callers wait out the cool-down": (
        [*TRIP, ("check", 1_000), ("advance", 400), ("check", 600), ("advance", 599),
         ("check", 1), ("state", OPEN)],
        [(CLOSED, OPEN)],
    ),
    "after the cool-down exactly one probe goes through": (
        [*PROBING, ("check", 1_000), ("advance", 300), ("check", 700), ("check", 700)],
        [(CLOSED, OPEN), (OPEN, HALF_OPEN)],
    ),
    "the probe's success closes": (
        [*PROBING, OK, ("state", CLOSED), ("check", 0), ("check", 0)],
        [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)],
    ),
    "after closing, the count starts from zero": (
        [*PROBING, OK, FAIL, FAIL, ("state", CLOSED), FAIL, ("state", OPEN)],
        [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED), (CLOSED, OPEN)],
    ),
    "the probe's failure re-opens with a new cool-down": (
        [*PROBING, ("advance", 200), FAIL, ("state", OPEN), ("check", 1_000),
         ("advance", 999), ("check", 1), ("advance", 1), ("check", 0), ("state", HALF_OPEN)],
        [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN), (OPEN, HALF_OPEN)],
    ),
    "a released (cancelled) probe lets the next call probe": (
        [*PROBING, ("check", 1_000), RELEASE, ("state", HALF_OPEN), ("check", 0),
         ("check", 1_000)],
        [(CLOSED, OPEN), (OPEN, HALF_OPEN)],
    ),
    "a probe that never reports times out": (
        [*PROBING, ("advance", 999), ("check", 1), ("advance", 1), ("check", 0),
         ("check", 1_000), ("state", HALF_OPEN)],
        [(CLOSED, OPEN), (OPEN, HALF_OPEN)],
    ),
    "failures while open do not extend the cool-down": (
        [*TRIP, ("advance", 500), FAIL, FAIL, ("check", 500), ("advance", 500), ("check", 0)],
        [(CLOSED, OPEN), (OPEN, HALF_OPEN)],
    ),
    "a late success while open does not close": (
        [*TRIP, OK, ("state", OPEN), ("check", 1_000)],
        [(CLOSED, OPEN)],
    ),
    "a clock that went back does not stretch the cool-down": (
        [*TRIP, ("advance", -60_000), ("check", 1_000), ("state", OPEN)],
        [(CLOSED, OPEN)],
    ),
    "a clock that went back does not stretch the probe wait": (
        [*PROBING, ("advance", -60_000), ("check", 1_000)],
        [(CLOSED, OPEN), (OPEN, HALF_OPEN)],
    ),
    "release and late outcomes while closed change nothing": (
        [RELEASE, OK, ("state", CLOSED), ("check", 0)],
        [],
    ),
}  # fmt: skip


@pytest.mark.parametrize(("steps", "transitions"), SCENARIOS.values(), ids=SCENARIOS.keys())
def test_breaker_scenarios(steps: list[Step], transitions: list[StateChange]) -> None:
    clock = FakeClock()
    seen: list[Transition] = []
    breaker = CircuitBreaker(
        "smtp:relay:587",
        failure_threshold=THRESHOLD,
        cooldown_ms=COOLDOWN_MS,
        clock=clock,
        on_transition=lambda name, old, new: seen.append((name, old, new)),
    )
    for index, step in enumerate(steps):
        _run(breaker, clock, step, f"step {index} {step}")
    assert seen == [("smtp:relay:587", old, new) for old, new in transitions]


def _run(breaker: CircuitBreaker, clock: FakeClock, step: Step, where: str) -> None:
    match step:
        case ("fail",):
            breaker.record_failure()
        case ("ok",):
            breaker.record_success()
        case ("release",):
            breaker.release_probe()
        case ("advance", int(delta_ms)):
            clock.now_ms += delta_ms
        case ("check", int(wait_ms)):
            assert breaker.check() == wait_ms, where
        case ("state", str(state)):
            assert breaker.state == state, where
        case _:
            raise AssertionError(f"unknown step {step}")


@pytest.mark.parametrize(
    ("threshold", "cooldown_ms", "probe_timeout_ms", "steps"),
    [
        (1, 1_000, None, [FAIL, ("state", OPEN), ("check", 1_000)]),  # one failure opens
        (2, 0, None, [FAIL, FAIL, ("check", 0), ("state", HALF_OPEN), ("check", 1)]),
        (  # a probe timeout longer than the cool-down
            1, 1_000, 5_000,
            [FAIL, ("advance", 1_000), ("check", 0), ("check", 5_000), ("advance", 4_999),
             ("check", 1), ("advance", 1), ("check", 0)],
        ),
    ],
)  # fmt: skip
def test_breaker_settings(
    threshold: int, cooldown_ms: int, probe_timeout_ms: int | None, steps: list[Step]
) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        "x",
        failure_threshold=threshold,
        cooldown_ms=cooldown_ms,
        clock=clock,
        probe_timeout_ms=probe_timeout_ms,
    )
    for index, step in enumerate(steps):
        _run(breaker, clock, step, f"step {index} {step}")


@pytest.mark.parametrize(
    ("threshold", "cooldown_ms", "probe_timeout_ms"),
    [(0, 1_000, None), (1, -1, None), (1, 1_000, 0)],
)
def test_breaker_rejects_bad_settings(
    threshold: int, cooldown_ms: int, probe_timeout_ms: int | None
) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(
            "x",
            failure_threshold=threshold,
            cooldown_ms=cooldown_ms,
            clock=FakeClock(),
            probe_timeout_ms=probe_timeout_ms,
        )


def test_consecutive_failures_are_counted_while_closed() -> None:
    breaker = CircuitBreaker("x", failure_threshold=5, cooldown_ms=1, clock=FakeClock())
    for expected in (1, 2, 3):
        breaker.record_failure()
        assert breaker.consecutive_failures == expected
    breaker.record_success()
    assert breaker.consecutive_failures == 0


# --- registry -------------------------------------------------------------------------------


def test_registry_builds_each_breaker_once_from_its_policy() -> None:
    asked: list[str] = []
    policies = {
        "smtp": CircuitBreakerSpec.model_validate(
            {"failure_threshold": 1, "cooldown": "5s"}
        ).policy(),
        "hook": CircuitBreakerSpec.model_validate(
            {"failure_threshold": 2, "cooldown": "1m"}
        ).policy(),
    }

    def policy_for(name: str) -> CircuitBreakerPolicy:
        asked.append(name)
        return policies[name]

    seen: list[Transition] = []
    clock = FakeClock()
    registry = BreakerRegistry(policy_for, clock, on_transition=lambda *t: seen.append(t))
    smtp = registry.get("smtp")
    assert registry.get("smtp") is smtp
    hook = registry.get("hook")
    assert asked == ["smtp", "hook"]
    assert (smtp.failure_threshold, smtp.cooldown_ms) == (1, 5_000)
    assert (hook.failure_threshold, hook.cooldown_ms) == (2, 60_000)
    smtp.record_failure()
    assert smtp.check() == 5_000
    assert registry.states() == {"smtp": OPEN, "hook": CLOSED}
    assert seen == [("smtp", CLOSED, OPEN)]
