"""Breakers.guard: the circuit breaker as the handlers' ``ctx.dependency`` context manager."""

from __future__ import annotations

import asyncio

import pytest
from tests.unit.worker_fakes import Clock, new_metrics, sample, settle

from streams.catalog import CircuitBreakerSpec
from streams.core.policies import CircuitBreakerPolicy
from streams.errors import Deferred, Permanent, Rejected, Retryable, RetryAfter
from streams.worker.breakers import Breakers

DEP = "smtp:relay.example:587"
POLICY = CircuitBreakerSpec.model_validate({"failure_threshold": 3, "cooldown": "10s"}).policy()


class Rig:
    def __init__(self) -> None:
        self.clock = Clock()
        self.metrics = new_metrics()
        self.asked: list[str] = []
        self.breakers = Breakers(self._policy, self.metrics, self.clock)
        self.entered = 0

    def _policy(self, name: str) -> CircuitBreakerPolicy:
        self.asked.append(name)
        return POLICY

    async def call(self, error: BaseException | None = None, name: str = DEP) -> None:
        async with self.breakers.guard(name):
            self.entered += 1
            if error is not None:
                raise error

    async def fail(self, times: int, error: Exception | None = None) -> None:
        for _ in range(times):
            with pytest.raises(type(error) if error else Retryable):
                await self.call(error or Retryable("connection refused"))

    def state(self, name: str = DEP) -> str:
        return self.breakers.registry.get(name).state

    def transitions(self, from_state: str, to_state: str, name: str = DEP) -> float:
        return sample(
            self.metrics,
            "streams_circuit_transitions_total",
            dependency=name,
            from_state=from_state,
            to_state=to_state,
        )

    def gauge(self, name: str = DEP) -> float:
        return sample(self.metrics, "streams_circuit_state", dependency=name)


async def test_opens_after_n_consecutive_failures_and_defers_without_entering() -> None:
    r = Rig()
    await r.fail(2)
    assert r.state() == "closed"
    await r.fail(1, RuntimeError("socket closed"))  # any exception counts
    assert r.state() == "open"
    entered = r.entered
    with pytest.raises(Deferred) as info:
        await r.call()
    assert r.entered == entered  # the body (the dependency call) never ran
    assert info.value.delay_s == pytest.approx(10.0)
    assert DEP in info.value.reason
    r.clock.advance(4_000)
    with pytest.raises(Deferred) as later:
        await r.call()
    assert later.value.delay_s == pytest.approx(6.0)
    assert r.transitions("closed", "open") == 1
    assert r.gauge() == 2


async def test_a_success_resets_the_consecutive_count() -> None:
    r = Rig()
    await r.fail(2)
    await r.call()
    await r.fail(2)
    assert r.state() == "closed"
    await r.fail(1)
    assert r.state() == "open"


async def test_half_opens_after_the_cooldown_and_closes_on_success() -> None:
    r = Rig()
    await r.fail(3)
    r.clock.advance(10_000)
    probe_inside = asyncio.Event()
    probe_done = asyncio.Event()

    async def probe() -> None:
        async with r.breakers.guard(DEP):
            probe_inside.set()
            await probe_done.wait()

    task = asyncio.get_running_loop().create_task(probe())
    await probe_inside.wait()
    assert r.state() == "half_open"
    assert r.gauge() == 1
    with pytest.raises(Deferred):  # one probe at a time
        await r.call()
    probe_done.set()
    await task
    assert r.state() == "closed"
    assert r.gauge() == 0
    await r.call()  # closed again: calls proceed
    assert r.transitions("closed", "open") == 1
    assert r.transitions("open", "half_open") == 1
    assert r.transitions("half_open", "closed") == 1


async def test_a_failed_probe_reopens_for_a_full_cooldown() -> None:
    r = Rig()
    await r.fail(3)
    r.clock.advance(10_000)
    await r.fail(1)  # the probe fails
    assert r.state() == "open"
    with pytest.raises(Deferred) as info:
        await r.call()
    assert info.value.delay_s == pytest.approx(10.0)
    assert r.transitions("half_open", "open") == 1
    assert r.transitions("closed", "open") == 1


@pytest.mark.parametrize("error", [Permanent("550 no such user"), Rejected("policy")])
async def test_a_deliberate_non_retriable_outcome_is_not_a_failure(error: Exception) -> None:
    r = Rig()
    for _ in range(5):
        with pytest.raises(type(error)):  # it still propagates to the processor
            await r.call(error)
    assert r.state() == "closed"
    await r.fail(2)
    with pytest.raises(type(error)):
        await r.call(error)  # the dependency answered: the count starts again
    await r.fail(2)
    assert r.state() == "closed"


async def test_retry_after_counts_as_a_failure() -> None:
    r = Rig()
    await r.fail(3, RetryAfter(5.0, "429"))
    assert r.state() == "open"


async def test_a_cancelled_probe_frees_the_probe_slot() -> None:
    r = Rig()
    await r.fail(3)
    r.clock.advance(10_000)
    inside = asyncio.Event()

    async def hanging_probe() -> None:
        async with r.breakers.guard(DEP):
            inside.set()
            await asyncio.sleep(10)

    task = asyncio.get_running_loop().create_task(hanging_probe())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert r.state() == "half_open"
    await r.call()  # the next call may probe at once
    assert r.state() == "closed"


async def test_breakers_are_per_dependency_and_created_once() -> None:
    r = Rig()
    await r.fail(3)
    await r.call(name="http:hooks.example:443")
    assert r.state() == "open"
    assert r.state("http:hooks.example:443") == "closed"
    await settle()
    assert sorted(set(r.asked)) == sorted({DEP, "http:hooks.example:443"})
    assert r.asked.count(DEP) == 1


async def test_the_gauge_reads_closed_once_a_dependency_is_used() -> None:
    r = Rig()
    await r.call()
    assert r.metrics.registry.get_sample_value("streams_circuit_state", {"dependency": DEP}) == 0


async def test_a_deferral_from_a_nested_guard_is_not_a_failure_of_the_outer_one() -> None:
    r = Rig()
    await r.fail(3)  # DEP is open
    outer = "dns:resolver:53"
    for _ in range(3):
        with pytest.raises(Deferred):
            async with r.breakers.guard(outer), r.breakers.guard(DEP):
                pass
    assert r.state(outer) == "closed"
