"""Read a small topic whole from the beginning and then follow it, in a daemon thread.

No consumer group: every partition is assigned at offset 0, so each reader (each API
process) builds its own complete view. ``on_record(key, value, timestamp_ms)`` is called in
the thread for every record, a tombstone as ``value`` None. A topic that does not exist yet
is looked up again until it does.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, TopicPartition

from streams.broker.clients import base_conf
from streams.settings import Settings

log = logging.getLogger(__name__)
OnRecord = Callable[[bytes | None, bytes | None, int], None]
POLL_S = 0.2
METADATA_EVERY = 25  # polls between looks for new partitions


class TopicTail:
    def __init__(self, settings: Settings, topic: str, on_record: OnRecord) -> None:
        self.topic = topic
        self._settings = settings
        self._on_record = on_record
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.records = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"tail:{self.topic}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        consumer = Consumer(
            base_conf(
                self._settings,
                **{
                    "group.id": f"streams.tail.{uuid.uuid4().hex}",  # never commits
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "topic.metadata.refresh.interval.ms": 5000,
                },
            )
        )
        try:
            assigned: set[int] = set()
            loops = 0
            while not self._stop.is_set():
                if not assigned or loops % METADATA_EVERY == 0:
                    assigned = self._assign_new(consumer, assigned)
                loops += 1
                if not assigned:
                    self._stop.wait(1.0)
                    continue
                for msg in consumer.consume(500, timeout=POLL_S):
                    err = msg.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            log.warning("reading %s: %s", self.topic, err)
                        continue
                    self.records += 1
                    try:
                        self._on_record(msg.key(), msg.value(), int(msg.timestamp()[1]))
                    except Exception:
                        log.exception("a record of %s could not be applied", self.topic)
        finally:
            consumer.close()

    def _assign_new(self, consumer: Consumer, assigned: set[int]) -> set[int]:
        """Assign, at offset 0, partitions that appeared since the last look."""
        try:
            meta = consumer.list_topics(self.topic, timeout=2.0)
        except Exception as exc:
            log.warning("cannot read the metadata of %s: %s", self.topic, exc)
            return assigned
        topic = meta.topics.get(self.topic)
        if topic is None or topic.error is not None:
            return assigned
        new = set(topic.partitions) - assigned
        if new:
            consumer.incremental_assign([TopicPartition(self.topic, p, 0) for p in sorted(new)])
        return assigned | new
