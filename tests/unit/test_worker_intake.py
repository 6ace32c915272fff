"""Intake: fetched batches admitted in sequence after positioning, routed to the lanes or a
retry tier's scheduler, per-partition backpressure, forget on release."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
from tests.unit.worker_fakes import (
    TP,
    AckingLog,
    AckLog,
    Clock,
    FakeEvent,
    make_event,
    settle,
    until,
)

from streams.core import headers as h
from streams.worker.intake import CHUNK, Intake, Route
from streams.worker.ordering import Entry, PartitionLog

MAIN, TIER = "t.audit", "t.audit.retry.1s"
TP0, TP1 = TP(MAIN, 0), TP(MAIN, 1)
RTP = TP(TIER, 0)


class FakeLanes:
    """Records what the intake submits, one list per call."""

    def __init__(self) -> None:
        self.batches: list[list[Entry]] = []

    def submit(self, entries: Iterable[Entry], lane: str | None = None) -> None:
        self.batches.append(list(entries))

    def offsets(self) -> list[tuple[Any, int]]:
        return [(e.log.tp, e.offset) for batch in self.batches for e in batch]


class FakeScheduler:
    def __init__(self) -> None:
        self.added: list[tuple[int, int]] = []  # (offset, due_at_ms)

    def add(self, entry: Entry, due_at_ms: int) -> None:
        self.added.append((entry.offset, due_at_ms))


class NotifyingLog(AckingLog):
    """Tells the intake of each advance, as the partitions' ``_advance`` does."""

    def __init__(self, tp: Any, notify: Any) -> None:
        super().__init__(tp)
        self._notify = notify

    def _advanced(self, tp: Any, next_offset: int) -> None:
        super()._advanced(tp, next_offset)
        self._notify(tp)


class Rig:
    def __init__(self, *, high: int = 4096, margin_ms: int = 0) -> None:
        self.acks = AckLog()
        self.clock = Clock()
        self.positioned = asyncio.Event()
        self.positioned.set()
        self.admission_calls = 0
        self.logs: dict[Any, PartitionLog] = {}
        self.refused: set[tuple[Any, int]] = set()
        self.broken: set[Any] = set()  # partitions, or (tp, offset) of single records
        self.asked: list[tuple[Any, int]] = []
        self.holds: list[tuple[str, Any]] = []  # ("hold" | "release", tp), in call order
        self.intake = Intake(
            admission=self.admission,
            log_for=self.log_for,
            logs=self.logs,
            hold=lambda tp: self.holds.append(("hold", tp)),
            release=lambda tp: self.holds.append(("release", tp)),
            clock_ms=self.clock,
            skew_margin_ms=margin_ms,
            high=high,
        )
        self.lanes = FakeLanes()
        self.scheduler = FakeScheduler()
        self.intake.add_topic(MAIN, Route(self.lanes))  # type: ignore[arg-type]
        self.intake.add_topic(
            TIER,
            Route(self.lanes, self.scheduler, max_hold_ms=10_000),  # type: ignore[arg-type]
        )
        self.task: asyncio.Task[None] | None = None

    async def admission(self) -> None:
        self.admission_calls += 1
        await self.positioned.wait()

    def log_for(self, tp: Any, offset: int) -> PartitionLog | None:
        self.asked.append((tp, offset))
        if tp in self.broken or (tp, offset) in self.broken:
            raise RuntimeError("sequencer broke")
        if (tp, offset) in self.refused:
            return None
        plog = self.logs.get(tp)
        if plog is None:
            plog = self.logs[tp] = NotifyingLog(tp, self.intake.on_advance)
        return plog

    def records(
        self, tp: Any, offsets: Iterable[int], headers: dict[str, str] | None = None
    ) -> list[FakeEvent]:
        return [
            make_event(self.acks, o, topic=tp.topic, partition=tp.partition, headers=headers)
            for o in offsets
        ]

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.intake.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await self.task


@pytest.fixture
async def rig_factory() -> AsyncIterator[Any]:
    made: list[Rig] = []

    def make(**kwargs: Any) -> Rig:
        rig = Rig(**kwargs)
        rig.start()
        made.append(rig)
        return rig

    yield make
    for rig in made:
        await rig.stop()


async def test_batches_are_admitted_in_order_only_once_positioned(rig_factory: Any) -> None:
    r = rig_factory()
    r.positioned.clear()  # an assignment is being positioned
    r.intake.sink(TP0, r.records(TP0, [0, 1]))
    r.intake.sink(TP1, r.records(TP1, [5]))
    r.intake.sink(TP0, r.records(TP0, [2]))
    await settle()
    assert r.admission_calls >= 1
    assert r.asked == []  # nothing admitted while positioning
    assert r.lanes.batches == []
    r.positioned.set()
    await until(lambda: len(r.lanes.batches) == 3)
    assert r.lanes.offsets() == [(TP0, 0), (TP0, 1), (TP1, 5), (TP0, 2)]  # held, not dropped
    assert [len(b) for b in r.lanes.batches] == [2, 1, 1]  # one submit per fetched batch
    assert len(r.logs[TP0]) == 3


