"""Each faust/aiokafka/mode workaround of ``worker/compat`` on its own."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import pytest
from faust.types import TP

from streams.worker.compat.fetch import snapshot_fetches
from streams.worker.compat.fetch_wait import set_fetch_max_wait
from streams.worker.compat.read_offsets import UnfilteredReadOffsets, unfilter_read_offsets
from streams.worker.compat.revoke_commit import commit_before_revoke
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


async def test_the_acked_prefix_is_committed_before_faust_forgets_it_on_revoke() -> None:
    calls: list[str] = []

    class Revoking:
        async def on_partitions_revoked(self, revoked: Any) -> None:
            calls.append(f"faust forgets {sorted(revoked)}")

    async def commit() -> None:
        calls.append("commit")

    async def failing_commit() -> None:
        calls.append("commit fails")
        raise RuntimeError("broker gone")

    consumer = Revoking()
    commit_before_revoke(consumer, commit)
    await consumer.on_partitions_revoked({1, 0})
    assert calls == ["commit", "faust forgets [0, 1]"]
    calls.clear()
    other = Revoking()
    commit_before_revoke(other, failing_commit)
    await other.on_partitions_revoked({2})  # a failed commit does not stop the revoke
    assert calls == ["commit fails", "faust forgets [2]"]
