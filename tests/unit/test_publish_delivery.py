"""Delivery bookkeeping: verdicts per record, snapshots, the one- and many-record outcomes."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from streams.errors import BatchPublishError, BrokerUnavailable, DeliveryFailed
from streams.publish.delivery import Pending, PendingPool
from streams.publish.outgoing import PublishResult


class Acked:
    """The fields of an acknowledged confluent-kafka message the callback reads."""

    def __init__(self, partition: int, offset: int, timestamp_ms: int = 1_000) -> None:
        self._partition, self._offset, self._timestamp_ms = partition, offset, timestamp_ms

    def topic(self) -> str:
        return "t.email"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp_ms)


def test_every_record_acknowledged() -> None:
    done: list[str] = []
    pending = Pending(["e0", "e1"], on_done=lambda: done.append("done"))
    pending.deliver(1, None, Acked(2, 8))
    assert not pending.done.is_set()
    assert done == []
    pending.deliver(0, None, Acked(0, 5, 7))
    assert pending.done.is_set()
    assert done == ["done"]  # once, when the last verdict arrives
    expected = [
        PublishResult("t.email", 0, 5, "e0", 7),
        PublishResult("t.email", 2, 8, "e1", 1_000),
    ]
    assert pending.outcome(1.0) == (expected, {})
    assert pending.every(1.0) == expected


def test_a_refused_record_gets_its_error_and_no_result() -> None:
    pending = Pending(["e0", "e1"])
    pending.deliver(0, None, Acked(0, 5))
    pending.deliver(1, KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), Acked(0, -1))
    results, errors = pending.outcome(1.0)
    assert results == [PublishResult("t.email", 0, 5, "e0", 1_000), None]
    assert list(errors) == [1]
    assert isinstance(errors[1], DeliveryFailed)
    with pytest.raises(BatchPublishError) as batch:
        pending.every(1.0)
    assert batch.value.sent is True
    assert batch.value.results == results


def test_a_record_without_verdict_is_unavailable_and_late_verdicts_do_not_change_a_snapshot() -> (
    None
):
    pending = Pending(["e0", "e1"])
    pending.fail_unsent(0, BrokerUnavailable("queue full"))
    results, errors = pending.outcome(2.5)
    assert results == [None, None]
    assert str(errors[0]) == "queue full"
    assert isinstance(errors[1], BrokerUnavailable)
    assert "no acknowledgement within 2.5s" in str(errors[1])
    assert pending.errors.keys() == {0}  # the snapshot did not write back
    pending.deliver(1, None, Acked(0, 9))
    assert results == [None, None]
    assert pending.done.is_set()


def test_single_returns_the_result_or_raises_the_error() -> None:
    ok = Pending(["e0"])
    ok.deliver(0, None, Acked(3, 4))
    assert ok.single(1.0) == PublishResult("t.email", 3, 4, "e0", 1_000)
    failed = Pending(["e0"])
    failed.deliver(0, KafkaError(KafkaError._MSG_TIMED_OUT), Acked(0, -1))
    with pytest.raises(BrokerUnavailable, match=r"t\.email: broker unavailable"):
        failed.single(1.0)
    with pytest.raises(BrokerUnavailable, match=r"no acknowledgement within 0\.5s"):
        Pending(["e0"]).single(0.5)


def test_the_pool_reuses_a_finished_pending_and_its_callbacks() -> None:
    pool = PendingPool()
    first = pool.take(["e0", "e1"])
    callbacks = list(first.callbacks)
    for i, callback in enumerate(callbacks):
        callback(None, Acked(0, i))  # the callbacks as librdkafka calls them
    assert first.every(1.0)[1] == PublishResult("t.email", 0, 1, "e1", 1_000)
    pool.give(first)
    assert (first.event_ids, first.positions) == ([], [])  # keeps nothing of that call
    woken: list[str] = []
    second = pool.take(["f0", "f1", "f2"], on_done=lambda: woken.append("done"))
    assert second is first
    assert second.callbacks[:2] == callbacks  # the same objects: none made again
    assert not second.done.is_set()
    for i, callback in enumerate(second.callbacks[:3]):
        callback(None, Acked(1, 10 + i))
    assert woken == ["done"]
    assert [r.event_id for r in second.every(1.0)] == ["f0", "f1", "f2"]


def test_a_pending_still_waiting_for_verdicts_is_never_reused() -> None:
    pool = PendingPool()
    waiting = pool.take(["e0", "e1"])
    waiting.deliver(0, None, Acked(0, 1))  # the caller timed out before e1's verdict
    pool.give(waiting)
    fresh = pool.take(["f0"])
    assert fresh is not waiting
    waiting.deliver(1, None, Acked(0, 2))  # a late callback reaches only its own call
    assert fresh.positions == [None]
    assert waiting.positions[1] == ("t.email", 0, 2, 1_000)
