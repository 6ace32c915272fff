"""Each faust/aiokafka/mode workaround of ``worker/compat`` on its own."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping
from typing import Any

import pytest
from faust.types import TP

from streams.worker.compat.batch_fetch import hold, release, route_fetches
from streams.worker.compat.fetch import snapshot_fetches
from streams.worker.compat.fetch_wait import set_fetch_max_wait
from streams.worker.compat.read_offsets import UnfilteredReadOffsets, unfilter_read_offsets
from streams.worker.compat.seek import seek_in_consumer_thread
from streams.worker.compat.signals import SignalledWorker


class _Stub:
    """An object to hang faust's private attributes on."""


def test_read_offsets_say_nothing_was_read_for_our_topics() -> None:
    consumer: Any = _Stub()
    unfilter_read_offsets(consumer, {"ours"})
    offsets = consumer._read_offset
    assert isinstance(offsets, UnfilteredReadOffsets)
    offsets[TP("ours", 0)] = 5
    offsets[TP("theirs", 0)] = 5
    assert offsets[TP("ours", 0)] is None
    assert offsets[TP("theirs", 0)] == 5
    assert offsets[TP("theirs", 1)] is None  # faust's default: nothing read yet


async def test_a_fetch_gets_a_snapshot_and_withheld_records_are_reported() -> None:
    consumer: Any = _Stub()
    paused, full, kept = TP("t", 0), TP("t", 1), TP("t", 2)
    live = {paused, full, kept}
    consumer._buffered_partitions = {full}  # faust keeps records of a full buffer itself

    async def getmany(active_partitions: Any, timeout: float) -> dict[Any, list[Any]]:
        assert active_partitions is not live
        live.discard(paused)
        live.discard(full)
        batch = [type("R", (), {"offset": 8})()]
        return {paused: batch, full: batch, kept: batch}

    consumer._getmany = getmany
    withheld: list[Mapping[Any, int]] = []

    async def on_withheld(offsets: Mapping[Any, int]) -> None:
        withheld.append(dict(offsets))

    snapshot_fetches(consumer, on_withheld)
    records = await consumer._getmany(active_partitions=live, timeout=1.0)
    assert set(records) == {full, kept}
    assert withheld == [{paused: 8}]

    async def everything(active_partitions: Any, timeout: float) -> dict[Any, list[Any]]:
        assert active_partitions is None  # client-only apps fetch everything
        return {}

    consumer._getmany = everything
    snapshot_fetches(consumer, on_withheld)
    assert await consumer._getmany(None, 1.0) == {}


def test_the_worker_consumer_is_created_with_the_fetch_wait() -> None:
    consumer: Any = _Stub()
    consumer._thread = _Stub()
    made = type("Kafka", (), {"_fetch_max_wait_ms": 1500})()
    consumer._thread._create_worker_consumer = lambda transport: made
    set_fetch_max_wait(consumer, 100)
    assert consumer._thread._create_worker_consumer("transport") is made
    assert made._fetch_max_wait_ms == 100


class _SeekingConsumer:
    def __init__(self, *, fail: bool = False, hang: bool = False) -> None:
        self.sought: list[dict[Any, int]] = []
        self.fail = fail
        self.hang = hang

    async def seek(self, partition: Any, offset: int) -> None:
        raise AssertionError("seeks from the event loop's thread do not take effect")

    async def seek_wait(self, partitions: Mapping[Any, int]) -> None:
        if self.fail:
            raise RuntimeError("not assigned")
        if self.hang:
            await asyncio.Event().wait()
        self.sought.append(dict(partitions))


async def test_seeks_run_in_the_consumer_thread_and_failures_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ok = _SeekingConsumer()
    await seek_in_consumer_thread(ok, {TP("t", 0): 4})  # type: ignore[arg-type]
    assert ok.sought == [{TP("t", 0): 4}]
    with caplog.at_level(logging.WARNING):
        await seek_in_consumer_thread(_SeekingConsumer(fail=True), {TP("t", 0): 4})  # type: ignore[arg-type]
        await seek_in_consumer_thread(_SeekingConsumer(hang=True), {TP("t", 0): 4}, 0.01)  # type: ignore[arg-type]
    assert [r.message.startswith("seek to") for r in caplog.records] == [True, True]


def test_both_stop_signals_reach_on_stop_signal() -> None:
    heard: list[str] = []

    class Worker(SignalledWorker):
        def on_stop_signal(self, name: str) -> None:
            heard.append(name)

    worker = Worker.__new__(Worker)  # only the handlers are exercised
    worker._on_sigterm()
    worker._on_sigterm()
    worker._on_sigint()
    assert heard == ["SIGTERM", "SIGTERM", "SIGINT"], "mode ignores a second SIGTERM"


class _FetchingConsumer:
    """faust's consumer as the batch route sees it: ``_getmany`` and ``flow_active``."""

    def __init__(self, records: dict[Any, list[Any]]) -> None:
        self.records = records
        self.flow_active = True
        self.asked: list[set[Any] | None] = []

    async def _getmany(self, active_partitions: Any, timeout: float) -> dict[Any, list[Any]]:
        self.asked.append(None if active_partitions is None else set(active_partitions))
        return dict(self.records)


def _routed(
    records: dict[Any, list[Any]],
) -> tuple[_FetchingConsumer, Any, list[tuple[Any, list[Any]]]]:
    consumer = _FetchingConsumer(records)
    monitor: Any = _Stub()
    monitor.stream_inbound_time = {}
    sunk: list[tuple[Any, list[Any]]] = []
    route_fetches(consumer, monitor, {"ours"}, lambda tp, batch: sunk.append((tp, list(batch))))
    return consumer, monitor, sunk


