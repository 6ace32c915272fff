"""Lanes: a fixed pool of handler workers; bounded concurrency, per-key order, drain
(wait_idle), cancel, yielding to the loop.

Changed on purpose with the pool (no longer tested): a record queued behind its key does not
hold a concurrency slot any more (other keys take it, see
``test_a_record_queued_behind_its_key_leaves_the_slot_to_other_keys``), and ``wait_idle``
waits for running records only (queued ones of a stopping log are skipped, not waited for).
Admission from the fetch (the old ``Lane``) is the intake's now: ``test_worker_intake.py``.
"""

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
    make_event,
    new_metrics,
    sample,
    settle,
    until,
)

from streams.worker import lanes as lanes_module
from streams.worker.lanes import Lanes
from streams.worker.ordering import Entry, PartitionLog

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
    def __init__(self, concurrency: int, processor: Any = None) -> None:
        self.metrics = new_metrics()
        self.processor = processor if processor is not None else FakeProcessor()
        self.lanes = Lanes(
            self.processor,
            concurrency=concurrency,
            on_in_flight=self.metrics.in_flight.labels("audit"),
        )
        self.acks = AckLog()
        self.logs: dict[Any, PartitionLog] = {}

    def entry(self, tp: Any, offset: int, key: bytes) -> Entry:
        plog = self.logs.setdefault(tp, AckingLog(tp))
        return plog.add(make_event(self.acks, offset, topic=tp.topic, partition=tp[1], key=key))

    def submit(self, *entries: Entry) -> None:
        self.lanes.submit(entries)

    def in_flight_gauge(self) -> float:
        return sample(self.metrics, "streams_in_flight", family="audit")

    def workers(self) -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if t.get_name().startswith("lanes.audit.")]

    async def close(self) -> None:
        if isinstance(self.processor, FakeProcessor):
            self.processor.release_all()
        await settle()
        await self.lanes.stop()


@pytest.fixture
async def world_factory() -> AsyncIterator[Any]:
    made: list[World] = []

    def make(concurrency: int = 4, processor: Any = None) -> World:
        world = World(concurrency, processor)
        made.append(world)
        return world

    yield make
    for world in made:
        await world.close()


async def test_at_most_concurrency_records_run_at_once(world_factory: Any) -> None:
    w = world_factory(concurrency=3)
    w.submit(*(w.entry(TP0, i, key=f"k{i}".encode()) for i in range(8)))
    await settle()
    assert [o for _, o in w.processor.started] == [0, 1, 2]
    assert w.lanes.saturated()
    assert w.lanes.in_flight == 8  # admitted and not finished (running or queued)
    assert w.in_flight_gauge() == 8
    w.processor.release(TP0, 1)
    await until(lambda: len(w.processor.started) == 4)
    await settle()
    assert len(w.processor.started) == 4
    for i in range(8):
        w.processor.release(TP0, i)
    await until(lambda: len(w.processor.finished) == 8)
    await settle()
    assert w.processor.max_running == 3
    assert w.acks.offsets() == list(range(8))  # finished out of order, acked in order
    assert w.lanes.in_flight == 0
    assert w.in_flight_gauge() == 0
    assert not w.lanes.saturated()


async def test_one_key_runs_in_order_while_other_keys_overlap(world_factory: Any) -> None:
    w = world_factory(concurrency=10)
    keys = [b"a", b"a", b"b", b"a", b"b"]
    w.submit(*(w.entry(TP0, i, key=k) for i, k in enumerate(keys)))
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
    w.submit(w.entry(TP0, 0, key=b"a"), w.entry(TP1, 0, key=b"a"))
    await settle()
    assert set(w.processor.started) == {(TP0, 0), (TP1, 0)}


async def test_a_record_queued_behind_its_key_leaves_the_slot_to_other_keys(
    world_factory: Any,
) -> None:
    w = world_factory(concurrency=2)
    w.submit(w.entry(TP0, 0, key=b"a"), w.entry(TP0, 1, key=b"a"), w.entry(TP0, 2, b"z"))
    await settle()
    assert w.processor.started == [(TP0, 0), (TP0, 2)]  # 1 waits for 0 without a slot
    assert w.lanes.in_flight == 3
    w.processor.release(TP0, 0)
    await until(lambda: (TP0, 1) in w.processor.started)
    assert w.processor.max_running == 2


async def test_wait_idle(world_factory: Any) -> None:
    w = world_factory()
    assert await w.lanes.wait_idle({TP0}, timeout_s=0.01)  # nothing ever ran
    w.submit(w.entry(TP0, 0, key=b"a"), w.entry(TP1, 0, key=b"a"))
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


