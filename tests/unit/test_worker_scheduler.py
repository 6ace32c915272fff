"""DueScheduler: retry-tier records run in due order, never early, inside a bounded window.

Time is fake: the scheduler reads ``FakeTime`` and sleeps on it, and a test moves it only
to the end of the scheduler's own sleep, so "never early, never late" is exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from tests.unit.worker_fakes import NOW_MS, TP, AckingLog, AckLog, make_event, settle

from streams.worker.ordering import Entry, PartitionLog
from streams.worker.scheduler import DueScheduler

TP0, TP1, TP2 = TP("t.audit.retry.1s", 0), TP("t.audit.retry.1s", 1), TP("t.audit.retry.1s", 2)


class FakeTime:
    """A ms clock that moves only when told, and a ``sleep`` that ends when it passes."""

    def __init__(self, now_ms: int = NOW_MS) -> None:
        self.now_ms = now_ms
        self._sleepers: list[tuple[int, asyncio.Future[None]]] = []

    def __call__(self) -> int:
        return self.now_ms

    async def sleep(self, delay_s: float) -> None:
        wake = asyncio.get_running_loop().create_future()
        item = (self.now_ms + round(delay_s * 1000), wake)
        self._sleepers.append(item)
        try:
            await wake
        finally:
            self._sleepers.remove(item)

    def sleeping_until(self) -> list[int]:
        """The end (ms) of every sleep in progress."""
        return sorted(end for end, wake in self._sleepers if not wake.done())

    def advance(self, ms: int) -> None:
        self.now_ms += ms
        for end, wake in self._sleepers:
            if end <= self.now_ms and not wake.done():
                wake.set_result(None)

    async def run_until(self, predicate: Callable[[], bool]) -> None:
        """Let tasks run, moving the clock to the next sleep's end, until ``predicate()``.

        Fails when nothing can make progress (no task runnable, nobody sleeping).
        """
        while True:
            await settle()
            if predicate():
                return
            ends = self.sleeping_until()
            assert ends, "condition not met and nothing is waiting on the clock"
            self.advance(ends[0] - self.now_ms)


class Harness:
    def __init__(
        self,
        *,
        window: int = 100,
        dispatch: Callable[[Entry], Awaitable[None]] | None = None,
    ) -> None:
        self.time = FakeTime()
        self.acks = AckLog()
        self.logs: dict[Any, PartitionLog] = {}
        self.offsets: dict[Any, int] = {}
        self.dispatched: list[tuple[Entry, int, list[Any]]] = []  # entry, ms, resumed so far
        self.paused: list[Any] = []
        self.resumed: list[Any] = []
        self.counts: list[int] = []
        self.scheduler = DueScheduler(
            dispatch or self._dispatch,
            clock_ms=self.time,
            window=window,
            pause=self.paused.append,
            resume=self.resumed.append,
            on_count=self.counts.append,
            sleep=self.time.sleep,
        )
        self.task: asyncio.Task[None] | None = None

    async def _dispatch(self, entry: Entry) -> None:
        self.dispatched.append((entry, self.time(), list(self.resumed)))

    def log(self, tp: Any) -> PartitionLog:
        return self.logs.setdefault(tp, AckingLog(tp))

    def add(self, tp: Any, due_at_ms: int) -> Entry:
        offset = self.offsets.get(tp, 0)
        self.offsets[tp] = offset + 1
        entry = self.log(tp).add(make_event(self.acks, offset, topic=tp.topic, partition=tp[1]))
        self.scheduler.add(entry, due_at_ms)
        return entry

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.scheduler.run())

    def order(self) -> list[Entry]:
        return [entry for entry, _, _ in self.dispatched]

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await self.task


@pytest.fixture
async def harnesses() -> AsyncIterator[list[Harness]]:
    made: list[Harness] = []
    yield made
    for harness in made:
        await harness.stop()


@pytest.fixture
def make(harnesses: list[Harness]) -> Callable[..., Harness]:
    def factory(**kwargs: Any) -> Harness:
        harness = Harness(**kwargs)
        harnesses.append(harness)
        return harness

    return factory


async def test_dispatches_in_due_order_never_early(make: Callable[..., Harness]) -> None:
    s = make()
    now = s.time()
    late = s.add(TP0, now + 200)
    middle = s.add(TP1, now + 120)
    early = s.add(TP0, now + 60)  # added last, due first
    dues = {id(late): now + 200, id(middle): now + 120, id(early): now + 60}
    s.start()
    await s.time.run_until(lambda: len(s.dispatched) == 3)
    assert s.order() == [early, middle, late]
    for entry, at_ms, _ in s.dispatched:
        due = dues[id(entry)]
        assert at_ms >= due, f"dispatched {due - at_ms} ms early"
        assert at_ms == due, f"dispatched {at_ms - due} ms late"  # it slept exactly until due


async def test_an_earlier_record_added_while_waiting_rearms_the_timer(
    make: Callable[..., Harness],
) -> None:
    s = make()
    now = s.time()
    late = s.add(TP0, now + 400)
    s.start()
    await settle()
    assert s.time.sleeping_until() == [now + 400]  # the scheduler sleeps until the 400 ms one
    early = s.add(TP1, now + 80)
    await settle()
    assert s.time.sleeping_until() == [now + 80]  # re-armed: the 400 ms sleep was cancelled
    await s.time.run_until(lambda: len(s.dispatched) == 1)
    entry, at_ms, _ = s.dispatched[0]
    assert entry is early
    assert at_ms == now + 80  # not held until the 400 ms one
    await s.time.run_until(lambda: len(s.dispatched) == 2)
    assert s.order() == [early, late]
    assert s.dispatched[1][1] >= now + 400


async def test_records_already_due_run_at_once_in_due_order(
    make: Callable[..., Harness],
) -> None:
    s = make()
    now = s.time()
    entries = [s.add(TP0, now - 10), s.add(TP0, now - 30), s.add(TP0, now - 20)]
    s.start()
    await settle()  # the clock does not move: "at once"
    assert s.order() == [entries[1], entries[2], entries[0]]
    assert s.time.sleeping_until() == []


async def test_equal_due_times_keep_insertion_order(make: Callable[..., Harness]) -> None:
    s = make()
    now = s.time()
    entries = [s.add(TP0, now) for _ in range(5)]
    s.start()
    await s.time.run_until(lambda: len(s.dispatched) == 5)
    assert s.order() == entries


async def test_nothing_runs_before_its_due_time_on_a_frozen_clock(
    make: Callable[..., Harness],
) -> None:
    s = make()
    entry = s.add(TP0, s.time() + 30)
    s.start()
    await settle()
    assert s.dispatched == []  # the scheduler's clock has not moved
    s.time.advance(29)
    await settle()
    assert s.dispatched == []  # 1 ms before its due time
    s.time.advance(1)
    await settle()
    assert s.order() == [entry]


async def test_window_pauses_a_partition_and_resumes_it_at_half(
    make: Callable[..., Harness],
) -> None:
    s = make(window=4)
    now = s.time()
    for i in range(3):
        s.add(TP0, now - 100 + i)
    assert s.paused == []
    s.add(TP0, now - 97)  # the 4th record of TP0 fills its window
    assert s.paused == [TP0]
    s.add(TP0, now - 96)
    s.add(TP1, now - 50)  # another partition has its own window
    assert s.paused == [TP0]
    s.start()
    await s.time.run_until(lambda: len(s.dispatched) == 6)
    # 5 held; after the 3rd dispatch 2 (= window // 2) are left: resumed right then, once
    resumed_at = [resumed for _, _, resumed in s.dispatched[:5]]
    assert resumed_at == [[], [], [TP0], [TP0], [TP0]]
    assert s.resumed == [TP0]
    assert s.counts[-1] == 0
    assert len(s.scheduler) == 0


async def test_repause_pauses_again_what_is_paused(make: Callable[..., Harness]) -> None:
    s = make(window=2)
    far = s.time() + 60_000
    s.add(TP0, far)
    s.add(TP0, far)
    s.add(TP1, far)
    assert s.paused == [TP0]
    s.scheduler.repause()
    assert s.paused == [TP0, TP0]


async def test_drop_forgets_only_those_partitions(make: Callable[..., Harness]) -> None:
    s = make(window=3)
    now = s.time()
    for tp in (TP0, TP1, TP2):
        for _ in range(3):
            s.add(tp, now + 60)
    assert set(s.paused) == {TP0, TP1, TP2}
    assert s.scheduler.drop({TP0, TP1}) == 6
    assert len(s.scheduler) == 3
    assert s.counts[-1] == 3
    s.start()
    await s.time.run_until(lambda: len(s.scheduler) == 0)
    s.time.advance(60_000)  # long past every due time: a dropped record would have run
    await settle()
    assert {e.log.tp for e in s.order()} == {TP2}  # the dropped records never run
    assert len(s.dispatched) == 3
    assert s.resumed == [TP2]  # nothing resumed for a dropped (revoked) partition
    assert s.acks == []  # nothing here acks: dropped records stay unacked


async def test_drop_resets_the_window_of_a_dropped_partition(
    make: Callable[..., Harness],
) -> None:
    s = make(window=2)
    far = s.time() + 60_000
    s.add(TP0, far)
    s.add(TP0, far)
    assert s.paused == [TP0]
    s.scheduler.drop({TP0})
    s.add(TP0, far)  # reassigned later: counting starts again
    assert s.paused == [TP0]
    s.add(TP0, far)
    assert s.paused == [TP0, TP0]


async def test_entries_of_a_closed_log_are_skipped(make: Callable[..., Harness]) -> None:
    s = make(window=3)
    now = s.time()
    gone = [s.add(TP0, now + 30) for _ in range(3)]
    kept = s.add(TP1, now + 40)
    assert s.paused == [TP0]
    s.log(TP0).close()
    s.start()
    await s.time.run_until(lambda: len(s.scheduler) == 0)
    await settle()
    assert s.order() == [kept]
    assert not set(map(id, gone)) & set(map(id, s.order()))
    assert s.counts[-1] == 0


async def test_dispatch_runs_one_at_a_time_as_backpressure(make: Callable[..., Harness]) -> None:
    gate = asyncio.Event()
    seen: list[int] = []

    async def slow_dispatch(entry: Entry) -> None:
        seen.append(entry.offset)
        await gate.wait()

    s = make(dispatch=slow_dispatch)  # like Lanes.admit waiting for a free slot
    now = s.time()
    s.add(TP0, now - 2)
    s.add(TP0, now - 1)
    s.start()
    await settle()
    assert seen == [0]
    gate.set()
    await s.time.run_until(lambda: seen == [0, 1])


async def test_the_default_sleep_is_real_time() -> None:
    """The worker passes no ``sleep``: records wait on the event loop's real timer."""
    fired_ms: list[float] = []

    async def dispatch(entry: Entry) -> None:
        fired_ms.append(asyncio.get_running_loop().time() * 1000)

    scheduler = DueScheduler(
        dispatch,
        clock_ms=lambda: int(asyncio.get_running_loop().time() * 1000),
        window=10,
        pause=lambda tp: None,
        resume=lambda tp: None,
    )
    loop = asyncio.get_running_loop()
    entry = AckingLog(TP0).add(make_event(AckLog(), 0, topic=TP0.topic))
    due_ms = int(loop.time() * 1000) + 20
    scheduler.add(entry, due_ms)
    task = loop.create_task(scheduler.run())
    try:
        async with asyncio.timeout(5):
            while not fired_ms:
                await asyncio.sleep(0.005)
        assert fired_ms[0] >= due_ms  # never early on the real clock either
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_expedite_makes_the_matched_record_due_now(make: Callable[..., Harness]) -> None:
    harness = make()
    late = harness.add(TP0, NOW_MS + 3_600_000)  # an hour's tier
    other = harness.add(TP1, NOW_MS + 3_600_000)
    harness.start()
    await settle()
    assert harness.scheduler.expedite(lambda entry: entry is late) == 1
    await harness.time.run_until(lambda: len(harness.dispatched) == 1)
    assert harness.order() == [late] and harness.dispatched[0][1] == NOW_MS  # not an hour
    assert len(harness.scheduler) == 1 and other not in harness.order()
