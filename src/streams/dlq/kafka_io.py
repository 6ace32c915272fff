"""The Kafka side of DLQ operations: the resolved-state and redrives topics, replay sends.

Two small compacted topics (created on first use, one partition, replication 3 or as many
brokers as there are, or the settings' override):

- ``<prefix>streams.dlq-state``: key ``<dlq topic>/<partition>:<offset>``, value JSON
  ``{state: resolved|parked, actor, at_ms, note}``; a tombstone un-resolves. ``list``,
  ``stats`` and ``redrive`` skip what it marks; retention removes the records themselves.
- ``<prefix>streams.redrives``: key = redrive id, value = the ``Checkpoint`` JSON.

Reads go through ``DlqReader`` (``assign()``, no group, no commit) for any topic.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streams.broker.clients import base_conf
from streams.dlq.reader import DlqReader
from streams.dlq.records import DlqRecord
from streams.dlq.redrive_model import Checkpoint
from streams.dlq.replay import REPLAY_ID, REPLAY_SOURCE, Replay
from streams.errors import DlqError, TopologyError
from streams.settings import Settings

__all__ = [
    "CheckpointStore",
    "ReplaySender",
    "StateStore",
    "ensure_compacted",
    "sent_by",
]

STATE_TOPIC = "streams.dlq-state"
REDRIVES_TOPIC = "streams.redrives"
_CREATE_TIMEOUT_S = 15.0


def ensure_compacted(settings: Settings, name: str) -> None:
    """Create compacted topic ``name`` (1 partition) unless it exists; replication 3, or
    the settings' override, or fewer when the cluster has fewer brokers."""
    admin = AdminClient(base_conf(settings))
    try:
        metadata = admin.list_topics(timeout=10)
    except KafkaException as exc:
        raise DlqError(f"cannot read the cluster's metadata: {exc}") from None
    if name in metadata.topics:
        return
    rf = settings.replication_factor_override or min(3, max(1, len(metadata.brokers)))
    topic = NewTopic(
        name,
        num_partitions=1,
        replication_factor=rf,
        config={"cleanup.policy": "compact", "min.insync.replicas": str(min(2, rf))},
    )
    future = admin.create_topics([topic], operation_timeout=_CREATE_TIMEOUT_S)[name]
    try:
        future.result(_CREATE_TIMEOUT_S)
    except KafkaException as exc:
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise DlqError(f"cannot create {name}: {exc}") from None


def _producer(settings: Settings, **extra: Any) -> Producer:
    return Producer(
        base_conf(
            settings,
            **{
                "acks": "all",
                "enable.idempotence": True,
                "partitioner": "murmur2_random",
                "linger.ms": 5,
                "client.id": "streams-dlq",
                "log_level": 0,
                **extra,
            },
        )
    )


def _latest(settings: Settings, topic: str) -> Iterator[DlqRecord]:
    """Every record of a (small, compacted) topic; nothing when it does not exist yet."""
    with DlqReader(settings, topic) as reader:
        try:
            ranges = reader.partitions()
        except TopologyError:
            return
        yield from reader.scan(ranges)


class _KeyedWriter:
    """Writes JSON values (or tombstones) to one compacted topic and waits for them."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings = settings
        self.topic = prefixed(settings, topic)
        self._producer: Producer | None = None
        self._errors: list[str] = []

    def _ready(self) -> Producer:
        if self._producer is None:
            ensure_compacted(self.settings, self.topic)
            self._producer = _producer(self.settings)
        return self._producer

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self._errors.append(str(err))

    def put(self, key: str, value: bytes | None) -> None:
        producer = self._ready()
        while True:
            try:
                producer.produce(self.topic, value, key.encode(), on_delivery=self._on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)

    def flush(self, timeout_s: float = 30.0) -> None:
        if self._producer is None:
            return
        left = self._producer.flush(timeout_s)
        if left or self._errors:
            raise DlqError(
                f"writing {self.topic} failed: {self._errors[:1] or [f'{left} not delivered']}"
            )


def prefixed(settings: Settings, name: str) -> str:
    return f"{settings.topic_prefix}{name}"


class StateStore(_KeyedWriter):
    """Resolved/parked marks of DLQ positions (module docstring)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, STATE_TOPIC)

    def load(self, dlq_topic: str) -> dict[str, str]:
        """Position (``<topic>/<p>:<o>``) -> state, for ``dlq_topic``'s records."""
        out: dict[str, str] = {}
        head = f"{dlq_topic}/"
        for record in _latest(self.settings, self.topic):
            key = (record.key or b"").decode("utf-8", "replace")
            if not key.startswith(head):
                continue
            if record.value is None:
                out.pop(key, None)
                continue
            try:
                out[key] = str(json.loads(record.value)["state"])
            except (ValueError, KeyError, TypeError):
                continue
        return out

    def mark(self, source: str, state: str, *, actor: str, at_ms: int, note: str = "") -> None:
        body = {"state": state, "actor": actor, "at_ms": at_ms, "note": note}
        self.put(source, json.dumps(body).encode())