async def test_a_drain_waits_for_the_running_record_and_skips_the_queued_ones(
    world_factory: Any,
) -> None:
    w = world_factory()
    w.submit(w.entry(TP0, 0, key=b"a"), w.entry(TP0, 1, key=b"a"), w.entry(TP0, 2, key=b"b"))
    await settle()
    w.processor.release(TP0, 2)
    await until(lambda: w.processor.finished == [(TP0, 2)])
    w.logs[TP0].stopping = True  # a revoke: nothing new of TP0 starts
    waiter = asyncio.get_running_loop().create_task(w.lanes.wait_idle({TP0}, timeout_s=2.0))
    await settle()
    assert not waiter.done()  # offset 0 still runs
    w.processor.release(TP0, 0)
    assert await waiter
    await until(lambda: w.lanes.in_flight == 0)
    assert (TP0, 1) not in w.processor.started  # queued behind 0: skipped, unfinished
    assert w.acks.offsets() == [0]


async def test_cancel_stops_running_records_and_the_worker_carries_on(world_factory: Any) -> None:
    w = world_factory(concurrency=1)
    w.submit(w.entry(TP0, 0, key=b"a"), w.entry(TP0, 1, key=b"a"), w.entry(TP1, 0, key=b"z"))
    await settle()
    assert w.processor.started == [(TP0, 0)]
    w.logs[TP0].stopping = True  # as a release does before it cancels
    assert w.lanes.cancel({TP0}) == 1
    await until(lambda: (TP1, 0) in w.processor.started)  # the only worker carried on
    assert w.processor.cancelled == [(TP0, 0)]
    assert (TP0, 1) not in w.processor.started  # the queued record never runs
    assert w.acks == []  # cancelled records stay unacked
    assert w.lanes.in_flight == 1
    assert await w.lanes.wait_idle({TP0}, timeout_s=0.01)
    assert w.lanes.cancel({TP0}) == 0
    assert all(t.cancelling() == 0 for t in w.workers())  # the cancellation was taken back
    # the key can run again in the partition's next generation (its chain was forgotten)
    w.logs[TP0] = AckingLog(TP0)
    w.submit(w.entry(TP0, 2, key=b"a"))
    w.processor.release(TP1, 0)
    await until(lambda: (TP0, 2) in w.processor.started)
    w.processor.release(TP0, 2)
    await until(lambda: w.lanes.in_flight == 0)
    await settle()
    assert w.in_flight_gauge() == 0


async def test_cancel_leaves_other_partitions_running(world_factory: Any) -> None:
    w = world_factory()
    w.submit(w.entry(TP0, 0, key=b"a"), w.entry(TP1, 0, key=b"a"))
    await settle()
    assert w.lanes.cancel({TP1}) == 1
    await settle()
    assert w.processor.cancelled == [(TP1, 0)]
    w.processor.release(TP0, 0)
    await until(lambda: w.acks.offsets(partition=0) == [0])
    assert w.processor.finished == [(TP0, 0)]


async def test_cancel_right_after_submit_finds_nothing_running(world_factory: Any) -> None:
    w = world_factory(concurrency=1)
    w.submit(w.entry(TP0, 0, key=b"a"))  # queued, no worker has taken it yet
    w.logs[TP0].stopping = True
    assert w.lanes.cancel({TP0}) == 0
    await until(lambda: w.lanes.in_flight == 0)
    assert w.processor.started == []
    w.submit(w.entry(TP1, 0, key=b"a"))
    await until(lambda: w.processor.started == [(TP1, 0)])


@pytest.mark.parametrize("how", ["closed", "stopping"])
async def test_an_entry_of_a_closed_or_stopping_log_is_not_run(
    world_factory: Any, how: str
) -> None:
    w = world_factory(concurrency=1)
    entry = w.entry(TP0, 0, key=b"a")
    if how == "closed":
        entry.log.close()
    else:
        entry.log.stopping = True
    w.submit(entry)
    await until(lambda: w.lanes.in_flight == 0)
    assert await w.lanes.wait_idle({TP0}, timeout_s=0.01)  # it never counted as running
    assert not w.lanes.saturated()
    w.submit(w.entry(TP1, 0, key=b"a"))
    await until(lambda: w.processor.started == [(TP1, 0)])


async def test_a_record_queued_behind_its_key_is_skipped_once_its_log_closes(
    world_factory: Any,
) -> None:
    w = world_factory(concurrency=4)
    w.submit(w.entry(TP0, 0, key=b"a"), w.entry(TP0, 1, key=b"a"))
    await settle()
    w.logs[TP0].close()  # revoked while offset 1 waits behind offset 0
    w.processor.release(TP0, 0)
    await until(lambda: w.lanes.in_flight == 0)
    assert w.processor.started == [(TP0, 0)]
    assert w.acks == []


