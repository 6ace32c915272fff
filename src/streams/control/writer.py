"""Issue and revoke control commands (the API and the CLI): one record, acknowledged by
the broker (acks=all) before ``issue`` returns."""

from __future__ import annotations

import threading
from typing import Any

from confluent_kafka import KafkaException, Producer

from streams.control.model import Command, ControlError, command_key
from streams.errors import BrokerUnavailable


class ControlWriter:
    def __init__(self, conf: dict[str, Any], topic: str, *, timeout_s: float = 10.0) -> None:
        self._producer = Producer(
            {**conf, "acks": "all", "enable.idempotence": True, "linger.ms": 0}
        )
        self.topic = topic
        self._timeout_s = timeout_s
        self._lock = threading.Lock()

    def issue(self, command: Command) -> int:
        """Write ``command``; returns its offset. Raises BrokerUnavailable."""
        return self._send(command.key, command.encode())

    def revoke(self, kind: str, target: str) -> int:
        """Tombstone ``kind/target`` (resume a family, withdraw a cancel)."""
        if not kind or not target:
            raise ControlError("revoke needs a kind and a target")
        return self._send(command_key(kind, target), None)

    def _send(self, key: str, value: bytes | None) -> int:
        result: dict[str, Any] = {}
        done = threading.Event()

        def delivered(err: Any, msg: Any) -> None:
            result["err"], result["offset"] = err, msg.offset() if msg is not None else -1
            done.set()

        with self._lock:
            try:
                self._producer.produce(self.topic, value, key.encode(), on_delivery=delivered)
            except (KafkaException, BufferError) as exc:
                raise BrokerUnavailable(f"control topic {self.topic}: {exc}") from None
            self._producer.flush(self._timeout_s)
        if not done.is_set():
            raise BrokerUnavailable(
                f"control topic {self.topic}: not acknowledged within {self._timeout_s:g}s"
            )
        if result["err"] is not None:
            raise BrokerUnavailable(f"control topic {self.topic}: {result['err']}")
        return int(result["offset"])

    def close(self) -> None:
        self._producer.flush(self._timeout_s)
