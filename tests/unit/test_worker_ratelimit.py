"""RateGate: the catalog's token buckets over a table store; deferred events reserve."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from tests.unit.worker_fakes import (
    AckLog,
    Clock,
    DictStore,
    FakeProducer,
    make_entry,
    make_family,
    new_metrics,
    sample,
)

from streams.core.ratelimit import BucketState
from streams.errors import Deferred, Rejected
from streams.worker.changelog import ChangelogWriter
from streams.worker.ordering import Entry
from streams.worker.ratelimit import RateGate, pack_state, unpack_state

PER_USER = {
    "name": "per_user",
    "scope": "key",
    "limit": 10,
    "per": "1s",
    "burst": 3,
    "on_exceed": "defer",
    "max_defer": "1m",
}


class Rig:
    def __init__(self, *limits: dict[str, Any]) -> None:
        self.family = make_family(rate_limits=list(limits))
        self.store = DictStore()
        self.producer = FakeProducer()
        self.writer = ChangelogWriter(
            producer=self.producer, topic="app-audit.buckets-changelog", store=self.store
        )
        self.metrics = new_metrics()
        self.clock = Clock()
        self.gate = RateGate(
            family=self.family,
            store=self.store,
            writer=self.writer,
            metrics=self.metrics,
            clock_ms=self.clock,
        )
        self.acks = AckLog()
        self.offset = 0

    def entry(self, partition: int = 0) -> Entry:
        self.offset += 1
        return make_entry(self.acks, self.offset, partition=partition)

    def check(
        self, user: str = "u1", partition: int = 0, headers: dict[str, str] | None = None
    ) -> None:
        self.gate.check(SimpleNamespace(user_id=user), self.entry(partition), headers or {})

    def tokens(self, key: bytes) -> float:
        state = unpack_state(self.store.get(key))
        assert state is not None
        return state.tokens

    def limited(self, limit: str, action: str) -> float:
        return sample(
            self.metrics, "streams_rate_limited_total", family="audit", limit=limit, action=action
        )


def test_allows_up_to_capacity_then_defers_with_the_exact_wait() -> None:
    r = Rig(PER_USER)
    for _ in range(3):
        r.check()
    with pytest.raises(Deferred) as info:
        r.check()
    # 10 per second refills one token in 100 ms
    assert info.value.delay_s == pytest.approx(0.1)
    assert info.value.max_defer_s == pytest.approx(60.0)
    assert "per_user" in info.value.reason
    assert info.value.reserved
    assert r.limited("per_user", "defer") == 1
    assert r.tokens(b"per_user|k|u1") == pytest.approx(-1.0)  # the deferred event's token
    r.check("u2")  # another key has its own bucket
    r.clock.advance(99)
    with pytest.raises(Deferred) as again:
        r.check()  # queues behind the reserved one: its own token is due 101 ms later
    assert again.value.delay_s == pytest.approx(0.101)
    assert r.limited("per_user", "defer") == 2


def test_events_deferred_together_come_back_one_refill_interval_apart() -> None:
    r = Rig(PER_USER)
    for _ in range(3):
        r.check()
    waits = []
    for _ in range(5):
        with pytest.raises(Deferred) as info:
            r.check()
        waits.append(info.value.delay_s)
    # not five events due at +100 ms of which four would defer again
    assert waits == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert r.tokens(b"per_user|k|u1") == pytest.approx(-5.0)
    r.clock.advance(100)
    before = r.store[b"per_user|k|u1"]
    r.check(headers={"streams-rate-reserved": "1"})  # the first comes back: already paid
    assert r.store[b"per_user|k|u1"] == before
    with pytest.raises(Deferred) as late:
        r.check()  # a new event waits behind the four still out
    assert late.value.delay_s == pytest.approx(0.5)


def test_a_wait_past_the_deferral_budget_reserves_nothing() -> None:
    r = Rig({**PER_USER, "burst": 1, "max_defer": "250ms"})
    r.check()
    for expected in (0.1, 0.2):
        with pytest.raises(Deferred) as info:
            r.check()
        assert info.value.reserved and info.value.delay_s == pytest.approx(expected)
    before = r.store[b"per_user|k|u1"]
    with pytest.raises(Deferred) as info:
        r.check()  # 300 ms > 250 ms: the planner expires it; it holds no token
    assert not info.value.reserved
    assert r.store[b"per_user|k|u1"] == before
    # an event already deferred for a while has less budget left
    r.clock.advance(100)
    with pytest.raises(Deferred) as info:
        r.check(headers={"streams-first-deferred-at-ms": str(r.clock() - 100)})
    assert info.value.delay_s == pytest.approx(0.2) and not info.value.reserved


def test_a_deferral_reserves_a_token_of_every_limit() -> None:
    generous = {**PER_USER, "name": "per_user", "limit": 100, "burst": 5, "max_defer": "2h"}
    strict = {**PER_USER, "name": "per_user_strict", "limit": 1, "per": "1h", "burst": 1}
    strict["max_defer"] = "3h"
    r = Rig(generous, strict)
    r.check()
    with pytest.raises(Deferred) as info:
        r.check()
    assert info.value.delay_s == pytest.approx(3600.0)
    assert info.value.max_defer_s == pytest.approx(10800.0)  # budget of the deferring limit
    assert "per_user_strict" in info.value.reason
    assert r.tokens(b"per_user|k|u1") == pytest.approx(3.0)
    assert r.tokens(b"per_user_strict|k|u1") == pytest.approx(-1.0)
    assert r.limited("per_user_strict", "defer") == 1
    assert r.limited("per_user", "defer") == 0


def test_on_exceed_reject_raises_rejected() -> None:
    r = Rig({**PER_USER, "on_exceed": "reject", "burst": 1})
    r.check()
    with pytest.raises(Rejected, match="per_user"):
        r.check()
    assert r.limited("per_user", "reject") == 1
    assert r.limited("per_user", "defer") == 0


def test_a_refusal_by_the_second_limit_spends_no_token_of_the_first() -> None:
    generous = {**PER_USER, "name": "per_user", "limit": 100, "burst": 5}
    strict = {**PER_USER, "name": "per_user_strict", "limit": 1, "per": "1h", "burst": 1}
    r = Rig(generous, strict)
    r.check()
    assert r.tokens(b"per_user|k|u1") == pytest.approx(4.0)
    for _ in range(3):
        with pytest.raises(Deferred) as info:
            r.check()
        assert "per_user_strict" in info.value.reason
    assert r.tokens(b"per_user|k|u1") == pytest.approx(4.0)
    assert r.limited("per_user_strict", "defer") == 3
    assert r.limited("per_user", "defer") == 0


def test_a_refusal_by_the_first_limit_spends_no_token_of_the_second() -> None:
    strict = {**PER_USER, "name": "first", "limit": 1, "per": "1h", "burst": 1}
    generous = {**PER_USER, "name": "second", "limit": 100, "burst": 5}
    r = Rig(strict, generous)
    r.check()
    with pytest.raises(Deferred):
        r.check()
    assert r.tokens(b"second|k|u1") == pytest.approx(4.0)


async def test_provider_scope_uses_a_bucket_per_partition() -> None:
    provider = {
        "name": "smtp_relay",
        "scope": "provider",
        "provider": "relay",
        "limit": 8,  # over 4 partitions: 2 per partition
        "per": "1s",
        "on_exceed": "defer",
        "max_defer": "1h",
    }
    r = Rig(provider)
    r.check("alice", partition=1)
    r.check("bob", partition=1)  # another key, same partition: the same bucket
    with pytest.raises(Deferred) as info:
        r.check("carol", partition=1)
    assert info.value.delay_s == pytest.approx(0.5)  # 2 per second on this partition
    r.check("alice", partition=3)  # partition 3 spends its own share
    assert set(r.store) == {b"smtp_relay|p|relay|1", b"smtp_relay|p|relay|3"}
    r.writer.start()
    try:
        assert await r.writer.flush(1.0)
    finally:
        await r.writer.stop()
    # each bucket is written to the changelog partition of the record that spent it
    assert sorted((s.key, s.partition) for s in r.producer.sent) == [
        (b"smtp_relay|p|relay|1", 1),
        (b"smtp_relay|p|relay|3", 3),
    ]


def test_a_family_without_limits_checks_nothing() -> None:
    r = Rig()
    for _ in range(100):
        r.check()
    assert r.store == {}


def test_bucket_state_round_trip_and_garbage() -> None:
    state = BucketState(tokens=2.5, updated_ms=1_700_000_000_123)
    assert unpack_state(pack_state(state)) == state
    assert unpack_state(None) is None
    assert unpack_state(b"") is None
    assert unpack_state(b"short") is None


def test_a_garbage_bucket_counts_as_full() -> None:
    r = Rig(PER_USER)
    r.store[b"per_user|k|u1"] = b"garbage"
    for _ in range(3):
        r.check()
    with pytest.raises(Deferred):
        r.check()


def test_feedback_events_spend_no_tokens() -> None:
    r = Rig(PER_USER)
    r.check()
    r.check()
    report = SimpleNamespace(user_id="u1", RATE_LIMITED=False)  # e.g. push.token_invalid
    for _ in range(5):
        r.gate.check(report, r.entry(), {})
    r.check()  # the burst's third token is still there: the reports spent none
    with pytest.raises(Deferred):
        r.check()
