"""The assign / revoke / release / drain protocol, against small fakes of the consumer and of
a family's parts (pure logic: the real consumer is exercised by the integration tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from types import SimpleNamespace
from typing import NamedTuple

import pytest
from prometheus_client import CollectorRegistry

from streams.core.topology import FamilyTopics
from streams.errors import TopologyError
from streams.metrics import Metrics
from streams.worker.rebalance import Rebalancer
from streams.worker.sequencer import Sequencer


class TP(NamedTuple):
    topic: str
    partition: int


MAIN, RETRY = "t.audit", "t.audit.retry-1s"


class FakeConsumer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.committed: dict[TP, int | None] = {}
        self.log_start: dict[TP, int] = {}
        self.assigned: set[TP] = set()
        self.active_flow = True
        self.commit_fails = False
        self.position_gate: asyncio.Event | None = None

    def pause(self, tps: Collection[TP]) -> None:
        self.calls.append(("pause", set(tps)))

    def resume(self, tps: Collection[TP]) -> None:
        self.calls.append(("resume", set(tps)))

    def assignment(self) -> set[TP]:
        return set(self.assigned)

    async def commit_offsets(self, offsets: Mapping[TP, int]) -> bool:
        self.calls.append(("commit", dict(offsets)))
        if self.commit_fails:
            raise RuntimeError("broker gone")
        return True

    async def seek(self, offsets: Mapping[TP, int]) -> None:
        self.calls.append(("seek", dict(offsets)))

    async def position(self, starts: Mapping[TP, int]) -> None:
        if self.position_gate is not None:
            await self.position_gate.wait()
        self.calls.append(("position", dict(starts)))

    async def start_offsets(self, tps: Collection[TP]) -> dict[TP, tuple[int | None, int]]:
        return {tp: (self.committed.get(tp), self.log_start.get(tp, 0)) for tp in tps}

    def flow_active(self) -> bool:
        return self.active_flow

    def stop_flow(self) -> None:
        self.calls.append(("stop_flow", None))


class FakeLedger:
    def __init__(self) -> None:
        self.partitions: set[int] = set()

    def assign(self, partitions: set[int]) -> None:
        self.partitions = set(partitions)

    def revoke(self, partitions: set[int]) -> None:
        self.partitions -= partitions


class FakeScheduler:
    def __init__(self) -> None:
        self.waiting: set[TP] = set()
        self.repaused = 0

    def drop(self, tps: set[TP]) -> int:
        dropped = self.waiting & tps
        self.waiting -= tps
        return len(dropped)

    def repause(self) -> None:
        self.repaused += 1


class FakeLanes:
    def __init__(self) -> None:
        self.running: set[TP] = set()
        self.cancelled: set[TP] = set()
        self.idle = asyncio.Event()

    async def wait_idle(self, tps: set[TP], timeout_s: float) -> bool:
        if not self.running & tps:
            return True
        try:
            await asyncio.wait_for(self.idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def cancel(self, tps: set[TP]) -> int:
        doomed = self.running & tps
        self.cancelled |= doomed
        self.running -= doomed
        return len(doomed)

    def saturated(self) -> bool:
        return False


class FakeBatches(FakeLanes):
    """Events waiting for their batch (``waiting``) and a running batch (``running``)."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: set[TP] = set()

    def drop(self, tps: set[TP]) -> int:
        dropped = self.waiting & tps
        self.waiting -= dropped
        return len(dropped)


class FakeWriter:
    def __init__(self) -> None:
        self.flushes: list[float | None] = []

    async def flush(self, timeout_s: float | None = None) -> bool:
        self.flushes.append(timeout_s)
        return True


class FakeFamily:
    name = "audit"
    topics = FamilyTopics(family="audit", main=MAIN, retries=(RETRY,), dlq="t.audit.dlq")

    def __init__(self) -> None:
        self.ledger = FakeLedger()
        self.schedulers = [FakeScheduler()]
        self.lanes = FakeLanes()
        self.batches = FakeBatches()
        self.writers = [FakeWriter()]


def finish_one(rb: Rebalancer, tp: TP, offset: int) -> None:
    """Admit and finish the record at ``offset`` of ``tp`` (its log advances past it)."""
    plog = rb.log_for(tp, offset)
    assert plog is not None
    record = SimpleNamespace(
        topic=tp.topic,
        partition=tp.partition,
        offset=offset,
        key=None,
        value=b"",
        headers=[],
        timestamp=0,
    )
    plog.add(record).finish()


class Harness(NamedTuple):
    rebalancer: Rebalancer
    consumer: FakeConsumer
    family: FakeFamily
    crashes: list[BaseException]


@pytest.fixture
def harness() -> Harness:
    consumer, family, crashes = FakeConsumer(), FakeFamily(), []

    async def crash(exc: BaseException) -> None:
        crashes.append(exc)

    rebalancer = Rebalancer(
        consumer=consumer,
        sequencer=Sequencer(),
        metrics=Metrics.create(CollectorRegistry()),
        drain_timeout_s=0.05,
        crash=crash,
    )
    rebalancer.add_family(family)
    return Harness(rebalancer, consumer, family, crashes)


async def test_an_assignment_positions_every_partition_before_admitting(harness: Harness) -> None:
    rb, consumer, family, _ = harness
    main0, retry0 = TP(MAIN, 0), TP(RETRY, 0)
    consumer.committed = {main0: 12}
    consumer.log_start = {retry0: 4}
    consumer.position_gate = asyncio.Event()
    assigning = asyncio.create_task(rb.on_assigned(None, {main0, retry0, TP("foreign", 0)}))
    await asyncio.sleep(0)
    assert rb.log_for(main0, 12) is None, "admitted before the partitions were positioned"
    admitted = asyncio.create_task(rb.admission())
    await asyncio.sleep(0)
    assert not admitted.done()
    consumer.position_gate.set()
    await assigning
    await admitted
    assert ("position", {main0: 12, retry0: 4}) in consumer.calls, "every partition sought"
    assert rb.log_for(main0, 12) is not None
    assert rb.assigned_once and rb.topology_errors == []
    assert family.ledger.partitions == {0}
    assert family.schedulers[0].repaused == 1


