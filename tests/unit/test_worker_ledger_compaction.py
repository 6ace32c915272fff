"""Ledger compaction: a trickle of tiny batches becomes a few merged ones, in the store and in
the changelog (tombstones), and a restart from that changelog still knows every id."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from tests.unit.worker_fakes import Clock, DictStore, FakeProducer

from streams.core.idempotency import Compaction, batch_key, event_hash, pack_batch, unpack_batch
from streams.worker import ledger as ledger_module
from streams.worker.changelog import ChangelogWriter
from streams.worker.ledger import Ledger

TTL_MS = 3_600_000
POLICY = Compaction(window_ms=60_000, small_below=50, max_small=8, min_age_ms=10_000)


class Rig:
    def __init__(self, store: DictStore | None = None) -> None:
        self.clock = Clock()
        self.producer = FakeProducer()
        self.store = store if store is not None else DictStore()
        self.flushes = 0
        self.writer = ChangelogWriter(
            producer=self.producer, topic="t", store=self.store, on_flush=self._flushed
        )
        self.ledger = Ledger(
            writer=self.writer,
            store=self.store,
            ttl_ms=TTL_MS,
            clock_ms=self.clock,
            compaction=POLICY,
        )
        self.done: list[str] = []

    def _flushed(self, _seconds: float) -> None:
        self.flushes += 1

    async def trickle(self, partition: int, event_ids: list[str]) -> None:
        """One event per flush: the smallest batches there are."""
        for event_id in event_ids:
            self.ledger.record(
                partition, event_hash(event_id), lambda e=event_id: self.done.append(e)
            )
            assert await self.writer.flush(1.0)

    def replay(self) -> DictStore:
        """The table as faust recovers it from the changelog: records in order, tombstones
        delete."""
        store = DictStore()
        for s in self.producer.sent:
            if s.value is None:
                store.pop(s.key, None)
            else:
                store[s.key] = s.value
        return store


@pytest.fixture
async def rigs() -> AsyncIterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(store: DictStore | None = None) -> Rig:
        rig = Rig(store)
        rig.writer.start()
        made.append(rig)
        return rig

    yield make
    for rig in made:
        await rig.writer.stop()


def ids(n: int, prefix: str = "e") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


async def test_every_entry_written_within_one_millisecond_has_a_key_of_its_own(
    rigs: Callable[..., Rig],
) -> None:
    # the clock stands still: 2,000 batches and their merges are created in one millisecond
    # (with two random bytes per key, as before, ~30 pairs collided)
    r = rigs()
    r.ledger.assign({0})
    events = ids(2000)
    await r.trickle(0, events)
    assert await r.writer.flush(1.0)
    written = [s.key for s in r.producer.sent if s.value is not None]
    assert len(written) > len(events)  # the batches and the merged entries
    assert len(set(written)) == len(written)
    assert all(r.ledger.seen(0, event_hash(e)) for e in events)


async def test_a_trickle_is_merged_and_the_small_entries_get_tombstones(
    rigs: Callable[..., Rig],
) -> None:
    r = rigs()
    r.ledger.assign({0})
    events = ids(8 * POLICY.max_small)
    await r.trickle(0, events)
    assert await r.writer.flush(1.0)  # the last tombstones
    assert sorted(r.done) == sorted(events)  # every done-marker acknowledged
    assert all(r.ledger.seen(0, event_hash(e)) for e in events)
    assert len(r.ledger) == len(events)
    # a few merged entries and the tiny ones younger than the last merge, not one per event
    assert len(r.store) <= len(events) // POLICY.small_below + POLICY.max_small
    stored = [h for v in r.store.values() for h in unpack_batch(v)[1]]
    assert sorted(stored) == sorted(event_hash(e) for e in events)
    tombstones = [s.key for s in r.producer.sent if s.value is None]
    assert len(tombstones) >= len(events) - POLICY.max_small  # tiny entries deleted again
    # a tombstone only ever follows the merged entry that replaced its key
    written_at = {s.key: i for i, s in enumerate(r.producer.sent) if s.value is not None}
    for i, s in enumerate(r.producer.sent):
        if s.value is None:
            assert written_at[s.key] < i
    assert r.replay() == r.store  # the compacted changelog is the store


async def test_a_restart_from_the_compacted_changelog_knows_every_id(
    rigs: Callable[..., Rig],
) -> None:
    first = rigs()
    first.ledger.assign({0, 1})
    await first.trickle(0, ids(30, "a"))
    await first.trickle(1, ids(5, "b"))
    first.clock.advance(POLICY.min_age_ms)  # partition 1's few batches are old now
    await first.trickle(0, ["a-last"])
    assert await first.writer.flush(1.0)
    assert len(first.store) < 10
    second = rigs(first.replay())
    second.ledger.assign({0, 1})
    for event_id in [*ids(30, "a"), "a-last"]:
        assert second.ledger.seen(0, event_hash(event_id)), event_id
    assert all(second.ledger.seen(1, event_hash(e)) for e in ids(5, "b"))
    assert not second.ledger.seen(1, event_hash("a0"))
    assert len(second.ledger) == 36


async def test_recovered_small_batches_are_merged_right_after_the_rebuild(
    rigs: Callable[..., Rig],
) -> None:
    store = DictStore()
    hashes = [event_hash(f"r{i}") for i in range(300)]
    expires_at_ms = Clock()() + TTL_MS
    for i in range(0, 300, 2):  # 2-hash batches, as a trickle writes them
        store[batch_key(i % 3, i, f"n{i}")] = pack_batch(expires_at_ms, hashes[i : i + 2])
    store[batch_key(5, 1, "foreign")] = pack_batch(expires_at_ms, [1])
    original = list(store.items())
    r = rigs(store)
    r.ledger.assign({0, 1, 2})
    assert r.ledger.seen_many(0, [hashes[0], hashes[1], event_hash("nope")]) == [
        True,
        True,
        False,
    ]
    assert len(r.ledger) == 300
    assert len(store) == 3  # one merged entry per partition, the foreign one dropped
    for p in range(3):
        (value,) = [v for k, v in store.items() if k.startswith(b"%d|" % p)]
        mine = [h for i in range(0, 300, 2) if i % 3 == p for h in hashes[i : i + 2]]
        assert sorted(unpack_batch(value)[1]) == sorted(mine)
    assert await r.writer.flush(1.0)
    # the changelog: the recovered records, then what this worker wrote
    log = original + [(s.key, s.value) for s in r.producer.sent]
    replayed: dict[bytes, bytes] = {}
    for key, value in log:
        if value is None:
            replayed.pop(key, None)
        else:
            replayed[key] = value
    del replayed[batch_key(5, 1, "foreign")]  # another worker's partition: not ours to delete
    assert replayed == store


async def test_tombstones_go_out_in_chunks_behind_live_markers(
    rigs: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_module, "TOMBSTONES_PER_FLUSH", 10)
    store = DictStore()
    expires_at_ms = Clock()() + TTL_MS
    for i in range(45):
        store[batch_key(0, i, f"n{i}")] = pack_batch(expires_at_ms, [event_hash(f"r{i}")])
    r = rigs(store)
    r.ledger.assign({0})
    r.ledger.record(0, event_hash("live"), lambda: r.done.append("live"))
    assert await r.writer.flush(1.0)
    assert r.done == ["live"]
    tombstones = [i for i, s in enumerate(r.producer.sent) if s.value is None]
    assert sorted(r.producer.sent[i].key or b"" for i in tombstones) == sorted(
        batch_key(0, i, f"n{i}") for i in range(45)
    )
    live = next(i for i, s in enumerate(r.producer.sent) if s.value and len(s.value) == 16)
    assert live < tombstones[0]  # the live marker did not wait for the tombstones
    assert r.flushes >= 1 + 45 // 10  # at most 10 tombstones per flush


async def test_revoke_drops_queued_tombstones_and_the_chain_restarts(
    rigs: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_module, "TOMBSTONES_PER_FLUSH", 5)
    store = DictStore()
    expires_at_ms = Clock()() + TTL_MS
    for p in (0, 1):
        for i in range(20):
            store[batch_key(p, i, f"n{i}")] = pack_batch(expires_at_ms, [event_hash(f"{p}-{i}")])
    r = rigs(store)
    r.ledger.assign({0, 1})
    assert r.ledger.seen(0, event_hash("0-0"))
    r.ledger.revoke({0})
    assert await r.writer.flush(1.0)
    tombstoned = {s.key for s in r.producer.sent if s.value is None}
    assert {k for k in tombstoned if k.startswith(b"1|")} == {
        batch_key(1, i, f"n{i}") for i in range(20)
    }
    assert not r.ledger.seen(0, event_hash("0-0"))


async def test_merged_batches_expire_with_the_latest_expiry_of_their_parts(
    rigs: Callable[..., Rig],
) -> None:
    r = rigs()
    r.ledger.assign({0})
    await r.trickle(0, ids(POLICY.max_small))
    assert len(r.store) == 1
    r.clock.advance(TTL_MS - 1)
    assert r.ledger.expire() == 0
    assert r.ledger.seen(0, event_hash("e0"))
    r.clock.advance(1)
    assert r.ledger.expire() == 1
    assert not any(r.ledger.seen(0, event_hash(e)) for e in ids(POLICY.max_small))
    assert len(r.ledger) == 0
    assert await r.writer.flush(1.0)
    assert r.store == {} and r.replay() == {}


async def test_record_many_calls_back_once_for_the_whole_batch(
    rigs: Callable[..., Rig],
) -> None:
    r = rigs()
    r.ledger.assign({3})
    digests = [event_hash(e) for e in ids(100)]
    r.ledger.record_many(3, digests, lambda: r.done.append("batch"))
    assert r.ledger.seen_many(3, [*digests[:2], event_hash("x")]) == [True, True, False]
    assert await r.writer.flush(1.0)
    assert r.done == ["batch"]
    (value,) = r.store.values()
    assert sorted(unpack_batch(value)[1]) == sorted(digests)
