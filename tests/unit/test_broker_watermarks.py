"""broker/watermarks.py: a leader moving is retried, anything else is raised at once."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streams.broker.watermarks import watermarks

TP = TopicPartition("t", 0)


class Consumer:
    def __init__(self, failures: list[int]) -> None:
        self.failures = failures
        self.calls = 0

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        self.calls += 1
        if self.failures:
            raise KafkaException(KafkaError(self.failures.pop(0)))
        return 3, 7


def test_a_leader_moving_is_waited_out() -> None:
    consumer = Consumer([KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE])
    assert watermarks(consumer, TP, 10.0) == (3, 7)
    assert consumer.calls == 3


def test_an_error_that_will_not_pass_is_raised_at_once() -> None:
    consumer = Consumer([KafkaError.TOPIC_AUTHORIZATION_FAILED])
    with pytest.raises(KafkaException) as raised:
        watermarks(consumer, TP, 10.0)
    assert raised.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert consumer.calls == 1


def test_a_leader_that_never_comes_is_raised_after_the_timeout() -> None:
    consumer = Consumer([KafkaError.NOT_LEADER_FOR_PARTITION] * 100)
    with pytest.raises(KafkaException):
        watermarks(consumer, TP, 0.3)
    assert 2 <= consumer.calls < 100
