"""Lanes: bounded concurrency, per-key order, drain (wait_idle) and cancel; Lane admission."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from tests.unit.worker_fakes import (
    TP,
    AckingLog,
    AckLog,
    Clock,
    make_event,
    new_metrics,
    sample,
    settle,
    until,
)

from streams.core import headers as h
from streams.worker.lanes import Lane, Lanes
from streams.worker.ordering import Entry, PartitionLog
from streams.worker.scheduler import DueScheduler

TP0, TP1 = TP("t.audit", 0), TP("t.audit", 1)


class FakeProcessor:
    """Stands in for Processor.process: each record runs until the test releases it."""

    family = SimpleNamespace(name="audit")

    def __init__(self) -> None:
        self.running: set[int] = set()
        self.max_running = 0
        self.started: list[tuple[Any, int]] = []  # (tp, offset)
        self.finished: list[tuple[Any, int]] = []
        self.cancelled: list[tuple[Any, int]] = []
        self._gates: dict[tuple[Any, int], asyncio.Event] = {}
        self.fail: set[tuple[Any, int]] = set()

    def gate(self, tp: Any, offset: int) -> asyncio.Event:
        return self._gates.setdefault((tp, offset), asyncio.Event())

    def release(self, tp: Any, offset: int) -> None:
        self.gate(tp, offset).set()

    def release_all(self) -> None:
        for gate in self._gates.values():
            gate.set()

    async def process(self, entry: Entry) -> None:
        ident = (entry.log.tp, entry.offset)
        self.started.append(ident)
        self.running.add(id(entry))
        self.max_running = max(self.max_running, len(self.running))
        try:
            await self.gate(*ident).wait()
        except asyncio.CancelledError:
            self.cancelled.append(ident)
            raise
        finally:
            self.running.discard(id(entry))
        if ident in self.fail:
            raise RuntimeError("process() broke its promise")
        self.finished.append(ident)
        entry.finish()


class World:
    def __init__(self, concurrency: int) -> None:
        self.metrics = new_metrics()
        self.processor = FakeProcessor()
        self.lanes = Lanes(
            self.processor,  # type: ignore[arg-type]
            concurrency=concurrency,
            on_in_flight=self.metrics.in_flight.labels("audit"),
        )
        self.acks = AckLog()
        self.logs: dict[Any, PartitionLog] = {}
        self.feeders: list[asyncio.Task[None]] = []

    def entry(self, tp: Any, offset: int, key: bytes) -> Entry:
        plog = self.logs.setdefault(tp, AckingLog(tp))
        return plog.add(make_event(self.acks, offset, topic=tp.topic, partition=tp[1], key=key))

    def feed(self, *entries: Entry) -> asyncio.Task[None]:
        """Admit entries one after another in the background (admit blocks when full)."""

        async def run() -> None:
            for entry in entries:
                await self.lanes.admit(entry)

        task = asyncio.get_running_loop().create_task(run())
        self.feeders.append(task)
        return task

    def in_flight_gauge(self) -> float:
        return sample(self.metrics, "streams_in_flight", family="audit")

    async def close(self) -> None:
        for task in self.feeders:
            task.cancel()
        self.processor.release_all()
        await settle()
        self.lanes.cancel(set(self.logs))
        await settle()


@pytest.fixture
async def world_factory() -> AsyncIterator[Any]:
    made: list[World] = []

    def make(concurrency: int = 4) -> World:
        world = World(concurrency)
        made.append(world)
        return world

    yield make
    for world in made:
        await world.close()


async def test_at_most_concurrency_records_run_at_once(world_factory: Any) -> None:
    w = world_factory(concurrency=3)
    entries = [w.entry(TP0, i, key=f"k{i}".encode()) for i in range(8)]
    feeder = w.feed(*entries)
    await settle()
    assert [o for _, o in w.processor.started] == [0, 1, 2]
    assert not feeder.done()  # the 4th admit waits for a slot
    assert w.lanes.running() == 3
    assert w.in_flight_gauge() == 3
    w.processor.release(TP0, 1)
    await until(lambda: len(w.processor.started) == 4)
    await settle()
    assert len(w.processor.started) == 4
    for i in range(8):
        w.processor.release(TP0, i)
    await until(lambda: len(w.processor.finished) == 8)
    assert w.processor.max_running == 3
    assert w.acks.offsets() == list(range(8))  # finished out of order, acked in order
    assert w.lanes.running() == 0
    assert w.in_flight_gauge() == 0


async def test_one_key_runs_in_order_while_other_keys_overlap(world_factory: Any) -> None:
    w = world_factory(concurrency=10)
    keys = [b"a", b"a", b"b", b"a", b"b"]
    w.feed(*(w.entry(TP0, i, key=k) for i, k in enumerate(keys)))
    await settle()
    assert w.processor.started == [(TP0, 0), (TP0, 2)]  # a and b overlap; a's 2nd waits
    w.processor.release(TP0, 2)
    await until(lambda: (TP0, 4) in w.processor.started)
    assert (TP0, 1) not in w.processor.started  # b moved on, a still waits for offset 0
    w.processor.release(TP0, 3)  # released early: must still run after offset 1
    w.processor.release(TP0, 0)
    await until(lambda: (TP0, 1) in w.processor.started)
    await settle()
    assert (TP0, 3) not in w.processor.started
    w.processor.release(TP0, 1)
    w.processor.release(TP0, 4)
    await until(lambda: len(w.processor.finished) == 5)
    a_order = [o for _, o in w.processor.started if keys[o] == b"a"]
    b_order = [o for _, o in w.processor.started if keys[o] == b"b"]
    assert a_order == [0, 1, 3]
    assert b_order == [2, 4]
    assert w.acks.offsets() == [0, 1, 2, 3, 4]


async def test_the_same_key_on_two_partitions_is_two_chains(world_factory: Any) -> None:
    w = world_factory(concurrency=10)
    w.feed(w.entry(TP0, 0, key=b"a"), w.entry(TP1, 0, key=b"a"))
    await settle()
    assert set(w.processor.started) == {(TP0, 0), (TP1, 0)}


async def test_queued_records_of_a_key_hold_their_slot(world_factory: Any) -> None:
    w = world_factory(concurrency=2)
    feeder = w.feed(w.entry(TP0, 0, key=b"a"), w.entry(TP0, 1, key=b"a"), w.entry(TP0, 2, b"z"))
    await settle()
    assert w.processor.started == [(TP0, 0)]
    assert not feeder.done()  # offset 1 is queued behind 0 and counts against the limit
    assert w.lanes.running() == 2
    w.processor.release(TP0, 0)
    await until(lambda: len(w.processor.started) == 3)
    assert w.processor.max_running == 2


async def test_wait_idle(world_factory: Any) -> None:
    w = world_factory()
    assert await w.lanes.wait_idle({TP0}, timeout_s=0.01)  # nothing ever ran
    w.feed(w.entry(TP0, 0, key=b"a"), w.entry(TP1, 0, key=b"a"))
    await settle()
    assert not await w.lanes.wait_idle({TP0}, timeout_s=0.05)
    assert not await w.lanes.wait_idle({TP0, TP1}, timeout_s=0.02)
    waiter = asyncio.get_running_loop().create_task(w.lanes.wait_idle({TP0}, timeout_s=2.0))
    await settle()
    assert not waiter.done()
    w.processor.release(TP0, 0)
    assert await waiter  # TP1 still runs, but only TP0 was asked about
    assert not await w.lanes.wait_idle({TP1}, timeout_s=0.01)
    w.processor.release(TP1, 0)
    assert await w.lanes.wait_idle({TP0, TP1}, timeout_s=1.0)


async def test_wait_idle_waits_for_records_queued_behind_a_key(world_factory: Any) -> None:
    w = world_factory()
    w.feed(w.entry(TP0, 0, key=b"a"), w.entry(TP0, 1, key=b"a"))
    await settle()
    waiter = asyncio.get_running_loop().create_task(w.lanes.wait_idle({TP0}, timeout_s=2.0))
    w.processor.release(TP0, 0)
    await until(lambda: (TP0, 1) in w.processor.started)
    assert not waiter.done()
    w.processor.release(TP0, 1)
    assert await waiter


async def test_cancel_stops_running_chains_and_frees_their_slots(world_factory: Any) -> None:
    w = world_factory(concurrency=2)
    doomed = w.entry(TP0, 0, key=b"a"), w.entry(TP0, 1, key=b"a")
    w.feed(*doomed)
    await settle()
    other = w.feed(w.entry(TP1, 0, key=b"z"))  # no slot left: both are held by key a
    await settle()
    assert not other.done()
    assert w.lanes.cancel({TP0}) == 1  # one chain
    await until(lambda: (TP1, 0) in w.processor.started)  # the slots came back
    assert w.processor.cancelled == [(TP0, 0)]
    assert (TP0, 1) not in w.processor.started  # the queued record never runs
    assert w.acks == []  # cancelled records stay unacked
    assert w.lanes.running() == 1
    assert w.in_flight_gauge() == 1
    assert await w.lanes.wait_idle({TP0}, timeout_s=0.01)
    assert w.lanes.cancel({TP0}) == 0
    # the key can run again (its chain was forgotten)
    w.feed(w.entry(TP0, 2, key=b"a"))
    await until(lambda: (TP0, 2) in w.processor.started)


async def test_cancel_leaves_other_partitions_running(world_factory: Any) -> None:
    w = world_factory()
    w.feed(w.entry(TP0, 0, key=b"a"), w.entry(TP1, 0, key=b"a"))
    await settle()
    assert w.lanes.cancel({TP1}) == 1
    await settle()
    assert w.processor.cancelled == [(TP1, 0)]
    w.processor.release(TP0, 0)
    await until(lambda: w.acks.offsets(partition=0) == [0])


async def test_cancel_right_after_admit_frees_the_slot(world_factory: Any) -> None:
    w = world_factory(concurrency=1)
    await w.lanes.admit(w.entry(TP0, 0, key=b"a"))  # task created, not yet started
    assert w.lanes.cancel({TP0}) == 1
    await settle()
    assert w.lanes.running() == 0
    w.feed(w.entry(TP1, 0, key=b"z"))
    await until(lambda: (TP1, 0) in w.processor.started, timeout_s=0.2)
    # the key's chain must be gone too, or its next record (after a reassignment)
    # is appended to a chain nobody runs and the partition never gets past it
    w.processor.release(TP1, 0)
    w.feed(w.entry(TP0, 1, key=b"a"))
    await until(lambda: (TP0, 1) in w.processor.started, timeout_s=0.2)


async def test_an_entry_of_a_closed_log_is_not_run_and_frees_its_slot(world_factory: Any) -> None:
    w = world_factory(concurrency=1)
    entry = w.entry(TP0, 0, key=b"a")
    entry.log.close()
    await w.lanes.admit(entry)
    assert w.lanes.running() == 0
    w.feed(w.entry(TP1, 0, key=b"a"))
    await until(lambda: w.processor.started == [(TP1, 0)])


async def test_a_record_queued_behind_its_key_is_skipped_once_its_log_closes(
    world_factory: Any,
) -> None:
    w = world_factory(concurrency=4)
    w.feed(w.entry(TP0, 0, key=b"a"), w.entry(TP0, 1, key=b"a"))
    await settle()
    w.logs[TP0].close()  # revoked while offset 1 waits behind offset 0
    w.processor.release(TP0, 0)
    await until(lambda: w.lanes.running() == 0)
    assert w.processor.started == [(TP0, 0)]
    assert w.acks == []


async def test_a_raising_process_does_not_stop_the_chain(world_factory: Any) -> None:
    w = world_factory(concurrency=1)
    w.processor.fail.add((TP0, 0))
    w.feed(w.entry(TP0, 0, key=b"a"), w.entry(TP0, 1, key=b"a"), w.entry(TP0, 2, key=b"b"))
    for offset in range(3):
        w.processor.release(TP0, offset)
    await until(lambda: len(w.processor.finished) == 2)
    assert w.processor.finished == [(TP0, 1), (TP0, 2)]
    assert w.lanes.running() == 0


# --- Lane: the agent body ------------------------------------------------------------------


class FakeStream:
    """``stream.noack().events()`` over a fixed list of events."""

    def __init__(self, events: list[Any]) -> None:
        self._events = events
        self.noacked = False

    def noack(self) -> FakeStream:
        self.noacked = True
        return self

    async def events(self) -> AsyncIterator[Any]:
        for event in self._events:
            yield event


async def test_main_lane_admits_every_record_of_an_owned_partition(world_factory: Any) -> None:
    w = world_factory()
    logs = {TP0: AckingLog(TP0)}
    lane = Lane(
        w.lanes,
        topic="t.audit",
        log_for=lambda tp, *_: logs.get(tp),  # TP1 is not ours: None
        scheduler=None,
        clock_ms=Clock(),
        skew_margin_ms=0,
    )
    events = [make_event(w.acks, 0, partition=0), make_event(w.acks, 0, partition=1)]
    stream = FakeStream(events)
    await lane.consume(stream)
    await settle()
    assert stream.noacked
    assert w.processor.started == [(TP0, 0)]
    assert len(logs[TP0]) == 1
    w.processor.release(TP0, 0)
    await until(lambda: w.acks.offsets() == [0])
    assert events[1].acked == 0  # not ours: left unacked for its owner


async def test_retry_lane_holds_records_until_due(world_factory: Any) -> None:
    w = world_factory()
    clock = Clock()
    tp = TP("t.audit.retry.1s", 0)
    plog = AckingLog(tp)
    scheduler = DueScheduler(
        w.lanes.admit, clock_ms=clock, window=10, pause=lambda tp: None, resume=lambda tp: None
    )
    lane = Lane(
        w.lanes,
        topic=tp.topic,
        log_for=lambda tp, *_: plog,
        scheduler=scheduler,
        clock_ms=clock,
        skew_margin_ms=30,
    )
    future = {h.DUE_AT_MS: str(clock() + 50)}
    past = {h.DUE_AT_MS: str(clock() - 1_000)}
    events = [
        make_event(w.acks, 0, topic=tp.topic, headers=future),
        make_event(w.acks, 1, topic=tp.topic, headers=past, key=b"other"),
        make_event(w.acks, 2, topic=tp.topic, headers={}, key=b"third"),
    ]
    await lane.consume(FakeStream(events))
    await settle()
    assert sorted(o for _, o in w.processor.started) == [1, 2]  # due (or undated): run now
    assert len(scheduler) == 1
    assert len(plog) == 3
    runner = asyncio.get_running_loop().create_task(scheduler.run())
    try:
        clock.advance(50)  # due, but not yet past the skew margin
        await asyncio.sleep(0.15)
        assert sorted(o for _, o in w.processor.started) == [1, 2]
        clock.advance(30)
        await until(lambda: (tp, 0) in w.processor.started)
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner


async def test_an_admission_error_does_not_escape_the_agent(world_factory: Any) -> None:
    w = world_factory()
    calls: list[Any] = []

    def broken_log_for(tp: Any, *_: Any) -> PartitionLog:
        calls.append(tp)
        raise RuntimeError("boom")

    lane = Lane(
        w.lanes,
        topic="t.audit",
        log_for=broken_log_for,
        scheduler=None,
        clock_ms=Clock(),
        skew_margin_ms=0,
    )
    await lane.consume(FakeStream([make_event(w.acks, 0), make_event(w.acks, 1)]))
    assert len(calls) == 2  # the agent kept consuming
