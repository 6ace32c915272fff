"""Materialise a compacted topic from its beginning into an in-memory view, and follow it.

``TopicFollower`` runs a confluent-kafka consumer (no group, no commits: every reader reads
everything) on a daemon thread; each record is handed to the view's ``apply(key, value)``
(``value`` None = tombstone). ``caught_up`` is set once every partition has been read up to
the high watermark it had when the follower started, so a worker knows it has seen every
pause and cancel issued before it began. ``ControlView`` (workers) and ``StatusView`` (API)
are the two views; both are safe to read from another thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from streams.control.model import (
    CANCEL,
    PAUSE,
    Command,
    ControlError,
    StatusRecord,
    parse_command,
    parse_status,
)

log = logging.getLogger(__name__)

Clock = Callable[[], int]


def wall_ms() -> int:
    return int(time.time() * 1000)


class View(Protocol):
    def apply(self, key: bytes, value: bytes | None) -> None: ...


class ControlView:
    """The live commands, by key. ``listen`` callbacks run on the follower's thread with
    (kind, target, command or None when revoked); hop to your loop yourself."""

    def __init__(self, clock_ms: Clock = wall_ms) -> None:
        self._clock_ms = clock_ms
        self._commands: dict[str, Command] = {}
        self._lock = threading.Lock()
        self._listeners: list[Callable[[str, str, Command | None], None]] = []
        self._per_kind: dict[str, int] = {}  # kind -> commands held (a cheap "none" check)
        self.malformed = 0

    def listen(self, callback: Callable[[str, str, Command | None], None]) -> None:
        self._listeners.append(callback)

    def apply(self, key: bytes, value: bytes | None) -> None:
        text = key.decode(errors="replace")
        if value is None:
            with self._lock:
                old = self._commands.pop(text, None)
                if old is not None:
                    self._per_kind[old.kind] -= 1
            if old is not None:
                self._notify(old.kind, old.target, None)
            return
        try:
            command = parse_command(text, value)
        except ControlError as exc:
            self.malformed += 1
            log.warning("control: skipping a malformed record: %s", exc)
            return
        with self._lock:
            if self._commands.get(text) is None:
                self._per_kind[command.kind] = self._per_kind.get(command.kind, 0) + 1
            self._commands[text] = command
        self._notify(command.kind, command.target, command)

    def _notify(self, kind: str, target: str, command: Command | None) -> None:
        for callback in self._listeners:
            try:
                callback(kind, target, command)
            except Exception:
                log.exception("control listener failed")

    def get(self, kind: str, target: str) -> Command | None:
        """The active (unexpired) command ``kind/target``, if any."""
        command = self._commands.get(f"{kind}/{target}")
        if command is None or not command.active(self._clock_ms()):
            return None
        return command

    def active(self, kind: str) -> dict[str, Command]:
        """Target -> active command of ``kind``."""
        now = self._clock_ms()
        with self._lock:
            items = list(self._commands.values())
        return {c.target: c for c in items if c.kind == kind and c.active(now)}

    def expired(self, kind: str, limit: int = 100) -> list[str]:
        """Targets of up to ``limit`` expired commands of ``kind`` still held: the topic is
        compacted only, so an issuer tombstones these (``ControlWriter.revoke``)."""
        now = self._clock_ms()
        with self._lock:
            items = list(self._commands.values())
        return [c.target for c in items if c.kind == kind and not c.active(now)][:limit]

    def holds(self, kind: str) -> bool:
        """Any command of ``kind`` held (expired ones included): the hot path's shortcut."""
        return self._per_kind.get(kind, 0) > 0

    def cancelled(self, event_id: str) -> Command | None:
        if not self._per_kind.get(CANCEL.name):
            return None
        return self.get(CANCEL.name, event_id)

    def paused(self, family: str) -> bool:
        return self.get(PAUSE.name, family) is not None

    def paused_families(self) -> list[str]:
        return sorted(self.active(PAUSE.name))


