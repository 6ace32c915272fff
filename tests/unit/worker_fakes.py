"""Fakes for unit tests of the ``streams.worker`` logic (no Kafka broker, no faust app).

They stand in for faust's events and producer only in ``tests/unit``: everything else
runs against the real broker.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry

from streams.catalog import Family
from streams.errors import DecodeError
from streams.metrics import Metrics
from streams.worker.ordering import Entry, PartitionLog

NOW_MS = 1_700_000_000_000


# --- faust events ---------------------------------------------------------------------------


class TP(NamedTuple):
    """Like faust's ``TP``: a hashable (topic, partition)."""

    topic: str
    partition: int


@dataclass
class FakeMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None = b"key"
    value: bytes | None = b"value"
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp: float = NOW_MS / 1000  # faust: seconds since the epoch

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


class AckLog(list[tuple[str, int, int]]):
    """(topic, partition, offset) of every ``ack()``, in call order."""

    def offsets(self, topic: str | None = None, partition: int | None = None) -> list[int]:
        return [
            o
            for t, p, o in self
            if (topic is None or t == topic) and (partition is None or p == partition)
        ]


class FakeEvent:
    """A fetched record (the attributes of an aiokafka ``ConsumerRecord``, ``timestamp`` in
    ms) with ``.message`` and an ``ack()`` that records the order of acks (``AckingLog``)."""

    def __init__(self, message: FakeMessage, acks: AckLog) -> None:
        self.message = message
        self._acks = acks
        self.acked = 0
        self.topic = message.topic
        self.partition = message.partition
        self.offset = message.offset
        self.key = message.key
        self.value = message.value
        self.headers = message.headers
        self.timestamp = int(message.timestamp * 1000)

    def ack(self) -> bool:
        self.acked += 1
        m = self.message
        self._acks.append((m.topic, m.partition, m.offset))
        return True


def make_event(
    acks: AckLog,
    offset: int,
    *,
    topic: str = "t.audit",
    partition: int = 0,
    key: bytes | None = b"key",
    value: bytes | None = b"value",
    headers: dict[str, str] | list[tuple[str, bytes]] | None = None,
    timestamp: float = NOW_MS / 1000,
) -> FakeEvent:
    if isinstance(headers, dict):
        raw = [(k, v.encode()) for k, v in headers.items()]
    else:
        raw = list(headers or [])
    message = FakeMessage(topic, partition, offset, key, value, raw, timestamp)
    return FakeEvent(message, acks)


class AckingLog(PartitionLog):
    """A ``PartitionLog`` that acks each ``FakeEvent`` of the finished prefix when the log
    advances past it (so tests read the advances as the old per-record acks)."""

    def __init__(self, tp: Any) -> None:
        super().__init__(tp, self._advanced)
        self._records: dict[int, Any] = {}
        self.advances: list[int] = []

    def add(self, record: Any) -> Entry:
        entry = super().add(record)
        self._records[entry.offset] = record
        return entry

    def _advanced(self, tp: Any, next_offset: int) -> None:
        self.advances.append(next_offset)
        for offset in sorted(o for o in self._records if o < next_offset):
            record = self._records.pop(offset)
            if hasattr(record, "ack"):
                record.ack()


def make_entry(
    acks: AckLog, offset: int, *, log: PartitionLog | None = None, **kwargs: Any
) -> Entry:
    """An entry in ``log`` (a fresh log of the event's partition when None)."""
    event = make_event(acks, offset, **kwargs)
    plog = log if log is not None else AckingLog(event.message.tp)
    return plog.add(event)


# --- producer -------------------------------------------------------------------------------


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None
    timestamp: float | None
    headers: Any
    future: asyncio.Future[Any]

    @property
    def header_dict(self) -> dict[str, str]:
        return {k: v.decode() for k, v in self.headers or ()}


