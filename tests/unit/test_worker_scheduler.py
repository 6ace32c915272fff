"""DueScheduler: retry-tier records run in due order, never early, inside a bounded window."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from tests.unit.worker_fakes import TP, AckLog, Clock, make_event, settle, until

from streams.worker.ordering import Entry, PartitionLog
from streams.worker.scheduler import DueScheduler

TP0, TP1, TP2 = TP("t.audit.retry.1s", 0), TP("t.audit.retry.1s", 1), TP("t.audit.retry.1s", 2)
LATE_SLACK_MS = 150  # event loop scheduling slack, allowed on the late side only


def mono_ms() -> int:
    return int(time.monotonic() * 1000)


class Harness:
    def __init__(
        self,
        *,
        window: int = 100,
        clock_ms: Callable[[], int] = mono_ms,
        dispatch: Callable[[Entry], Awaitable[None]] | None = None,
    ) -> None:
        self.clock_ms = clock_ms
        self.acks = AckLog()
        self.logs: dict[Any, PartitionLog] = {}
        self.offsets: dict[Any, int] = {}
        self.dispatched: list[tuple[Entry, float, list[Any]]] = []  # entry, ms, resumed so far
        self.paused: list[Any] = []
        self.resumed: list[Any] = []
        self.counts: list[int] = []
        self.scheduler = DueScheduler(
            dispatch or self._dispatch,
            clock_ms=clock_ms,
            window=window,
            pause=self.paused.append,
            resume=self.resumed.append,
            on_count=self.counts.append,
        )
        self.task: asyncio.Task[None] | None = None

    async def _dispatch(self, entry: Entry) -> None:
        self.dispatched.append((entry, time.monotonic() * 1000, list(self.resumed)))

    def log(self, tp: Any) -> PartitionLog:
        return self.logs.setdefault(tp, PartitionLog(tp))

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
    now = mono_ms()
    late = s.add(TP0, now + 200)
    middle = s.add(TP1, now + 120)
    early = s.add(TP0, now + 60)  # added last, due first
    dues = {id(late): now + 200, id(middle): now + 120, id(early): now + 60}
    s.start()
    await until(lambda: len(s.dispatched) == 3)
    assert s.order() == [early, middle, late]
    for entry, at_ms, _ in s.dispatched:
        due = dues[id(entry)]
        assert at_ms >= due, f"dispatched {due - at_ms:.1f} ms early"
        assert at_ms - due < LATE_SLACK_MS


async def test_an_earlier_record_added_while_waiting_rearms_the_timer(
    make: Callable[..., Harness],
) -> None:
    s = make()
    now = mono_ms()
    late = s.add(TP0, now + 400)
    s.start()
    await asyncio.sleep(0.02)  # the scheduler now sleeps until the 400 ms record
    early = s.add(TP1, now + 80)
    await until(lambda: len(s.dispatched) == 1)
    entry, at_ms, _ = s.dispatched[0]
    assert entry is early
    assert now + 80 <= at_ms < now + 80 + LATE_SLACK_MS  # not held until the 400 ms one
    await until(lambda: len(s.dispatched) == 2)
    assert s.order() == [early, late]
    assert s.dispatched[1][1] >= now + 400


async def test_records_already_due_run_at_once_in_due_order(
    make: Callable[..., Harness],
) -> None:
    s = make()
    now = mono_ms()
    entries = [s.add(TP0, now - 10), s.add(TP0, now - 30), s.add(TP0, now - 20)]
    s.start()
    await until(lambda: len(s.dispatched) == 3, timeout_s=0.1)
    assert s.order() == [entries[1], entries[2], entries[0]]


async def test_equal_due_times_keep_insertion_order(make: Callable[..., Harness]) -> None:
    s = make()
    now = mono_ms()
    entries = [s.add(TP0, now) for _ in range(5)]
    s.start()
    await until(lambda: len(s.dispatched) == 5)
    assert s.order() == entries


async def test_nothing_runs_before_its_due_time_on_a_frozen_clock(
    make: Callable[..., Harness],
) -> None:
    clock = Clock()
    s = make(clock_ms=clock)
    entry = s.add(TP0, clock() + 30)
    s.start()
    await asyncio.sleep(0.1)  # real time passes, the scheduler's clock does not
    assert s.dispatched == []
    clock.advance(30)
    await until(lambda: len(s.dispatched) == 1)
    assert s.order() == [entry]


async def test_window_pauses_a_partition_and_resumes_it_at_half(
    make: Callable[..., Harness],
) -> None:
    s = make(window=4)
    now = mono_ms()
    for i in range(3):
        s.add(TP0, now - 100 + i)
    assert s.paused == []
    s.add(TP0, now - 97)  # the 4th record of TP0 fills its window
    assert s.paused == [TP0]
    s.add(TP0, now - 96)
    s.add(TP1, now - 50)  # another partition has its own window
    assert s.paused == [TP0]
    s.start()
    await until(lambda: len(s.dispatched) == 6)
    # 5 held; after the 3rd dispatch 2 (= window // 2) are left: resumed right then, once
    resumed_at = [resumed for _, _, resumed in s.dispatched[:5]]
    assert resumed_at == [[], [], [TP0], [TP0], [TP0]]
    assert s.resumed == [TP0]
    assert s.counts[-1] == 0
    assert len(s.scheduler) == 0


async def test_repause_pauses_again_what_is_paused(make: Callable[..., Harness]) -> None:
    s = make(window=2)
    far = mono_ms() + 60_000
    s.add(TP0, far)
    s.add(TP0, far)
    s.add(TP1, far)
    assert s.paused == [TP0]
    s.scheduler.repause()
    assert s.paused == [TP0, TP0]


async def test_drop_forgets_only_those_partitions(make: Callable[..., Harness]) -> None:
    s = make(window=3)
    now = mono_ms()
    for tp in (TP0, TP1, TP2):
        for _ in range(3):
            s.add(tp, now + 60)
    assert set(s.paused) == {TP0, TP1, TP2}
    assert s.scheduler.drop({TP0, TP1}) == 6
    assert len(s.scheduler) == 3
    assert s.counts[-1] == 3
    s.start()
    await asyncio.sleep(0.2)
    assert {e.log.tp for e in s.order()} == {TP2}  # the dropped records never run
    assert len(s.dispatched) == 3
    assert s.resumed == [TP2]  # nothing resumed for a dropped (revoked) partition
    assert s.acks == []  # nothing here acks: dropped records stay unacked


async def test_drop_resets_the_window_of_a_dropped_partition(
    make: Callable[..., Harness],
) -> None:
    s = make(window=2)
    far = mono_ms() + 60_000
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
    now = mono_ms()
    gone = [s.add(TP0, now + 30) for _ in range(3)]
    kept = s.add(TP1, now + 40)
    assert s.paused == [TP0]
    s.log(TP0).close()
    s.start()
    await until(lambda: len(s.scheduler) == 0)
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
    now = mono_ms()
    s.add(TP0, now - 2)
    s.add(TP0, now - 1)
    s.start()
    await settle()
    assert seen == [0]
    gate.set()
    await until(lambda: seen == [0, 1])
