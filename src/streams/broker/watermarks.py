"""A partition's watermarks, read through the moments a leader moves.

``get_watermark_offsets`` fails with NOT_LEADER_FOR_PARTITION or LEADER_NOT_AVAILABLE while
a just-created topic's leadership settles or a broker restarts; ``watermarks`` retries those
(and any error librdkafka calls retriable) with a doubling pause up to 1 s, for at most
``timeout_s``, then raises the last KafkaException for the caller to name.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

_TRANSIENT = (
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError._TIMED_OUT,
)


def transient(exc: KafkaException) -> bool:
    """True when ``exc`` is worth another try (a leader moving, a busy broker)."""
    err = exc.args[0] if exc.args else None
    return isinstance(err, KafkaError) and (err.retriable() or err.code() in _TRANSIENT)


def watermarks(consumer: Any, tp: TopicPartition, timeout_s: float) -> tuple[int, int]:
    """(low, high) of ``tp`` read with ``consumer`` (a confluent_kafka Consumer)."""
    deadline = time.monotonic() + timeout_s
    delay_s = 0.1
    while True:
        left_s = max(0.5, deadline - time.monotonic())
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=left_s)
            return int(low), int(high)
        except KafkaException as exc:
            if not transient(exc) or time.monotonic() + delay_s > deadline:
                raise
        time.sleep(delay_s)
        delay_s = min(1.0, delay_s * 2)
