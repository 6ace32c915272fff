"""The schedules' state in Kafka: a compacted topic ``<prefix>streams.schedules``.

Keys and values (JSON):
- ``tick/<name>``  -> ``{"tick_ms", "fired_by", "at_ms"}``: the last tick handled (fired, or
  passed over by the catch-up policy), written by the leader after the tick's event is
  acknowledged;
- ``pause/<name>`` -> ``{"actor", "at_ms"}``: the schedule is paused; a tombstone resumes it.
Every worker of every restart reads it from the beginning, so the cursor survives them all.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from streams.core.topology import schedules_topic
from streams.settings import Settings


@dataclass
class ScheduleState:
    cursors: dict[str, int] = field(default_factory=dict)
    fired_by: dict[str, str] = field(default_factory=dict)
    paused: dict[str, dict[str, Any]] = field(default_factory=dict)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if not key:
            return
        kind, _, name = key.decode().partition("/")
        data = json.loads(value) if value else None
        if kind == "tick" and data is not None:
            self.cursors[name] = max(int(data["tick_ms"]), self.cursors.get(name, 0))
            self.fired_by[name] = str(data.get("fired_by", ""))
        elif kind == "pause":
            if data is None:
                self.paused.pop(name, None)
            else:
                self.paused[name] = data


def tick_record(name: str, tick_ms: int, worker: str, at_ms: int) -> tuple[bytes, bytes]:
    value = {"tick_ms": tick_ms, "fired_by": worker, "at_ms": at_ms}
    return f"tick/{name}".encode(), json.dumps(value).encode()


def read_state(settings: Settings, timeout_s: float = 10.0) -> ScheduleState:
    """The whole state topic, read once (assign, no group)."""
    topic = schedules_topic(settings.topic_prefix)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap,
            "group.id": "streams-schedules-reader",
            "enable.auto.commit": False,
            **settings.kafka_security(),
        }
    )
    state = ScheduleState()
    try:
        tp = TopicPartition(topic, 0)
        low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
        if high <= low:
            return state
        consumer.assign([TopicPartition(topic, 0, low)])
        deadline = time.monotonic() + timeout_s
        position = low
        while position < high and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error() is None:
                    state.apply(msg.key(), msg.value())
                    position = (msg.offset() or 0) + 1
        return state
    finally:
        consumer.close()


def write(settings: Settings, key: bytes, value: bytes | None, timeout_s: float = 10.0) -> None:
    """Produce one state record and wait for its acknowledgement."""
    producer = Producer(
        {"bootstrap.servers": settings.bootstrap, "acks": "all", **settings.kafka_security()}
    )
    errors: list[Any] = []
    producer.produce(
        schedules_topic(settings.topic_prefix),
        value,
        key,
        on_delivery=lambda err, _m: errors.append(err) if err else None,
    )
    if producer.flush(timeout_s) != 0 or errors:
        raise RuntimeError(f"writing the schedule state failed: {errors or 'timed out'}")
