"""Watching what became of replayed records, without depending on a status service.

A replay has failed again when a record carrying its ``streams-replay-id`` and
``streams-replay-source`` appears on one of the family's retry tiers or on its DLQ (after
the offsets noted when the redrive started). It is done when the worker's done-marker for
its event id (``core.idempotency.event_hash``) is in the family's ledger changelog
(``<app id>-<family>.done-changelog``), read from the beginning: an event that had already
succeeded before it was replayed is skipped by the worker and counts as done too.
"""

from __future__ import annotations

import contextlib
import uuid

from confluent_kafka import Consumer, KafkaError, TopicPartition

from streams.broker.clients import base_conf
from streams.core import headers as h
from streams.core.idempotency import event_hash, unpack_batch
from streams.core.topology import changelog_topic, table_name
from streams.dlq.redrive_model import Tally
from streams.dlq.replay import REPLAY_ID, REPLAY_SOURCE
from streams.settings import Settings

__all__ = ["OutcomeWatcher"]


class OutcomeWatcher:
    def __init__(
        self,
        settings: Settings,
        *,
        family: str,
        redrive_id: str,
        failure_topics: dict[str, dict[int, int]],  # topic -> partition -> start offset
        tally: Tally,
    ) -> None:
        self.redrive_id = redrive_id
        self.tally = tally
        self.ledger_topic = changelog_topic(settings.app_id, table_name(family, "done"))
        self._by_hash: dict[int, str] = {}
        self._done_hashes: set[int] = set()
        self._consumer = Consumer(
            base_conf(
                settings,
                **{
                    "group.id": f"streams-redrive-watch-{uuid.uuid4().hex[:12]}",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "client.id": "streams-redrive-watch",
                    "log_level": 0,
                },
            )
        )
        assignment = [
            TopicPartition(topic, p, offset)
            for topic, offsets in failure_topics.items()
            for p, offset in offsets.items()
        ]
        metadata = self._consumer.list_topics(self.ledger_topic, timeout=10)
        ledger = metadata.topics.get(self.ledger_topic)
        if ledger is not None and ledger.error is None:
            assignment += [
                TopicPartition(self.ledger_topic, p, -2) for p in sorted(ledger.partitions)
            ]
        self._consumer.assign(assignment)

    def track(self, source: str, event_id: str | None) -> None:
        """Watch the event of DLQ position ``source`` (call as it is sent)."""
        if event_id:
            digest = event_hash(event_id)
            self._by_hash[digest] = source
            if digest in self._done_hashes:
                self.tally.note_done(source)

    def poll(self, timeout_s: float = 0.0) -> int:
        """Read what arrived; returns how many records were looked at."""
        seen = 0
        while True:
            batch = self._consumer.consume(num_messages=1000, timeout=timeout_s)
            if not batch:
                return seen
            timeout_s = 0.0
            seen += len(batch)
            for message in batch:
                error = message.error()
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    continue
                if error is not None:
                    continue
                if message.topic() == self.ledger_topic:
                    self._ledger(message.value())
                    continue
                raw = message.headers()
                headers = h.decode(list(raw.items()) if isinstance(raw, dict) else raw)
                if headers.get(REPLAY_ID) != self.redrive_id:
                    continue
                source = headers.get(REPLAY_SOURCE)
                if source:
                    self.tally.note_failed(source, message.topic() or "?")

    def _ledger(self, value: bytes | None) -> None:
        if not value:
            return
        try:
            _expires, hashes = unpack_batch(value)
        except ValueError:
            return
        for digest in hashes:
            self._done_hashes.add(digest)
            source = self._by_hash.get(digest)
            if source is not None:
                self.tally.note_done(source)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._consumer.close()
