"""The runtime's guards, wired as in a worker (no faust app started): records are admitted
strictly in sequence, and records faust throws away are read again."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP
from prometheus_client import CollectorRegistry

from streams.catalog import load_catalog
from streams.jobs.registry import HandlerRegistry
from streams.metrics import Metrics
from streams.settings import Settings
from streams.worker.compat.fetch_wait import set_fetch_max_wait
from streams.worker.runtime import Runtime

REPO = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self, now_s: float = 100.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> tuple[Runtime, list[Any]]:
    settings = Settings(
        kafka_bootstrap="127.0.0.1:9",  # never contacted: the app is not started
        topic_prefix="t.",
        app_id="seq-test",
        replication_factor_override=1,
        home=tmp_path,
    )
    rt = Runtime(
        settings=settings,
        catalog=load_catalog(REPO / "topics.yaml"),
        registry=HandlerRegistry(),
        decoder=object(),  # type: ignore[arg-type]
        metrics=Metrics.create(CollectorRegistry()),
        families=["audit"],
        monotonic_s=clock,
        control_plane=False,  # no broker here
    )
    seeks: list[Any] = []

    async def fake_seek(offsets: Mapping[Any, int]) -> None:
        seeks.append(dict(offsets))

    monkeypatch.setattr(rt.consumer, "seek", fake_seek)
    return rt, seeks


def _assign(rt: Runtime, expected: dict[Any, int]) -> None:
    """As after an assignment: these partitions are ours and positioned at ``expected``."""
    rt.sequencer.assign(expected)
    rt.sequencer.position(expected)
    rt.sequencer.positioned_all()


def _reseeks(rt: Runtime, reason: str) -> float:
    value: float = rt.metrics.reseeks.labels("t.audit", reason)._value.get()
    return value


async def test_records_are_admitted_only_in_sequence(runtime: tuple[Runtime, list[Any]]) -> None:
    rt, seeks = runtime
    tp = TP("t.audit", 0)
    _assign(rt, {tp: 5})
    assert rt.partitions.log_for(tp, 5) is not None
    assert rt.sequencer.expected(tp) == 6
    # a record beyond the next expected offset: not admitted, the partition seeks back
    assert rt.partitions.log_for(tp, 8) is None
    await asyncio.sleep(0)
    assert seeks == [{tp: 6}]
    assert rt.partitions.log_for(tp, 9) is None
    await asyncio.sleep(0)
    assert seeks == [{tp: 6}], "seeks again within the retry interval"
    assert rt.partitions.log_for(tp, 5) is None, "a re-delivered record was admitted twice"
    assert rt.partitions.log_for(tp, 6) is not None  # back in sequence
    assert not rt.sequencer.resyncing(tp)
    assert rt.ready()["partitions_in_sequence"]


async def test_nothing_is_admitted_before_positions_are_set(
    runtime: tuple[Runtime, list[Any]],
) -> None:
    rt, _ = runtime
    tp = TP("t.audit", 1)
    rt.sequencer.assign({tp})
    assert rt.partitions.log_for(tp, 0) is None  # assigned, not yet sought to its offset
    rt.sequencer.position({tp: 0})
    rt.sequencer.positioned_all()
    assert rt.partitions.log_for(tp, 0) is not None
    assert rt.partitions.log_for(TP("t.audit", 2), 0) is None  # not ours
    await rt.drain()
    assert rt.partitions.log_for(tp, 1) is None


class _Buffered:
    """What faust puts in a stream buffer: an event with its message."""

    def __init__(self, tp: Any, offset: int) -> None:
        self.message = type("M", (), {"tp": tp, "offset": offset})()


def _stream_buffer(rt: Runtime, *items: _Buffered) -> Any:
    from mode.utils.queues import FlowControlQueue

    queue: Any = FlowControlQueue(flow_control=rt.app.flow_control, clear_on_resume=True)
    for item in items:
        queue.put_nowait(item)
    return queue


async def test_records_faust_discards_on_resume_are_read_again(
    runtime: tuple[Runtime, list[Any]],
) -> None:
    rt, seeks = runtime
    fetched, other = TP("t.audit", 0), TP("t.audit", 1)
    _assign(rt, {fetched: 7, other: 3})
    queue = _stream_buffer(rt, _Buffered(fetched, 7), _Buffered(fetched, 8))
    rt.app.flow_control.resume()  # faust: resume flow at the end of recovery (clears buffers)
    assert queue.qsize() == 0, "faust no longer clears buffers on resume: revisit the guard"
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert seeks == [{fetched: 7}], "the partition that lost records was not sought back"
    assert _reseeks(rt, "cleared") == 1


async def test_a_clear_while_positioning_is_sought_after_positioning(
    runtime: tuple[Runtime, list[Any]],
) -> None:
    rt, seeks = runtime
    tp = TP("t.audit", 2)
    rt.sequencer.assign({tp})
    rt.sequencer.position({tp: 4})  # sought; the assignment handler is not done yet
    queue = _stream_buffer(rt, _Buffered(tp, 4))  # (flow control holds queues weakly)
    rt.app.flow_control.resume()
    await asyncio.sleep(0)
    assert seeks == [], "sought before the partition was positioned"
    assert queue.qsize() == 0
    rt.sequencer.positioned_all()
    await rt.partitions.reseek_lost()  # what on_assigned does once positioned
    assert seeks == [{tp: 4}]


async def test_a_clear_on_revoke_leaves_positioning_to_the_next_assignment(
    runtime: tuple[Runtime, list[Any]],
) -> None:
    rt, seeks = runtime
    tp = TP("t.audit", 0)
    _assign(rt, {tp: 2})
    queue = _stream_buffer(rt, _Buffered(tp, 2))
    rt.app.flow_control.suspend()
    rt.app.flow_control.clear()  # faust's revoke: suspend, pause, clear
    await asyncio.sleep(0)
    assert seeks == [] and queue.qsize() == 0
    _assign(rt, {tp: 2})  # the next assignment positions it (and forgets the loss)
    foreign = _stream_buffer(rt, _Buffered(TP("t.other-topic", 0), 1))
    rt.app.flow_control.resume()  # buffers of topics that are not ours are ignored
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert seeks == [] and foreign.qsize() == 0


async def test_the_watchdog_seeks_back_a_partition_that_delivers_nothing(
    runtime: tuple[Runtime, list[Any]], monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    rt, seeks = runtime
    stuck, idle, waiting = TP("t.audit", 0), TP("t.audit", 1), TP("t.audit", 2)
    _assign(rt, {stuck: 5, idle: 9, waiting: 3})
    highwater = {stuck: 20, idle: 9, waiting: 10}
    monkeypatch.setattr(rt.app.consumer, "highwater", lambda tp: highwater[tp])
    queue = _stream_buffer(rt, _Buffered(waiting, 3))  # its next record waits for a slot
    assert await rt.watchdog.watch() == []  # first look (progress clocks started at 100)
    clock.now_s = 129.0
    assert await rt.watchdog.watch() == []  # not long enough yet
    clock.now_s = 131.0
    assert await rt.watchdog.watch() == [stuck]
    assert seeks == [{stuck: 5}]
    assert _reseeks(rt, "stalled") == 1
    clock.now_s = 140.0
    assert await rt.watchdog.watch() == [], "sought again before another full interval"
    assert rt.partitions.log_for(stuck, 5) is not None  # progress restarts the clock
    clock.now_s = 165.0
    assert await rt.watchdog.watch() == []
    queue.get_nowait()
    rt.app.consumer.pause_partitions({stuck, waiting})  # a retry window is full
    clock.now_s = 300.0
    assert await rt.watchdog.watch() == []
    rt.app.consumer.resume_partitions({stuck, waiting})
    assert sorted(await rt.watchdog.watch()) == sorted([stuck, waiting])


class _Record:
    def __init__(self, offset: int) -> None:
        self.offset = offset


async def test_fetches_see_a_snapshot_and_records_of_paused_partitions_are_given_back(
    runtime: tuple[Runtime, list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt, seeks = runtime
    stream, changelog = TP("t.audit", 0), TP("t.audit-changelog", 0)
    live: set[Any] = {changelog, stream}
    asked: list[set[Any]] = []

    async def fetch(active_partitions: Any, timeout: float) -> dict[Any, list[_Record]]:
        asked.append(active_partitions)
        assert active_partitions is not live, "the consumer thread got faust's live set"
        live.clear()  # meanwhile, on the event loop: recovery pauses everything
        return {stream: [_Record(40), _Record(41)], changelog: [_Record(7)]}

    # faust's fetch asks its consumer thread: the guard the runtime installed wraps it
    consumer: Any = rt.app.consumer
    monkeypatch.setattr(consumer._thread, "getmany", fetch)
    records = await consumer._getmany(active_partitions=live, timeout=1.0)
    assert asked == [{changelog, stream}]
    assert records == {}, "records of partitions no longer active reached faust (it drops them)"
    assert seeks == [{stream: 40}], "only our topics are sought back, to the first record"
    assert _reseeks(rt, "paused") == 1


async def test_a_resumed_partition_is_read_again_from_its_expected_offset(
    runtime: tuple[Runtime, list[Any]],
) -> None:
    rt, seeks = runtime
    tp = TP("t.audit", 0)
    _assign(rt, {tp: 12})
    rt.partitions.pause(tp)
    assert rt.consumer.paused(tp)
    rt.partitions.resume(tp)
    await asyncio.sleep(0)
    assert not rt.consumer.paused(tp)
    assert seeks == [{tp: 12}]
    rt.partitions.resume(TP("t.audit", 5))  # not ours any more: nothing happens
    await asyncio.sleep(0)
    assert seeks == [{tp: 12}]


def test_the_worker_consumer_gets_the_configured_fetch_wait(
    runtime: tuple[Runtime, list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt, _ = runtime
    made = type("Kafka", (), {"_fetch_max_wait_ms": 1500})()  # faust's hard-coded value
    thread: Any = rt.app.consumer._thread
    monkeypatch.setattr(thread, "_create_worker_consumer", lambda transport: made)
    set_fetch_max_wait(rt.app.consumer, rt.settings.fetch_max_wait_ms)  # on the stand-in
    assert thread._create_worker_consumer("transport") is made
    assert made._fetch_max_wait_ms == 100


def test_faust_does_not_filter_our_records_by_read_offset(
    runtime: tuple[Runtime, list[Any]],
) -> None:
    rt, _ = runtime
    offsets: Any = rt.app.consumer._read_offset  # what faust filters fetched records by
    offsets[TP("t.audit", 0)] = 9
    offsets[TP("t.other-topic", 0)] = 9
    assert offsets[TP("t.audit", 0)] is None, "faust would drop re-fetched records below 9"
    assert offsets[TP("t.other-topic", 0)] == 9


async def test_shutdown_empties_the_stream_buffers_before_draining(
    runtime: tuple[Runtime, list[Any]],
) -> None:
    """faust's stream skips *and acks* what it takes from a buffer while flow is suspended;
    an ack past a still-running record would let faust commit past it."""
    rt, seeks = runtime
    tp = TP("t.audit", 0)
    _assign(rt, {tp: 3})
    queue = _stream_buffer(rt, _Buffered(tp, 3), _Buffered(tp, 4))
    await rt.drain()
    assert queue.qsize() == 0
    assert not rt.app.flow_control.is_active()
    assert seeks == [], "a draining worker sought back"
