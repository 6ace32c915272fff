"""Runtime admission: offsets are admitted strictly in sequence (no faust app started)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP
from prometheus_client import CollectorRegistry

from streams.catalog import load_catalog
from streams.jobs.registry import HandlerRegistry
from streams.metrics import Metrics
from streams.settings import Settings
from streams.worker.runtime import Runtime

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Runtime, list[Any]]:
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
    )
    seeks: list[Any] = []

    async def fake_seek(offsets: dict[Any, int]) -> None:
        seeks.append(dict(offsets))

    monkeypatch.setattr(rt, "_seek", fake_seek)
    return rt, seeks


def _assign(rt: Runtime, expected: dict[Any, int]) -> None:
    """As after an assignment: these partitions are ours and positioned at ``expected``."""
    rt._active = set(expected)
    rt._positioned = True
    rt._expected.update(expected)


async def test_records_are_admitted_only_in_sequence(runtime: tuple[Runtime, list[Any]]) -> None:
    rt, seeks = runtime
    tp = TP("t.audit", 0)
    _assign(rt, {tp: 5})
    assert rt._log_for(tp, 5) is not None
    assert rt._expected[tp] == 6
    # a record beyond the next expected offset: not admitted, the partition seeks back
    assert rt._log_for(tp, 8) is None
    await asyncio.sleep(0)
    assert seeks == [{tp: 6}]
    assert rt._log_for(tp, 9) is None
    await asyncio.sleep(0)
    assert seeks == [{tp: 6}], "seeks again within the retry interval"
    assert rt._log_for(tp, 5) is None, "a re-delivered record was admitted twice"
    assert rt._log_for(tp, 6) is not None  # back in sequence
    assert tp not in rt._resyncing
    assert rt.ready()["partitions_in_sequence"]


async def test_nothing_is_admitted_before_positions_are_set(
    runtime: tuple[Runtime, list[Any]],
) -> None:
    rt, _ = runtime
    tp = TP("t.audit", 1)
    rt._active = {tp}
    assert rt._log_for(tp, 0) is None  # assigned, not yet sought to its committed offset
    rt._positioned = True
    rt._expected[tp] = 0
    assert rt._log_for(tp, 0) is not None
    rt.draining = True
    assert rt._log_for(tp, 1) is None
    rt.draining = False
    assert rt._log_for(TP("t.audit", 2), 0) is None  # not ours


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
    assert rt.metrics.reseeks.labels("t.audit", "cleared")._value.get() == 1


async def test_a_clear_while_positioning_is_sought_after_positioning(
    runtime: tuple[Runtime, list[Any]],
) -> None:
    rt, seeks = runtime
    tp = TP("t.audit", 2)
    rt._active = {tp}
    queue = _stream_buffer(rt, _Buffered(tp, 4))  # (flow control holds queues weakly)
    rt.app.flow_control.resume()
    await asyncio.sleep(0)
    assert seeks == [], "sought before the partition's expected offset was known"
    assert queue.qsize() == 0
    rt._expected[tp] = 4
    rt._positioned = True
    await rt._reseek_lost()  # what _on_assigned does once positioned
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
    rt._positioned = False  # our revoke handler runs next; the next assignment seeks
    rt._lost.clear()
    foreign = _stream_buffer(rt, _Buffered(TP("t.other-topic", 0), 1))
    rt._positioned = True
    rt.app.flow_control.resume()  # buffers of topics that are not ours are ignored
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert seeks == [] and foreign.qsize() == 0


async def test_the_watchdog_seeks_back_a_partition_that_delivers_nothing(
    runtime: tuple[Runtime, list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt, seeks = runtime
    stuck, idle, waiting = TP("t.audit", 0), TP("t.audit", 1), TP("t.audit", 2)
    _assign(rt, {stuck: 5, idle: 9, waiting: 3})
    highwater = {stuck: 20, idle: 9, waiting: 10}
    monkeypatch.setattr(rt.app.consumer, "highwater", lambda tp: highwater[tp])
    queue = _stream_buffer(rt, _Buffered(waiting, 3))  # its next record waits for a slot
    assert await rt.watch_stalls(100.0) == []  # first look: progress clocks start
    assert await rt.watch_stalls(129.0) == []  # not long enough yet
    assert await rt.watch_stalls(131.0) == [stuck]
    assert seeks == [{stuck: 5}]
    assert rt.metrics.reseeks.labels("t.audit", "stalled")._value.get() == 1
    assert await rt.watch_stalls(140.0) == [], "sought again before another full interval"
    rt._expected[stuck] = 6  # progress restarts the clock
    assert await rt.watch_stalls(165.0) == []
    queue.get_nowait()
    rt.app.consumer.pause_partitions({stuck, waiting})  # a retry window is full
    assert await rt.watch_stalls(300.0) == []
    rt.app.consumer.resume_partitions({stuck, waiting})
    assert sorted(await rt.watch_stalls(300.0)) == sorted([stuck, waiting])


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

    # the consumer's fetch was captured when the runtime was built: rebuild the guard
    monkeypatch.setattr(rt.app.consumer, "_getmany", fetch)
    rt._guard_fetch()
    records = await rt.app.consumer._getmany(active_partitions=live, timeout=1.0)
    assert asked == [{changelog, stream}]
    assert records == {}, "records of partitions no longer active reached faust (it drops them)"
    assert seeks == [{stream: 40}], "only our topics are sought back, to the first record"
    assert rt.metrics.reseeks.labels("t.audit", "paused")._value.get() == 1


async def test_a_resumed_partition_is_read_again_from_its_expected_offset(
    runtime: tuple[Runtime, list[Any]],
) -> None:
    rt, seeks = runtime
    tp = TP("t.audit", 0)
    _assign(rt, {tp: 12})
    rt._pause(tp)
    assert tp in rt.app.consumer._paused_partitions
    rt._resume(tp)
    await asyncio.sleep(0)
    assert tp not in rt.app.consumer._paused_partitions
    assert seeks == [{tp: 12}]
    rt._resume(TP("t.audit", 5))  # not ours any more: nothing happens
    await asyncio.sleep(0)
    assert seeks == [{tp: 12}]


def test_the_worker_consumer_gets_the_configured_fetch_wait(
    runtime: tuple[Runtime, list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt, _ = runtime
    made = type("Kafka", (), {"_fetch_max_wait_ms": 1500})()  # faust's hard-coded value
    thread: Any = rt.app.consumer._thread
    monkeypatch.setattr(thread, "_create_worker_consumer", lambda transport: made)
    rt._tune_fetch_wait(rt.settings.fetch_max_wait_ms)
    assert thread._create_worker_consumer("transport") is made
    assert made._fetch_max_wait_ms == 100


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
