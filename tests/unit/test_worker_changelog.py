"""ChangelogWriter: group commit of table writes; callbacks only once the broker acknowledged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from tests.unit.worker_fakes import DictStore, FakeProducer, settle, until

from streams.worker.changelog import ChangelogWriter

TOPIC = "app-audit.done-changelog"


class Rig:
    def __init__(self, *, auto: bool) -> None:
        self.producer = FakeProducer(auto=auto)
        self.store = DictStore()
        self.flushes: list[float] = []
        self.writer = ChangelogWriter(
            producer=self.producer,
            topic=TOPIC,
            store=self.store,
            on_flush=self.flushes.append,
            retry_backoff_s=0.01,
        )
        self.calls: list[str] = []

    def cb(self, name: str) -> Callable[[], None]:
        return lambda: self.calls.append(name)

    def sent(self) -> list[tuple[int | None, bytes | None, bytes | None]]:
        return [(s.partition, s.key, s.value) for s in self.producer.sent]


@pytest.fixture
async def rig_factory() -> AsyncIterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(*, auto: bool = True) -> Rig:
        rig = Rig(auto=auto)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        await rig.writer.stop()


async def test_updates_of_one_key_coalesce_into_one_record_per_flush(
    rig_factory: Callable[..., Rig],
) -> None:
    r = rig_factory()
    for value in (b"1", b"2", b"3"):
        r.writer.put(0, b"k", value, r.cb(f"k={value.decode()}"))
    r.writer.put(1, b"j", b"x")
    r.writer.put(1, b"gone", b"y")
    r.writer.put(1, b"gone", None)  # deleted again before the flush: a tombstone
    assert r.store == {b"k": b"3", b"j": b"x"}  # the store changes at once
    r.writer.start()
    assert await r.writer.flush(1.0)
    assert sorted(r.sent(), key=repr) == sorted(
        [(0, b"k", b"3"), (1, b"j", b"x"), (1, b"gone", None)], key=repr
    )
    assert all(s.topic == TOPIC for s in r.producer.sent)
    assert r.calls == ["k=1", "k=2", "k=3"]  # every update's callback, in order
    assert len(r.flushes) == 1


async def test_writes_made_during_a_flush_go_to_the_next_one_coalesced(
    rig_factory: Callable[..., Rig],
) -> None:
    r = rig_factory(auto=False)
    r.writer.start()
    r.writer.put(0, b"k", b"1")
    await until(lambda: len(r.producer.sent) == 1)
    r.writer.put(0, b"k", b"2")
    r.writer.put(0, b"k", b"3")
    await settle()
    assert len(r.producer.sent) == 1  # one flush in flight at a time
    r.producer.resolve_all()
    await until(lambda: len(r.producer.sent) == 2)
    r.producer.resolve_all()
    assert await r.writer.flush(1.0)
    assert r.sent() == [(0, b"k", b"1"), (0, b"k", b"3")]


async def test_callbacks_run_only_after_the_broker_acknowledged(
    rig_factory: Callable[..., Rig],
) -> None:
    r = rig_factory(auto=False)
    r.writer.start()
    r.writer.put(2, b"k", b"v", r.cb("k"))
    await until(lambda: len(r.producer.sent) == 1)
    await settle()
    assert r.calls == []
    assert not await r.writer.flush(0.05)
    assert r.calls == []
    r.producer.resolve_all()
    assert await r.writer.flush(1.0)
    assert r.calls == ["k"]
    assert r.producer.sent[0].partition == 2


async def test_a_callback_waits_for_every_record_of_its_flush(
    rig_factory: Callable[..., Rig],
) -> None:
    r = rig_factory(auto=False)
    r.writer.put(0, b"a", b"1", r.cb("a"))
    r.writer.put(1, b"b", b"1", r.cb("b"))
    r.writer.start()
    await until(lambda: len(r.producer.sent) == 2)
    r.producer.sent[0].future.set_result(None)
    await settle()
    assert r.calls == []
    r.producer.sent[1].future.set_result(None)
    assert await r.writer.flush(1.0)
    assert sorted(r.calls) == ["a", "b"]


@pytest.mark.parametrize("how", ["future fails", "send raises"])
async def test_a_failing_send_is_retried_and_callbacks_run_once(
    rig_factory: Callable[..., Rig], how: str
) -> None:
    r = rig_factory()
    if how == "future fails":
        r.producer.fail_futures.append(RuntimeError("NotLeaderForPartition"))
    else:
        r.producer.raise_on_send.append(RuntimeError("producer buffer full"))
    sent_when_called: list[int] = []
    r.writer.put(0, b"k", b"v", lambda: sent_when_called.append(len(r.producer.delivered())))
    r.writer.start()
    assert await r.writer.flush(1.0)
    assert sent_when_called == [1]  # once, and only after a delivered send
    assert r.producer.calls == 2
    assert [(s.partition, s.key, s.value) for s in r.producer.delivered()] == [(0, b"k", b"v")]


async def test_discard_drops_pending_writes_of_revoked_partitions(
    rig_factory: Callable[..., Rig],
) -> None:
    r = rig_factory()
    r.writer.put(0, b"a", b"1", r.cb("a"))
    r.writer.put(1, b"b", b"1", r.cb("b"))
    r.writer.on_next_flush(1, r.cb("b-next"))
    r.writer.discard({1})
    r.writer.start()
    assert await r.writer.flush(1.0)
    await settle()
    assert r.sent() == [(0, b"a", b"1")]
    assert r.calls == ["a"]  # the revoked partition's callbacks never run


async def test_discarding_everything_pending_makes_the_writer_idle(
    rig_factory: Callable[..., Rig],
) -> None:
    r = rig_factory(auto=False)
    r.writer.put(3, b"a", b"1", r.cb("a"))
    assert not await r.writer.flush(0.01)
    r.writer.discard({3})
    assert await r.writer.flush(0.01)
    r.writer.start()
    await settle()
    assert r.producer.sent == []
    assert r.calls == []


async def test_discard_does_not_end_an_in_flight_flush_early(
    rig_factory: Callable[..., Rig],
) -> None:
    r = rig_factory(auto=False)
    r.writer.start()
    r.writer.put(0, b"kept", b"1", r.cb("kept"))
    await until(lambda: len(r.producer.sent) == 1)
    r.writer.discard({1})  # another partition is revoked meanwhile
    assert not await r.writer.flush(0.05)  # partition 0's write is still not acknowledged
    r.producer.resolve_all()
    assert await r.writer.flush(1.0)
    assert r.calls == ["kept"]


async def test_a_before_flush_hook_adds_writes_to_the_same_flush(
    rig_factory: Callable[..., Rig],
) -> None:
    r = rig_factory(auto=False)
    hook_runs: list[int] = []

    def hook() -> None:
        hook_runs.append(len(r.producer.sent))
        if len(hook_runs) == 1:
            r.writer.put(2, b"batch", b"cut", r.cb("batch"))

    r.writer.before_flush(hook)
    r.writer.on_next_flush(2, r.cb("next-flush"))  # registered before the hook's write exists
    r.writer.put(0, b"user", b"1", r.cb("user"))
    r.writer.start()
    await until(lambda: len(r.producer.sent) == 2)
    await settle()
    assert sorted(r.sent(), key=repr) == sorted(
        [(0, b"user", b"1"), (2, b"batch", b"cut")], key=repr
    )
    assert r.calls == []
    r.producer.resolve_all()
    assert await r.writer.flush(1.0)
    assert sorted(r.calls) == ["batch", "next-flush", "user"]
    assert len(r.flushes) == 1  # one flush carried both
    assert hook_runs[0] == 0  # the hook ran before anything was sent


async def test_on_next_flush_alone_triggers_a_flush(rig_factory: Callable[..., Rig]) -> None:
    r = rig_factory()
    r.writer.start()
    r.writer.on_next_flush(0, r.cb("empty"))
    assert await r.writer.flush(1.0)
    assert r.calls == ["empty"]
    assert r.producer.sent == []


async def test_flush_times_out_while_the_producer_hangs(rig_factory: Callable[..., Rig]) -> None:
    r = rig_factory(auto=False)
    r.writer.start()
    assert await r.writer.flush(0.01)  # nothing pending
    r.writer.put(0, b"k", b"v", r.cb("k"))
    started = asyncio.get_running_loop().time()
    assert not await r.writer.flush(0.05)
    assert asyncio.get_running_loop().time() - started < 0.5
    assert r.calls == []
    r.producer.resolve_all()
    assert await r.writer.flush(1.0)


async def test_a_raising_callback_does_not_stop_the_writer(
    rig_factory: Callable[..., Rig],
) -> None:
    r = rig_factory()

    def broken() -> None:
        raise RuntimeError("callback bug")

    r.writer.put(0, b"a", b"1", broken)
    r.writer.put(0, b"b", b"1", r.cb("b"))
    r.writer.start()
    assert await r.writer.flush(1.0)
    assert r.calls == ["b"]
    r.writer.put(0, b"c", b"1", r.cb("c"))
    assert await r.writer.flush(1.0)
    assert r.calls == ["b", "c"]


async def test_stop_cancels_a_hanging_flush(rig_factory: Callable[..., Rig]) -> None:
    r = rig_factory(auto=False)
    r.writer.start()
    r.writer.put(0, b"k", b"v", r.cb("k"))
    await until(lambda: len(r.producer.sent) == 1)
    await asyncio.wait_for(r.writer.stop(), 1.0)
    r.producer.resolve_all()
    await settle()
    assert r.calls == []


def test_put_updates_the_store_at_once() -> None:
    store: dict[Any, Any] = {b"old": b"x"}
    writer = ChangelogWriter(producer=FakeProducer(), topic=TOPIC, store=store)
    writer.put(0, b"new", b"1")
    writer.put(0, b"old", None)
    assert store == {b"new": b"1"}