async def test_a_raising_process_does_not_stop_the_chain(world_factory: Any) -> None:
    w = world_factory(concurrency=1)
    w.processor.fail.add((TP0, 0))
    w.submit(w.entry(TP0, 0, key=b"a"), w.entry(TP0, 1, key=b"a"), w.entry(TP0, 2, key=b"b"))
    for offset in range(3):
        w.processor.release(TP0, offset)
    await until(lambda: len(w.processor.finished) == 2)
    assert w.processor.finished == [(TP0, 1), (TP0, 2)]
    await until(lambda: w.lanes.in_flight == 0)
    await settle()
    assert w.in_flight_gauge() == 0


async def test_a_stray_cancellation_does_not_shrink_the_pool(world_factory: Any) -> None:
    w = world_factory(concurrency=2)
    w.submit(w.entry(TP0, 0, key=b"a"))
    await settle()
    workers = w.workers()
    assert len(workers) == 2
    for task in workers:  # one runs offset 0, the other waits for work
        task.cancel()
    await until(lambda: w.processor.cancelled == [(TP0, 0)])
    await until(lambda: w.lanes.in_flight == 0)
    assert not any(task.done() for task in workers)
    # both workers still take records: two keys run at once
    w.submit(w.entry(TP1, 0, key=b"b"), w.entry(TP1, 1, key=b"c"))
    await until(lambda: len(w.processor.running) == 2)
    assert set(w.workers()) == set(workers)  # the same workers, none replaced


class SelfCancellingProcessor:
    """Finishes each record; after ``offset`` it cancels its own task (a stray cancellation,
    delivered at the worker's next suspension: its yield to the loop)."""

    family = SimpleNamespace(name="audit")

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.started: list[int] = []

    async def process(self, entry: Entry) -> None:
        self.started.append(entry.offset)
        await asyncio.sleep(0)
        entry.finish()
        task = asyncio.current_task()
        if entry.offset == self.offset and task is not None:
            task.cancel()


async def test_a_stray_cancellation_between_records_loses_none_queued_behind_the_key(
    world_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lanes_module, "YIELD_EVERY", 1)  # it yields after every record
    processor = SelfCancellingProcessor(offset=0)
    w = world_factory(concurrency=2, processor=processor)
    w.submit(w.entry(TP0, 0, key=b"a"), w.entry(TP0, 1, key=b"a"))  # 1 waits in a's chain
    await settle(2)
    w.submit(w.entry(TP0, 2, key=b"a"))
    await until(lambda: w.lanes.in_flight == 0)
    assert processor.started == [0, 1, 2]  # was [0, 2]: 1 dropped, key order broken
    assert w.acks.offsets() == [0, 1, 2]  # and the partition could commit past 0 again
    assert len(w.logs[TP0]) == 0


class InstantProcessor:
    """Finishes every record without ever suspending; notes the probe count per record."""

    family = SimpleNamespace(name="audit")

    def __init__(self, probe: list[int]) -> None:
        self.probe = probe
        self.seen: list[int] = []

    async def process(self, entry: Entry) -> None:
        self.seen.append(self.probe[0])
        entry.finish()


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_workers_yield_so_a_never_suspending_processor_cannot_starve_others(
    world_factory: Any, concurrency: int
) -> None:
    probe = [0]

    async def other_task() -> None:  # stands in for the fetch and the changelog writers
        while True:
            probe[0] += 1
            await asyncio.sleep(0)

    processor = InstantProcessor(probe)
    w = world_factory(concurrency=concurrency, processor=processor)
    records = 20 * lanes_module.YIELD_EVERY
    w.submit(*(w.entry(TP0, i, key=f"k{i % 7}".encode()) for i in range(records)))
    other = asyncio.get_running_loop().create_task(other_task())
    try:
        await until(lambda: len(processor.seen) == records)
    finally:
        other.cancel()
    # the other task ran between every YIELD_EVERY records of each worker
    longest, run = 1, 1
    for before, after in zip(processor.seen, processor.seen[1:], strict=False):
        run = run + 1 if after == before else 1
        longest = max(longest, run)
    assert longest <= concurrency * lanes_module.YIELD_EVERY
    assert (
        processor.seen[-1] - processor.seen[0]
        >= records // (concurrency * lanes_module.YIELD_EVERY) - 1
    )
    assert w.acks.offsets() == list(range(records))