class CheckpointStore(_KeyedWriter):
    """Redrive checkpoints by id (module docstring)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, REDRIVES_TOPIC)

    def load(self, redrive_id: str) -> Checkpoint | None:
        found: bytes | None = None
        for record in _latest(self.settings, self.topic):
            if record.key == redrive_id.encode():
                found = record.value
        return None if found is None else Checkpoint.from_json(found)

    def all(self) -> list[Checkpoint]:
        latest: dict[bytes, bytes | None] = {}
        for record in _latest(self.settings, self.topic):
            latest[record.key or b""] = record.value
        return [Checkpoint.from_json(v) for v in latest.values() if v is not None]

    def save(self, checkpoint: Checkpoint) -> None:
        self.put(checkpoint.redrive_id, checkpoint.to_json())
        self.flush()


def sent_by(
    settings: Settings, main_topic: str, marks: dict[int, int], redrive_id: str
) -> set[str]:
    """DLQ positions the redrive ``redrive_id`` sent to ``main_topic`` at or after ``marks``."""
    found: set[str] = set()
    with DlqReader(settings, main_topic) as reader:
        ranges = reader.partitions()
        starts = {r.partition: max(r.low, marks.get(r.partition, r.low)) for r in ranges}
        for record in reader.read(starts, {r.partition: r.high for r in ranges}):
            if record.headers.get(REPLAY_ID) == redrive_id:
                source = record.headers.get(REPLAY_SOURCE)
                if source:
                    found.add(source)
    return found


class ReplaySender:
    """Produces replays; ``flush()`` returns, per topic, the next offset per partition
    after this sender's delivered records (the checkpoint's ``main_marks`` and
    ``lane_marks``)."""

    def __init__(self, settings: Settings) -> None:
        self._producer = _producer(
            settings,
            **{
                "linger.ms": 10,
                "batch.num.messages": 10000,
                "queue.buffering.max.messages": 200000,
            },
        )
        self._lock = threading.Lock()
        self._marks: dict[str, dict[int, int]] = {}
        self._errors: list[str] = []

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()}: {err}")
            return
        topic, partition, offset = str(msg.topic()), int(msg.partition()), int(msg.offset())
        with self._lock:
            marks = self._marks.setdefault(topic, {})
            if offset + 1 > marks.get(partition, -1):
                marks[partition] = offset + 1

    def send(self, replay: Replay) -> None:
        kwargs: dict[str, Any] = {
            "key": replay.key,
            "value": replay.value,
            "headers": [(k, v.encode()) for k, v in replay.headers.items()],
            "on_delivery": self._on_delivery,
        }
        if replay.partition is not None:
            kwargs["partition"] = replay.partition
        while True:
            try:
                self._producer.produce(replay.topic, **kwargs)
                break
            except BufferError:
                self._producer.poll(0.05)
        self._producer.poll(0)

    def flush(self, timeout_s: float = 60.0) -> dict[str, dict[int, int]]:
        left = self._producer.flush(timeout_s)
        if self._errors or left:
            raise DlqError(f"replays not delivered: {self._errors[:3] or [f'{left} still queued']}")
        with self._lock:
            return {topic: dict(marks) for topic, marks in self._marks.items()}

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._producer.flush(10)


def high_watermarks(settings: Settings, topic: str) -> dict[int, int]:
    with DlqReader(settings, topic) as reader:
        return {r.partition: r.high for r in reader.partitions()}


def chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