class StatusView:
    """Event id -> latest status record, for at most ``ttl_ms`` after it was recorded."""

    def __init__(self, ttl_ms: int, clock_ms: Clock = wall_ms) -> None:
        self._ttl_ms = ttl_ms
        self._clock_ms = clock_ms
        self._records: dict[str, StatusRecord] = {}
        self.malformed = 0
        self._applied = 0

    def apply(self, key: bytes, value: bytes | None) -> None:
        event_id = key.decode(errors="replace")
        if value is None:
            self._records.pop(event_id, None)
            return
        try:
            record = parse_status(value)
        except ControlError as exc:
            self.malformed += 1
            log.warning("status: skipping a malformed record of %r: %s", event_id, exc)
            return
        self._records[event_id] = record
        self._applied += 1
        if self._applied % 10_000 == 0:
            self.expire()

    def get(self, event_id: str) -> StatusRecord | None:
        record = self._records.get(event_id)
        if record is None or record.at_ms + self._ttl_ms < self._clock_ms():
            return None
        return record

    def expire(self) -> int:
        """Forget records past the TTL (the topic deletes them too); returns how many."""
        horizon = self._clock_ms() - self._ttl_ms
        old = [k for k, r in list(self._records.items()) if r.at_ms < horizon]
        for key in old:
            self._records.pop(key, None)
        return len(old)

    def __len__(self) -> int:
        return len(self._records)


class TopicFollower:
    """Reads ``topic`` from the beginning into ``view`` on a thread until ``stop``."""

    def __init__(
        self,
        conf: dict[str, Any],
        topic: str,
        view: View,
        *,
        poll_s: float = 0.05,
        name: str = "follower",
    ) -> None:
        self._conf = {
            **conf,
            "group.id": f"streams-{name}-unused",  # required by librdkafka; never joined
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 50,
        }
        self.topic = topic
        self._view = view
        self._poll_s = poll_s
        self._stop = threading.Event()
        self.caught_up = threading.Event()
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"streams-{name}", daemon=True)

    def start(self) -> TopicFollower:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def wait_caught_up(self, timeout_s: float) -> bool:
        return self.caught_up.wait(timeout_s)

    def _run(self) -> None:
        consumer = Consumer(self._conf)
        try:
            while not self._stop.is_set():
                try:
                    self._assign(consumer)
                    break
                except Exception as exc:  # topic missing or broker away: keep trying
                    self.error = f"cannot read {self.topic}: {exc}"
                    log.warning("%s", self.error)
                    self._stop.wait(1.0)
            self._follow(consumer)
        finally:
            consumer.close()

    def _assign(self, consumer: Consumer) -> None:
        meta = consumer.list_topics(self.topic, timeout=5.0).topics.get(self.topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise RuntimeError(meta.error if meta is not None else "no such topic")
        self._pending: set[int] = set()
        tps = []
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), 5.0)
            if high > low:
                self._pending.add(p)
            tps.append(TopicPartition(self.topic, p, OFFSET_BEGINNING))
        self._targets = {
            p: consumer.get_watermark_offsets(TopicPartition(self.topic, p), 5.0)[1]
            for p in self._pending
        }
        consumer.assign(tps)
        self.error = None
        if not self._pending:
            self.caught_up.set()

    def _follow(self, consumer: Consumer) -> None:
        while not self._stop.is_set():
            batch = consumer.consume(500, self._poll_s)
            for msg in batch:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        self._reached(msg.partition() or 0, msg.offset() or 0)
                    else:
                        log.warning("%s: %s", self.topic, err)
                    continue
                key = msg.key()
                if key is None:
                    continue
                try:
                    self._view.apply(key, msg.value())
                except Exception:
                    log.exception("%s: a view failed to apply a record", self.topic)
                if self._pending:
                    self._reached(msg.partition() or 0, (msg.offset() or 0) + 1)

    def _reached(self, partition: int, next_offset: int) -> None:
        if partition in self._pending and next_offset >= self._targets[partition]:
            self._pending.discard(partition)
            if not self._pending:
                self.caught_up.set()
