"""Test support for the control plane: watch ``streams.status``, issue commands."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from streams.broker.clients import base_conf
from streams.control.model import Command, StatusRecord
from streams.control.reader import StatusView, TopicFollower
from streams.control.topics import control_topic, status_topic
from streams.control.writer import ControlWriter
from streams.settings import Settings


class StatusHistory(StatusView):
    """A ``StatusView`` that also keeps every record it applied, per event, in order."""

    def __init__(self) -> None:
        super().__init__(ttl_ms=86_400_000)
        self.history: defaultdict[str, list[StatusRecord]] = defaultdict(list)

    def apply(self, key: bytes, value: bytes | None) -> None:
        super().apply(key, value)
        record = self.get(key.decode())
        if record is not None:
            self.history[record.event_id].append(record)

    def states(self, event_id: str) -> list[str]:
        return [r.state for r in self.history[event_id]]


class ControlRig:
    """Follows the status topic and writes the control topic of ``settings``."""

    def __init__(self, settings: Settings) -> None:
        conf = base_conf(settings)
        self.status = StatusHistory()
        self.follower = TopicFollower(conf, status_topic(settings.topic_prefix), self.status)
        self.follower.start()
        self.writer = ControlWriter(conf, control_topic(settings.topic_prefix))

    def close(self) -> None:
        self.follower.stop()
        self.writer.close()

    def issue(self, kind: str, target: str, ttl_ms: int | None = 600_000) -> None:
        now = int(time.time() * 1000)
        expires = now + ttl_ms if ttl_ms is not None else None
        self.writer.issue(
            Command(kind=kind, target=target, issued_at_ms=now, expires_at_ms=expires, actor="t")
        )

    def revoke(self, kind: str, target: str) -> None:
        self.writer.revoke(kind, target)

    def wait_state(
        self, event_id: str, state: str, timeout_s: float, **fields: Any
    ) -> StatusRecord:
        """Poll until ``event_id``'s latest status is ``state`` (with ``fields``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            record = self.status.get(event_id)
            if (
                record is not None
                and record.state == state
                and all(getattr(record, k) == v for k, v in fields.items())
            ):
                return record
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{event_id}: no status {state} {fields} within {timeout_s}s; "
                    f"history {self.status.states(event_id)}, latest {record}"
                )
            time.sleep(0.05)
