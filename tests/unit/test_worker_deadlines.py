"""Deadlines: one timer while anything is armed; expiry cancels exactly the late tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from tests.unit.worker_fakes import settle, until

from streams.worker.deadlines import Deadlines, Token


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


async def _armed(deadlines: Deadlines, timeout_s: float, tokens: list[Token]) -> None:
    tokens.append(deadlines.arm(timeout_s))
    await asyncio.Event().wait()


def _start(deadlines: Deadlines, timeouts_s: list[float]) -> tuple[list[Any], list[Token]]:
    tokens: list[Token] = []
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(_armed(deadlines, t, tokens)) for t in timeouts_s]
    return tasks, tokens


async def _finish(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_expire_cancels_exactly_the_tasks_past_their_deadline() -> None:
    clock = FakeClock()
    d = Deadlines(tick_s=3600, clock_s=clock)  # the timer never fires here: expire by hand
    tasks, tokens = _start(d, [1.0, 2.0, 5.0])
    await until(lambda: len(tokens) == 3)
    by_task = {t.task: t for t in tokens}
    assert d.expire() == 0
    clock.now_s += 2.0  # exactly the second deadline: it is due
    assert d.expire() == 2
    await settle()
    assert [t.cancelled() for t in tasks] == [True, True, False]
    assert [by_task[t].expired for t in tasks] == [True, True, False]
    assert d.expire() == 0  # each deadline fires once
    clock.now_s += 3.0
    assert d.expire() == 1
    await settle()
    assert tasks[2].cancelled() and by_task[tasks[2]].expired


async def test_a_disarmed_deadline_never_fires() -> None:
    clock = FakeClock()
    d = Deadlines(tick_s=3600, clock_s=clock)
    tasks, tokens = _start(d, [1.0, 1.0])
    await until(lambda: len(tokens) == 2)
    d.disarm(tokens[0])
    d.disarm(tokens[0])  # twice is harmless
    clock.now_s += 10.0
    assert d.expire() == 1
    await settle()
    survivor = next(t for t in tasks if t is tokens[0].task)
    assert not survivor.done()
    assert not tokens[0].expired and tokens[1].expired
    await _finish(tasks)


class TimerWatch:
    """The deadlines' timers that are scheduled and neither fired nor cancelled (wraps
    ``call_later``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, deadlines: Deadlines) -> None:
        self.fired = 0
        self._timers: list[tuple[asyncio.TimerHandle, list[bool]]] = []
        loop = asyncio.get_running_loop()
        real = loop.call_later

        def call_later(delay: float, callback: Callable[..., Any], *args: Any, **kw: Any) -> Any:
            if callback != deadlines._tick:
                return real(delay, callback, *args, **kw)
            done = [False]

            def fired() -> None:
                done[0] = True
                self.fired += 1
                callback(*args)

            handle = real(delay, fired, **kw)
            self._timers.append((handle, done))
            return handle

        monkeypatch.setattr(loop, "call_later", call_later)

    @property
    def pending(self) -> int:
        return sum(1 for handle, done in self._timers if not done[0] and not handle.cancelled())


async def test_the_timer_exists_only_while_something_is_armed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    d = Deadlines(tick_s=0.005, clock_s=clock)
    watch = TimerWatch(monkeypatch, d)
    tasks, tokens = _start(d, [1.0, 1.0])
    await until(lambda: len(tokens) == 2)
    assert watch.pending == 1  # one timer for every armed deadline
    await until(lambda: watch.fired >= 2)  # it ticks while they are armed
    assert watch.pending == 1
    for token in tokens:
        d.disarm(token)
    await until(lambda: watch.pending == 0)  # the next tick finds nothing and stops
    fired = watch.fired
    await _finish(tasks)
    assert watch.fired == fired and watch.pending == 0
    # armed again: a timer again, and the tick does the expiring
    late, late_tokens = _start(d, [1.0])
    await until(lambda: len(late_tokens) == 1)
    assert watch.pending == 1
    clock.now_s += 1.0
    await until(lambda: late[0].done())
    assert late[0].cancelled() and late_tokens[0].expired
    await until(lambda: watch.pending == 0)