async def test_records_of_our_topics_go_to_the_sink_and_the_rest_to_faust() -> None:
    ours0, ours1, theirs = TP("ours", 0), TP("ours", 1), TP("changelog", 0)
    consumer, monitor, sunk = _routed({ours0: ["a", "b"], theirs: ["c"], ours1: []})
    got = await consumer._getmany({ours0, ours1, theirs}, 1.0)
    assert got == {theirs: ["c"]}
    assert sunk == [(ours0, ["a", "b"])]  # an empty batch is not sunk (nor handed to faust)
    assert set(monitor.stream_inbound_time) == {ours0}  # faust's livelock check is fed
    assert consumer.asked == [{ours0, ours1, theirs}]


async def test_nothing_is_sunk_while_flow_is_suspended() -> None:
    ours, theirs = TP("ours", 0), TP("changelog", 0)
    consumer, monitor, sunk = _routed({ours: ["a"], theirs: ["c"]})
    consumer.flow_active = False  # a rebalance: fetched records are dropped, as faust does
    assert await consumer._getmany({ours, theirs}, 1.0) == {theirs: ["c"]}
    assert sunk == []
    assert monitor.stream_inbound_time == {}


async def test_the_fetch_asks_for_every_active_partition() -> None:
    # held partitions are paused at aiokafka's level, not left out of faust's active set
    # (prefetched records nobody takes would stall every fetch to their broker)
    a, b, theirs = TP("ours", 0), TP("ours", 1), TP("changelog", 0)
    consumer, _, _ = _routed({})
    await consumer._getmany({a, b, theirs}, 1.0)
    await consumer._getmany(None, 1.0)
    assert consumer.asked == [{a, b, theirs}, None]


class _Kafka:
    def __init__(self, thread: threading.Thread | None = None) -> None:
        self.calls: list[tuple[str, Any, str]] = []

    def pause(self, *partitions: Any) -> None:
        self.calls.append(("pause", partitions[0], threading.current_thread().name))

    def resume(self, *partitions: Any) -> None:
        if partitions[0].partition == 9:
            raise RuntimeError("no longer assigned")
        self.calls.append(("resume", partitions[0], threading.current_thread().name))


def test_hold_and_release_pause_and_resume_in_the_consumer_thread() -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="consumer-thread")
    thread.start()
    try:
        kafka = _Kafka()
        consumer: Any = _Stub()
        consumer._thread = _Stub()
        consumer._thread._consumer = kafka
        consumer._thread.thread_loop = loop
        hold(consumer, TP("ours", 0))
        release(consumer, TP("ours", 9))  # a failure there is swallowed (logged)
        release(consumer, TP("ours", 0))
        done = threading.Event()
        loop.call_soon_threadsafe(done.set)
        assert done.wait(5)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
    assert [(c[0], c[1].topic, c[1].partition, c[2]) for c in kafka.calls] == [
        ("pause", "ours", 0, "consumer-thread"),
        ("resume", "ours", 0, "consumer-thread"),
    ]


def test_memory_store_keys_are_forgotten_in_both_maps_and_the_dicts_shrink() -> None:
    from types import SimpleNamespace

    import faust
    from faust.stores.memory import Store

    from streams.worker.compat.memory_store import forget_keys, release_memory, shrink

    app = faust.App("compat-memory-store", broker="kafka://localhost:1", web_enabled=False)
    store = Store("memory://", app, app.Table("done", default=None))
    events = [
        SimpleNamespace(key=k, value=b"v", message=SimpleNamespace(value=b"v", partition=k[0] - 48))
        for k in (b"0|1|a", b"0|2|b", b"1|1|c")
    ]
    store.apply_changelog_batch(events, lambda k: k, lambda v: v)  # what a recovery does
    assert store._key_partition == {b"0|1|a": 0, b"0|2|b": 0, b"1|1|c": 1}
    assert forget_keys(store, [b"0|1|a", b"0|2|b", b"missing"]) == 2
    assert dict(store.items()) == {b"1|1|c": b"v"}
    assert store._key_partition == {b"1|1|c": 1}  # the key objects are not held any more
    before = store.data
    shrink(store)
    assert store.data is not before and dict(store.items()) == {b"1|1|c": b"v"}
    assert release_memory()  # glibc here: malloc_trim exists
    plain: dict[bytes, bytes] = {b"k": b"v"}
    assert forget_keys(plain, [b"k"]) == 1 and plain == {}
    shrink(plain)  # no faust internals: nothing to rebuild, no error


async def test_the_table_manager_starts_without_faust_s_one_second_sleep() -> None:
    import time

    import faust

    from streams.worker.compat.table_start import TableManager

    app = faust.App("compat-table-start", TableManager=TableManager, autodiscover=False)
    manager: Any = app.tables
    assert isinstance(manager, TableManager)
    calls: list[str] = []

    async def update_channels() -> None:
        calls.append("channels")

    class Recovery:
        async def start(self) -> None:
            calls.append("recovery")

    manager._update_channels = update_channels
    manager._recovery = Recovery()
    started = time.monotonic()
    await manager.on_start()
    assert calls == ["channels", "recovery"]  # what faust's on_start does, in its order
    assert time.monotonic() - started < 0.5  # faust's own sleeps 1 s first


async def test_the_loop_closes_after_a_short_grace_not_a_second() -> None:
    import time

    from streams.worker.compat.loop_close import LOOP_CLOSE_GRACE_S, QuickLoopClose

    worker: Any = object.__new__(QuickLoopClose)  # only the sentinel is exercised
    started = time.monotonic()
    await worker._sentinel_task()
    assert LOOP_CLOSE_GRACE_S <= time.monotonic() - started + 0.01 < 0.5