async def test_records_the_admission_refuses_are_left_out(rig_factory: Any) -> None:
    r = rig_factory()
    r.refused = {(TP0, 1), (TP0, 3)}
    r.intake.sink(TP0, r.records(TP0, range(5)))
    await until(lambda: len(r.asked) == 5)
    await settle()
    assert r.lanes.offsets() == [(TP0, 0), (TP0, 2), (TP0, 4)]
    assert len(r.logs[TP0]) == 3  # refused ones have no entry: unfinished, read again


async def test_a_batch_refused_entirely_submits_nothing(rig_factory: Any) -> None:
    r = rig_factory()
    r.refused = {(TP0, 0)}
    r.intake.sink(TP0, r.records(TP0, [0]))
    await until(lambda: len(r.asked) == 1)
    await settle()
    assert r.lanes.batches == []


async def test_retry_records_not_yet_due_go_to_the_scheduler_capped(rig_factory: Any) -> None:
    r = rig_factory(margin_ms=30)
    now = r.clock()
    batch = [
        *r.records(RTP, [0], {h.DUE_AT_MS: str(now + 500)}),  # not due: 500 + margin
        *r.records(RTP, [1], {h.DUE_AT_MS: str(now - 1_000)}),  # past due
        *r.records(RTP, [2]),  # undated: due now
        *r.records(RTP, [3], {h.DUE_AT_MS: str(now + 3_600_000)}),  # an hour: capped
        *r.records(RTP, [4], {h.DUE_AT_MS: str(now - 20)}),  # due, not past the margin
    ]
    r.intake.sink(RTP, batch)
    await until(lambda: len(r.asked) == 5)
    await settle()
    assert r.scheduler.added == [(0, now + 530), (3, now + 10_000), (4, now + 10)]
    assert r.lanes.offsets() == [(RTP, 1), (RTP, 2)]
    assert len(r.logs[RTP]) == 5  # the held ones are unfinished entries too


async def test_main_topic_records_never_wait_for_a_due_time(rig_factory: Any) -> None:
    r = rig_factory()
    r.intake.sink(TP0, r.records(TP0, [0], {h.DUE_AT_MS: str(r.clock() + 60_000)}))
    await until(lambda: len(r.lanes.batches) == 1)
    assert r.scheduler.added == []


async def test_a_partition_full_of_unfinished_records_is_held_until_below_half(
    rig_factory: Any,
) -> None:
    r = rig_factory(high=4)
    r.intake.sink(TP0, r.records(TP0, [0, 1]))
    await until(lambda: len(r.lanes.offsets()) == 2)  # admitted: 2 unfinished in the log
    assert r.intake.held == set()
    r.positioned.clear()  # the next batches stay queued
    r.intake.sink(TP0, r.records(TP0, [2]))
    r.intake.sink(TP1, r.records(TP1, [0, 1, 2]))
    assert r.intake.held == set()  # TP0: 2 admitted + 1 queued; TP1: 3 queued
    r.intake.sink(TP0, r.records(TP0, [3]))
    assert r.intake.held == {TP0}  # 2 admitted + 2 queued reach high
    r.positioned.set()
    await until(lambda: len(r.lanes.offsets()) == 7)
    assert r.intake.held == {TP0}  # queued ones were admitted: still 4 unfinished
    r.holds.clear()
    entries = [e for batch in r.lanes.batches for e in batch if e.log.tp == TP0]
    entries[0].finish()
    entries[1].finish()
    assert r.intake.held == {TP0}  # 2 unfinished: not below half yet
    assert r.holds == []
    entries[2].finish()
    assert r.intake.held == set()  # 1 < 2
    assert r.holds == [("release", TP0)]
    assert r.acks.offsets(partition=0) == [0, 1, 2]


async def test_a_single_large_batch_holds_its_partition(rig_factory: Any) -> None:
    r = rig_factory(high=4)
    r.positioned.clear()
    r.intake.sink(TP0, r.records(TP0, range(6)))
    assert r.intake.held == {TP0}
    r.positioned.set()
    await until(lambda: len(r.lanes.offsets()) == 6)
    assert r.intake.held == {TP0}
    for entry in r.lanes.batches[0][:5]:
        entry.finish()
    assert r.intake.held == set()