async def test_a_broken_co_partitioning_is_reported_and_crashes(harness: Harness) -> None:
    rb, _, _, crashes = harness
    await rb.on_assigned(None, {TP(MAIN, 0), TP(MAIN, 1), TP(RETRY, 0)})
    assert len(rb.topology_errors) == 1 and "co-partitioning broken" in rb.topology_errors[0]
    assert len(crashes) == 1 and isinstance(crashes[0], TopologyError)


async def test_release_drops_waiting_drains_running_flushes_acks_and_commits(
    harness: Harness,
) -> None:
    rb, consumer, family, _ = harness
    main0, main1, retry0 = TP(MAIN, 0), TP(MAIN, 1), TP(RETRY, 0)
    await rb.on_assigned(None, {main0, main1, retry0, TP(RETRY, 1)})
    consumer.assigned = {main0, main1, retry0, TP(RETRY, 1)}
    finish_one(rb, main0, 0)
    plog = rb.log_for(main0, 1)
    assert plog is not None
    family.schedulers[0].waiting = {retry0}
    family.lanes.running = {main0}  # a handler that does not finish within the deadline
    family.batches.waiting = {main0, main1}  # events waiting for their batch
    family.batches.running = {main0, main1}  # a batch holding events of both
    await rb.on_revoked(None, {main0, retry0, TP("foreign", 3)})
    assert family.schedulers[0].waiting == set()
    assert family.lanes.cancelled == {main0}, "a handler ran past the drain deadline"
    assert family.batches.waiting == {main1}, "only the revoked partition's events drop"
    assert family.batches.cancelled == {main0}, "a batch ran past the drain deadline"
    assert family.writers[0].flushes, "done-markers were not flushed"
    assert plog.closed and main0 not in rb.logs
    assert family.ledger.partitions == {1}
    assert consumer.calls[-1] == ("commit", {main0: 1}), "the finished prefix is committed"
    assert rb.log_for(main1, 0) is None, "admitted while revoking"
    assert not rb.sequencer.owns(main0) and rb.sequencer.owns(main1)


async def test_a_failed_commit_on_release_is_left_to_the_next_owner(harness: Harness) -> None:
    rb, consumer, _, _ = harness
    await rb.on_assigned(None, {TP(MAIN, 0), TP(RETRY, 0)})
    consumer.assigned = {TP(MAIN, 0), TP(RETRY, 0)}
    finish_one(rb, TP(MAIN, 0), 0)
    consumer.commit_fails = True
    await rb.release({TP(MAIN, 0)}, 0.05)  # does not raise
    assert ("commit", {TP(MAIN, 0): 1}) in consumer.calls


async def test_drain_pauses_stops_flow_and_releases_everything(harness: Harness) -> None:
    rb, consumer, _, _ = harness
    tps = {TP(MAIN, 0), TP(RETRY, 0)}
    await rb.on_assigned(None, tps)
    consumer.assigned = tps | {TP("foreign", 0)}
    finish_one(rb, TP(MAIN, 0), 0)
    await rb.drain()
    names = [name for name, _ in consumer.calls]
    assert names.index("pause") < names.index("stop_flow") < names.index("commit")
    assert rb.sequencer.active == set() and rb.sequencer.draining
    await asyncio.wait_for(rb.admission(), 1.0)  # lanes holding a record are woken


async def test_shutdown_during_an_assignment_stops_waiting_for_the_seeks(
    harness: Harness,
) -> None:
    rb, consumer, _, _ = harness
    consumer.position_gate = asyncio.Event()  # the consumer thread never answers
    assigning = asyncio.create_task(rb.on_assigned(None, {TP(MAIN, 0), TP(RETRY, 0)}))
    await asyncio.sleep(0)
    await rb.drain()
    await asyncio.wait_for(assigning, 1.0)
    assert not rb.sequencer.positioned


async def test_out_of_sequence_records_and_resumes_seek_back(harness: Harness) -> None:
    rb, consumer, _, _ = harness
    tp = TP(MAIN, 0)
    consumer.committed = {tp: 3}
    await rb.on_assigned(None, {tp, TP(RETRY, 0)})
    consumer.calls.clear()
    assert rb.log_for(tp, 5) is None
    rb.resume(tp)
    rb.resume(TP(MAIN, 7))  # not ours: not even resumed
    await asyncio.sleep(0)
    assert consumer.calls == [("resume", {tp}), ("seek", {tp: 3}), ("seek", {tp: 3})]


async def test_what_faust_discards_is_sought_back_only_for_our_topics(harness: Harness) -> None:
    rb, consumer, _, _ = harness
    tp = TP(MAIN, 0)
    await rb.on_assigned(None, {tp, TP(RETRY, 0)})
    consumer.calls.clear()
    await rb.on_withheld({tp: 40, TP("t.audit-changelog", 0): 7})
    assert consumer.calls == [("seek", {tp: 40})]
    consumer.calls.clear()
    consumer.active_flow = False  # faust's revoke clears with flow suspended
    rb.on_discarded({tp})
    await asyncio.sleep(0)
    assert consumer.calls == []
    consumer.active_flow = True
    rb.on_discarded({tp})
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert consumer.calls == [("seek", {tp: 0})]
