"""At-most-once: records run only after their commit is acknowledged, a window at a time;
a failed commit runs nothing; committed records that never start are counted lost; failures
go to the DLQ once (never a retry tier) and a failed DLQ produce is counted, not retried."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from types import SimpleNamespace
from typing import Any

import pytest
from tests.unit.worker_fakes import (
    TP,
    AckingLog,
    AckLog,
    FakeDecoder,
    FakeProducer,
    encode_event,
    make_event,
    make_family,
    new_metrics,
    sample,
    settle,
    until,
)

from streams.core import headers as h
from streams.errors import Permanent, Retryable
from streams.jobs.base import JobContext
from streams.jobs.registry import HandlerRegistry
from streams.worker.at_most_once import CommitFirstLanes, offsets_past
from streams.worker.lanes import Lanes
from streams.worker.ordering import Entry, PartitionLog
from streams.worker.processor import Processor, ProcessorConfig

TP0, TP1 = TP("t.audit", 0), TP("t.audit", 1)
EVENT_TYPE = "audit.recorded"


class Held:
    """Stands in for Processor.process: each record runs until the test releases it."""

    family = SimpleNamespace(name="audit")

    def __init__(self) -> None:
        self.started: list[tuple[Any, int]] = []
        self._gates: dict[tuple[Any, int], asyncio.Event] = {}

    def release(self, tp: Any, offset: int) -> None:
        self._gates.setdefault((tp, offset), asyncio.Event()).set()

    def release_all(self) -> None:
        for ident in self.started:
            self.release(*ident)

    async def process(self, entry: Entry) -> None:
        ident = (entry.log.tp, entry.offset)
        self.started.append(ident)
        await self._gates.setdefault(ident, asyncio.Event()).wait()
        entry.finish()


class Broker:
    """The commit: records each request; answers True unless told to fail or to hold."""

    def __init__(self) -> None:
        self.requests: list[dict[Any, int]] = []
        self.committed: dict[Any, int] = {}
        self.fail = 0  # the next N requests fail
        self.hold: asyncio.Event | None = None

    async def commit(self, offsets: Mapping[Any, int]) -> bool:
        self.requests.append(dict(offsets))
        if self.hold is not None:
            await self.hold.wait()
        if self.fail:
            self.fail -= 1
            return False
        self.committed.update(offsets)
        return True


class World:
    def __init__(self, window: int, concurrency: int) -> None:
        self.metrics = new_metrics()
        self.processor = Held()
        self.broker = Broker()
        self.lost = 0
        self.pool = Lanes(
            self.processor,  # type: ignore[arg-type]
            concurrency=concurrency,
            on_in_flight=self.metrics.in_flight.labels("audit"),
        )
        self.lanes = CommitFirstLanes(
            self.pool,
            self.broker.commit,
            window=window,
            on_lost=self._count_lost,
            retry_backoff_s=0.001,
        )
        self.acks = AckLog()
        self.logs: dict[Any, PartitionLog] = {}

    def _count_lost(self, n: int) -> None:
        self.lost += n

    def entries(self, tp: Any, offsets: range) -> list[Entry]:
        plog = self.logs.setdefault(tp, AckingLog(tp))
        return [
            plog.add(
                make_event(self.acks, o, topic=tp.topic, partition=tp[1], key=f"k{o}".encode())
            )
            for o in offsets
        ]

    @property
    def started(self) -> list[int]:
        return [offset for _, offset in self.processor.started]


@pytest.fixture
async def world_factory() -> AsyncIterator[Any]:
    made: list[World] = []

    def make(window: int = 4, concurrency: int = 4) -> World:
        made.append(World(window, concurrency))
        return made[-1]

    yield make
    for world in made:
        world.processor.release_all()
        if world.broker.hold is not None:
            world.broker.hold.set()
        await settle()
        await world.lanes.stop()


def test_offsets_past_takes_the_highest_offset_of_each_partition() -> None:
    acks = AckLog()
    logs = {tp: PartitionLog(tp) for tp in (TP0, TP1)}
    entries = [
        logs[tp].add(make_event(acks, o, partition=tp[1]))
        for tp, o in ((TP0, 3), (TP1, 9), (TP0, 5))
    ]
    assert offsets_past(entries) == {TP0: 6, TP1: 10}


async def test_nothing_runs_before_the_commit_is_acknowledged(world_factory: Any) -> None:
    w = world_factory(window=8, concurrency=8)
    w.broker.hold = asyncio.Event()
    w.lanes.submit(w.entries(TP0, range(3)) + w.entries(TP1, range(2)))
    await settle()
    assert w.broker.requests == [{TP0: 3, TP1: 2}]
    assert w.started == []  # the commit is not acknowledged yet
    w.broker.hold.set()
    await until(lambda: len(w.started) == 5)
    assert w.broker.committed == {TP0: 3, TP1: 2}


async def test_at_most_a_window_is_committed_ahead_of_what_finished(world_factory: Any) -> None:
    w = world_factory(window=2, concurrency=4)
    w.lanes.submit(w.entries(TP0, range(5)))
    await until(lambda: len(w.started) == 2)
    await settle()
    assert w.broker.committed == {TP0: 2}
    assert w.started == [0, 1]  # free slots, but the window is full
    assert w.lanes.in_flight == 5
    w.processor.release(TP0, 0)
    await until(lambda: len(w.started) == 3)
    assert w.broker.committed == {TP0: 3}
    w.processor.release_all()
    await until(lambda: len(w.started) == 5)
    w.processor.release_all()
    await until(lambda: w.lanes.in_flight == 0)
    assert w.broker.committed == {TP0: 5}
    assert w.started == [0, 1, 2, 3, 4]
    assert w.lost == 0


async def test_a_failed_commit_runs_nothing_and_is_tried_again(world_factory: Any) -> None:
    w = world_factory()
    w.broker.fail = 2
    w.lanes.submit(w.entries(TP0, range(2)))
    await until(lambda: len(w.started) == 2)
    assert len(w.broker.requests) == 3  # two failed, the third acknowledged before any ran
    assert w.broker.committed == {TP0: 2}


async def test_records_of_a_partition_given_up_before_their_commit_never_run(
    world_factory: Any,
) -> None:
    w = world_factory()
    w.broker.fail = 10**6  # the partition is being revoked: commits keep failing
    w.lanes.submit(w.entries(TP0, range(3)))
    await until(lambda: len(w.broker.requests) >= 2)
    w.logs[TP0].stopping = True
    await until(lambda: w.lanes.in_flight == 0)
    requests = len(w.broker.requests)
    await settle()
    assert len(w.broker.requests) == requests  # no more tries
    assert w.started == []
    assert w.broker.committed == {}
    assert w.lost == 0  # never committed: the next owner reads them


async def test_committed_records_skipped_by_a_drain_are_counted_lost(world_factory: Any) -> None:
    w = world_factory(window=4, concurrency=1)
    w.lanes.submit(w.entries(TP0, range(3)))
    await until(lambda: w.started == [0])
    w.logs[TP0].stopping = True  # a revoke: records not started are skipped
    w.processor.release(TP0, 0)
    await until(lambda: w.lanes.in_flight == 0)
    assert w.started == [0]
    assert w.broker.committed == {TP0: 3}
    assert w.lost == 2


async def test_handlers_cancelled_past_the_drain_deadline_are_counted_lost(
    world_factory: Any,
) -> None:
    w = world_factory(window=4, concurrency=2)
    w.lanes.submit(w.entries(TP0, range(2)))
    await until(lambda: len(w.started) == 2)
    assert w.lanes.cancel({TP0}) == 2
    await until(lambda: w.lanes.in_flight == 0)
    assert w.lost == 2


async def test_lanes_are_kept_in_order(world_factory: Any) -> None:
    w = world_factory(window=8)
    handed: list[tuple[list[int], str | None]] = []
    submit = w.pool.submit

    def spy(entries: Any, lane: str | None = None) -> None:
        entries = list(entries)
        handed.append(([e.offset for e in entries], lane))
        submit(entries, lane)

    w.pool.submit = spy  # type: ignore[method-assign]
    a, b, c = w.entries(TP0, range(2)), w.entries(TP1, range(1)), w.entries(TP0, range(2, 3))
    w.lanes.submit(a, "high")
    w.lanes.submit(b, "high")
    w.lanes.submit(c, "low")
    await until(lambda: len(w.started) == 4)
    assert handed == [([0, 1, 0], "high"), ([2], "low")]


def test_window_must_be_positive() -> None:
    pool = Lanes(Held(), concurrency=1, on_in_flight=new_metrics().in_flight.labels("a"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window must be >= 1, got 0"):
        CommitFirstLanes(pool, Broker().commit, window=0, on_lost=lambda n: None)


# --- failures: the processor of an at-most-once family ------------------------------------


class Rig:
    def __init__(self, handler: Any) -> None:
        self.metrics = new_metrics()
        self.producer = FakeProducer()
        registry = HandlerRegistry()
        self.runs = 0

        async def counting(event: Any, ctx: JobContext) -> None:
            self.runs += 1
            await handler(event, ctx)

        registry.register(EVENT_TYPE, counting)
        self.processor = Processor(
            family=make_family(delivery="at_most_once"),
            config=ProcessorConfig(prefix="t.", handler_timeout_s=1.0, default_max_defer_ms=60_000),
            decoder=FakeDecoder(),
            handlers=registry,
            producer=self.producer,
            ledger=None,
            metrics=self.metrics,
            clock_ms=lambda: 1_700_000_000_000,
        )
        self.acks = AckLog()
        self.log = AckingLog(TP("t.audit", 2))

    def entry(self, offset: int = 7) -> Entry:
        event = make_event(
            self.acks,
            offset,
            topic="t.audit",
            partition=2,
            value=encode_event("e1", EVENT_TYPE),
            headers={h.EVENT_ID: "e1", h.EVENT_TYPE: EVENT_TYPE},
        )
        return self.log.add(event)

    def outcome(self, outcome: str) -> float:
        return sample(self.metrics, "streams_events_total", family="audit", outcome=outcome)


async def fails(event: Any, ctx: JobContext) -> None:
    raise Retryable("the dependency is down")


async def test_a_retryable_failure_goes_to_the_dlq_once_with_reason_at_most_once() -> None:
    rig = Rig(fails)
    entry = rig.entry()
    await rig.processor.process(entry)
    assert rig.runs == 1
    assert [s.topic for s in rig.producer.sent] == ["t.audit.dlq"]
    sent = rig.producer.sent[0]
    assert sent.header_dict[h.DLQ_REASON] == "at_most_once"
    assert sent.header_dict[h.ERROR_MESSAGE] == "the dependency is down"
    assert (sent.partition, sent.value) == (2, entry.value)  # unchanged, same partition
    assert entry.done
    assert rig.outcome("dead_lettered") == 1
    assert sample(rig.metrics, "streams_dead_letters_total", family="audit", reason="at_most_once")


async def test_a_permanent_failure_keeps_its_reason() -> None:
    async def refuses(event: Any, ctx: JobContext) -> None:
        raise Permanent("no such mailbox")

    rig = Rig(refuses)
    await rig.processor.process(rig.entry())
    assert rig.producer.sent[0].header_dict[h.DLQ_REASON] == "permanent"


@pytest.mark.parametrize("how", ["send raises", "future fails"])
async def test_a_failed_dlq_produce_is_counted_lost_not_retried(how: str) -> None:
    rig = Rig(fails)
    error = RuntimeError("broker gone")
    if how == "send raises":
        rig.producer.raise_on_send.append(error)
    else:
        rig.producer.fail_futures.append(error)
    entry = rig.entry()
    await rig.processor.process(entry)
    assert rig.producer.calls == 1
    assert entry.done  # the partition is not held: its offset was committed already
    assert rig.outcome("lost") == 1
    assert rig.outcome("dead_lettered") == 0
    assert sample(rig.metrics, "streams_route_failures_total", family="audit") == 1