async def test_forget_drops_queued_batches_of_the_given_partitions(rig_factory: Any) -> None:
    r = rig_factory(high=2)
    r.positioned.clear()
    r.intake.sink(TP0, r.records(TP0, [0, 1]))
    r.intake.sink(TP1, r.records(TP1, [0]))
    r.intake.sink(TP0, r.records(TP0, [2]))
    assert r.intake.held == {TP0}
    r.holds.clear()
    r.intake.forget({TP0})
    assert r.intake.held == set()
    assert r.holds == [("release", TP0)]  # fetched again
    r.positioned.set()
    await until(lambda: len(r.lanes.batches) == 1)
    await settle()
    assert r.lanes.offsets() == [(TP1, 0)]
    # the partition's next assignment starts from nothing queued
    r.intake.sink(TP0, r.records(TP0, [0]))
    assert r.intake.held == set()
    await until(lambda: (TP0, 0) in r.lanes.offsets())


async def test_an_error_admitting_one_batch_does_not_stop_the_loop(
    rig_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    r = rig_factory()
    r.broken = {TP0}
    with caplog.at_level(logging.ERROR, logger="streams.worker.intake"):
        r.intake.sink(TP0, r.records(TP0, [0]))
        r.intake.sink(TP1, r.records(TP1, [0]))
        await until(lambda: len(r.lanes.batches) == 1)
    assert r.lanes.offsets() == [(TP1, 0)]
    assert r.task is not None and not r.task.done()
    assert any("failed to admit records of t.audit[0]" in m for m in caplog.messages)
    r.broken.clear()
    r.intake.sink(TP0, r.records(TP0, [0]))
    await until(lambda: (TP0, 0) in r.lanes.offsets())


async def test_records_of_a_topic_without_a_route_are_ignored(rig_factory: Any) -> None:
    r = rig_factory()
    r.intake.sink(TP("t.other", 0), r.records(TP("t.other", 0), [0]))
    r.intake.sink(TP0, r.records(TP0, [0]))
    await until(lambda: len(r.lanes.batches) == 1)
    assert r.asked == [(TP0, 0)]


async def test_records_admitted_before_an_error_in_their_batch_still_run(
    rig_factory: Any,
) -> None:
    r = rig_factory()
    r.broken = {(TP0, 2)}
    r.intake.sink(TP0, r.records(TP0, range(5)))
    await until(lambda: len(r.asked) == 3)
    await settle()
    # 0 and 1 have entries in the log: left out of the lanes they would never finish and
    # the partition could never commit past them (nor be released from backpressure)
    assert r.lanes.offsets() == [(TP0, 0), (TP0, 1)]
    assert len(r.logs[TP0]) == 2
    r.broken.clear()
    r.intake.sink(TP0, r.records(TP0, range(2, 5)))  # read again (the sequencer's resync)
    await until(lambda: len(r.lanes.offsets()) == 5)
    for batch in r.lanes.batches:
        for entry in batch:
            entry.finish()
    assert r.acks.offsets() == [0, 1, 2, 3, 4]


async def test_a_big_batch_is_admitted_in_chunks_keeping_its_partitions_order(
    rig_factory: Any,
) -> None:
    r = rig_factory(high=100_000)
    r.positioned.clear()
    r.intake.sink(TP0, r.records(TP0, range(CHUNK + 10)))
    r.intake.sink(TP1, r.records(TP1, [7]))
    r.intake.sink(TP0, r.records(TP0, [CHUNK + 10]))
    r.positioned.set()
    await until(lambda: len(r.lanes.offsets()) == CHUNK + 12)
    tp0 = [o for tp, o in r.lanes.offsets() if tp == TP0]
    assert tp0 == list(range(CHUNK + 11)), "a partition's records stay in offset order"
    assert len(r.lanes.batches[0]) == CHUNK, "at most CHUNK per loop step"


async def test_a_better_ranked_topic_is_admitted_before_queued_chunks(rig_factory: Any) -> None:
    r = rig_factory(high=100_000)
    urgent = TP("t.audit.lane.high", 0)
    r.intake.add_topic(urgent.topic, Route(r.lanes, rank=0))  # type: ignore[arg-type]
    r.intake.add_topic(MAIN, Route(r.lanes, rank=2))  # type: ignore[arg-type]
    r.positioned.clear()
    r.intake.sink(TP0, r.records(TP0, range(3 * CHUNK)))
    r.intake.sink(urgent, r.records(urgent, [0]))
    r.positioned.set()
    await until(lambda: len(r.lanes.offsets()) == 3 * CHUNK + 1)
    assert r.lanes.batches[0][0].topic == urgent.topic, "the high lane's batch went first"
