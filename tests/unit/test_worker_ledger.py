"""Ledger: batched idempotency bookkeeping over a store and a ChangelogWriter."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import pytest
from tests.unit.worker_fakes import Clock, DictStore, FakeProducer, settle, until

from streams.core.idempotency import batch_key, event_hash, pack_batch, unpack_batch
from streams.worker.changelog import ChangelogWriter
from streams.worker.ledger import Ledger

TTL_MS = 60_000


class Rig:
    def __init__(self, store: DictStore | None = None, *, auto: bool = True) -> None:
        self.clock = Clock()
        self.producer = FakeProducer(auto=auto)
        self.store = store if store is not None else DictStore()
        self.writer = ChangelogWriter(
            producer=self.producer, topic="app-audit.done-changelog", store=self.store
        )
        self.sizes: list[int] = []
        self.ledger = Ledger(
            writer=self.writer,
            store=self.store,
            ttl_ms=TTL_MS,
            clock_ms=self.clock,
            on_size=self.sizes.append,
        )
        self.done: list[str] = []

    def cb(self, name: str) -> Callable[[], None]:
        return lambda: self.done.append(name)

    def record(self, partition: int, event_id: str) -> None:
        self.ledger.record(partition, event_hash(event_id), self.cb(event_id))

    def seen(self, partition: int, event_id: str) -> bool:
        return self.ledger.seen(partition, event_hash(event_id))


@pytest.fixture
async def rig_factory() -> AsyncIterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(store: DictStore | None = None, *, auto: bool = True, start: bool = True) -> Rig:
        rig = Rig(store, auto=auto)
        if start:
            rig.writer.start()
        made.append(rig)
        return rig

    yield make
    for rig in made:
        await rig.writer.stop()


def hashes_in(value: bytes) -> set[int]:
    return set(unpack_batch(value)[1])


async def test_record_marks_seen_at_once_and_calls_back_once_durable(
    rig_factory: Callable[..., Rig],
) -> None:
    r = rig_factory(auto=False)
    r.ledger.assign({0})
    assert not r.seen(0, "e1")
    r.record(0, "e1")
    assert r.seen(0, "e1")  # a duplicate arriving now is skipped
    assert not r.seen(1, "e1")  # per partition
    await until(lambda: len(r.producer.sent) == 1)
    await settle()
    assert r.done == []  # not durable yet
    r.producer.resolve_all()
    assert await r.writer.flush(1.0)
    assert r.done == ["e1"]
    sent = r.producer.sent[0]
    assert sent.partition == 0
    assert hashes_in(sent.value or b"") == {event_hash("e1")}


async def test_one_batch_entry_per_partition_per_flush(rig_factory: Callable[..., Rig]) -> None:
    r = rig_factory()
    r.ledger.assign({0, 1, 2})
    ids = {0: [f"p0-{i}" for i in range(50)], 1: [f"p1-{i}" for i in range(30)]}
    for partition, event_ids in ids.items():
        for event_id in event_ids:
            r.record(partition, event_id)  # all before the writer's task gets to run
    assert await r.writer.flush(1.0)
    assert sorted(s.partition or 0 for s in r.producer.sent) == [0, 1]
    assert len(r.store) == 2
    for s in r.producer.sent:
        assert s.key is not None and s.value is not None
        assert s.key.startswith(f"{s.partition}|".encode())
        assert r.store[s.key] == s.value
        expires_at_ms, _ = unpack_batch(s.value)
        assert expires_at_ms == r.clock() + TTL_MS
        assert hashes_in(s.value) == {event_hash(e) for e in ids[s.partition or 0]}
    assert sorted(r.done) == sorted(ids[0] + ids[1])
    assert r.sizes[-1] == 80


async def test_later_records_go_to_a_new_batch(rig_factory: Callable[..., Rig]) -> None:
    r = rig_factory()
    r.ledger.assign({0})
    r.record(0, "a")
    assert await r.writer.flush(1.0)
    r.record(0, "b")
    assert await r.writer.flush(1.0)
    assert len(r.store) == 2
    assert [hashes_in(s.value or b"") for s in r.producer.sent] == [
        {event_hash("a")},
        {event_hash("b")},
    ]


async def test_a_new_ledger_rebuilds_from_the_store_after_assign(
    rig_factory: Callable[..., Rig],
) -> None:
    first = rig_factory()
    first.ledger.assign({0, 1, 2})
    for partition in (0, 1, 2):
        first.record(partition, f"e{partition}")
    assert await first.writer.flush(1.0)
    assert len(first.store) == 3

    # another worker (or this one after a restart) over the recovered table
    second = rig_factory(DictStore(first.store))
    second.ledger.assign({0, 1})
    assert second.seen(0, "e0")
    assert second.seen(1, "e1")
    assert not second.seen(2, "e2")  # not ours
    assert not second.seen(0, "e1")  # per partition
    partitions = sorted(int(k.split(b"|")[0]) for k in second.store)
    assert partitions == [0, 1]  # keys of partitions that moved away were dropped
    assert second.producer.sent == []  # dropping them is local: no tombstones
    assert len(second.ledger) == 2
    assert second.sizes[-1] == 2


async def test_reassignment_rebuilds_the_index(rig_factory: Callable[..., Rig]) -> None:
    store = DictStore()
    store[batch_key(3, 1, "n1")] = pack_batch(10**15, [event_hash("x")])
    r = rig_factory(store)
    r.ledger.assign({1})
    assert not r.seen(3, "x")
    assert batch_key(3, 1, "n1") not in store  # foreign at the first assignment
    store[batch_key(3, 2, "n2")] = pack_batch(10**15, [event_hash("y")])  # recovered later
    r.ledger.assign({1, 3})
    assert r.seen(3, "y")


async def test_expire_removes_batches_past_the_ttl(rig_factory: Callable[..., Rig]) -> None:
    r = rig_factory()
    r.ledger.assign({0})
    r.record(0, "old")
    assert await r.writer.flush(1.0)
    (old_key,) = r.store
    r.clock.advance(TTL_MS // 2)
    r.record(0, "young")
    assert await r.writer.flush(1.0)
    r.clock.advance(TTL_MS // 2 - 1)
    assert r.ledger.expire() == 0
    assert r.seen(0, "old")
    r.clock.advance(1)  # exactly at expires_at_ms
    sent_before = len(r.producer.sent)
    assert r.ledger.expire() == 1
    assert not r.seen(0, "old")
    assert r.seen(0, "young")
    assert old_key not in r.store
    assert await r.writer.flush(1.0)
    tombstones = r.producer.sent[sent_before:]
    assert [(s.partition, s.key, s.value) for s in tombstones] == [(0, old_key, None)]
    assert r.ledger.expire() == 0  # gone for good
    assert r.sizes[-1] == 1


async def test_expire_applies_to_batches_loaded_from_the_store(
    rig_factory: Callable[..., Rig],
) -> None:
    store = DictStore()
    r = rig_factory(store)
    key = batch_key(0, 1, "n")
    store[key] = pack_batch(r.clock() - 1, [event_hash("stale")])
    r.ledger.assign({0})
    assert r.seen(0, "stale")  # loaded; expiry is the expiry loop's job
    assert r.ledger.expire() == 1
    assert not r.seen(0, "stale")
    assert await r.writer.flush(1.0)
    assert [(s.key, s.value) for s in r.producer.sent] == [(key, None)]


async def test_malformed_store_entries_are_ignored_with_a_warning(
    rig_factory: Callable[..., Rig], caplog: pytest.LogCaptureFixture
) -> None:
    store = DictStore()
    good = batch_key(0, 1, "good")
    store[good] = pack_batch(10**15, [event_hash("ok")])
    store[b"no-separator"] = b"whatever"
    store[b"abc|1|n"] = pack_batch(10**15, [1])  # partition is not a number
    store[batch_key(0, 2, "short")] = b"\x00\x01\x02"  # not a batch
    store[batch_key(0, 3, "odd")] = pack_batch(10**15, [event_hash("lost")]) + b"\x00"
    store[batch_key(0, 4, "none")] = None
    r = rig_factory(store)
    r.ledger.assign({0})
    with caplog.at_level(logging.WARNING, logger="streams.worker.ledger"):
        assert r.seen(0, "ok")
    assert not r.seen(0, "lost")
    warnings = [rec for rec in caplog.records if "malformed" in rec.getMessage()]
    assert len(warnings) == 5
    assert len(r.ledger) == 1
    r.record(0, "new")  # still works
    assert await r.writer.flush(1.0)
    assert r.done == ["new"]


async def test_revoke_forgets_the_partition_and_its_pending_batch(
    rig_factory: Callable[..., Rig],
) -> None:
    r = rig_factory(start=False)
    r.ledger.assign({0, 1})
    r.record(0, "kept")
    r.record(1, "revoked")
    r.ledger.revoke({1})
    assert not r.seen(1, "revoked")
    assert r.seen(0, "kept")
    r.writer.start()
    assert await r.writer.flush(1.0)
    assert [s.partition for s in r.producer.sent] == [0]
    assert r.done == ["kept"]  # the revoked partition's callback never runs


async def test_records_between_flushes_all_call_back(rig_factory: Callable[..., Rig]) -> None:
    r = rig_factory(auto=False)
    r.ledger.assign({0})
    r.record(0, "a")
    await until(lambda: len(r.producer.sent) == 1)
    r.record(0, "b")  # arrives while the first batch is in flight
    r.record(0, "c")
    await settle()
    assert len(r.producer.sent) == 1
    r.producer.resolve_all()
    await until(lambda: len(r.producer.sent) == 2)
    await settle()
    assert r.done == ["a"]
    assert hashes_in(r.producer.sent[1].value or b"") == {event_hash("b"), event_hash("c")}
    r.producer.resolve_all()
    assert await r.writer.flush(1.0)
    assert r.done == ["a", "b", "c"]


def test_len_counts_ids() -> None:
    store = DictStore()
    store[batch_key(0, 1, "n")] = pack_batch(10**15, [1, 2, 3])
    store[batch_key(1, 1, "n")] = pack_batch(10**15, [4])
    writer = ChangelogWriter(producer=FakeProducer(), topic="t", store=store)
    ledger = Ledger(writer=writer, store=store, ttl_ms=TTL_MS, clock_ms=Clock())
    ledger.assign({0, 1})
    assert not ledger.seen(0, 4)
    assert len(ledger) == 4