class FakeProducer:
    """faust's producer: ``await send(...)`` returns a future the test resolves or fails.

    ``auto=True`` resolves every future at once. ``raise_on_send`` (popped per call) makes
    ``send`` itself raise; ``fail_futures`` (popped per call) fails the returned future.
    """

    def __init__(self, *, auto: bool = True) -> None:
        self.auto = auto
        self.sent: list[Sent] = []
        self.calls = 0
        self.raise_on_send: list[BaseException] = []
        self.fail_futures: list[BaseException] = []

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
    ) -> asyncio.Future[Any]:
        self.calls += 1
        if self.raise_on_send:
            raise self.raise_on_send.pop(0)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append(Sent(topic, key, value, partition, timestamp, headers, future))
        if self.fail_futures:
            future.set_exception(self.fail_futures.pop(0))
        elif self.auto:
            future.set_result(len(self.sent))
        return future

    def pending(self) -> list[Sent]:
        return [s for s in self.sent if not s.future.done()]

    def resolve_all(self) -> int:
        pending = self.pending()
        for s in pending:
            s.future.set_result(None)
        return len(pending)

    def fail_all(self, exc: BaseException) -> int:
        pending = self.pending()
        for s in pending:
            s.future.set_exception(exc)
        return len(pending)

    def delivered(self) -> list[Sent]:
        """Records whose future resolved successfully."""
        return [
            s
            for s in self.sent
            if s.future.done() and not s.future.cancelled() and s.future.exception() is None
        ]


class DictStore(dict[Any, Any]):
    """The table's store (faust's memory store is one dict for every partition)."""


# --- decoding -------------------------------------------------------------------------------


def encode_event(
    event_id: str,
    event_type: str = "audit.recorded",
    *,
    key: str = "user-1",
    occurred_at_ms: int = NOW_MS,
) -> bytes:
    """A record value the ``FakeDecoder`` understands."""
    doc = {"event_id": event_id, "event_type": event_type, "key": key, "at": occurred_at_ms}
    return json.dumps(doc).encode()


class FakeDecoder:
    """Decodes ``encode_event`` values into model-like objects; DecodeError otherwise."""

    def __init__(self, key_field: str = "user_id") -> None:
        self.key_field = key_field
        self.calls = 0

    def decode_event(self, data: bytes) -> Any:
        self.calls += 1
        try:
            doc = json.loads(data)
        except (ValueError, TypeError) as exc:
            raise DecodeError(f"not a test event: {exc}") from None
        if not isinstance(doc, dict) or "event_id" not in doc:
            raise DecodeError("not a test event")
        envelope = SimpleNamespace(
            event_id=doc["event_id"],
            event_type=doc["event_type"],
            occurred_at_ms=doc["at"],
            tenant_id=doc.get("tenant"),
        )
        return SimpleNamespace(envelope=envelope, **{self.key_field: doc["key"]})


# --- clock, metrics, catalog ----------------------------------------------------------------


class Clock:
    """A settable ms clock."""

    def __init__(self, now_ms: int = NOW_MS) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms


def new_metrics() -> Metrics:
    return Metrics.create(CollectorRegistry())


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    """A metric sample's value (0.0 when it was never touched)."""
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def make_family(**overrides: Any) -> Family:
    """The ``audit`` family: 4 partitions, ladder 1s/10s, 3 attempts, no jitter."""
    data: dict[str, Any] = {
        "name": "audit",
        "key_field": "user_id",
        "partitions": 4,
        "replication_factor": 1,
        "min_insync_replicas": 1,
        "retention": "7d",
        "handler_timeout": "30s",
        "retry": {"delays": ["1s", "10s"], "jitter": 0.0, "max_attempts": 3, "retention": "1d"},
    }
    data.update(overrides)
    return Family.model_validate(data)


# --- asyncio helpers ------------------------------------------------------------------------


async def settle(rounds: int = 20) -> None:
    """Let every ready task run a few steps."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def until(predicate: Callable[[], bool], timeout_s: float = 2.0) -> None:
    """Wait until ``predicate()`` holds; AssertionError after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(0.001)
