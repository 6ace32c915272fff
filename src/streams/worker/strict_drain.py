"""Reading a strict family's parking topic back (``worker/strict.py``): one partition from an
offset, by assignment (no consumer group, nothing committed), with a plain consumer whose
blocking calls run in a thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, TopicPartition

READ_TIMEOUT_S = 0.5
BATCH = 500


@dataclass(frozen=True, slots=True)
class ParkedRecord:
    """A parking-topic record, with the attributes ``ordering.Entry`` is built from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Any  # confluent_kafka's: a list of (name, bytes)
    timestamp: int


class ParkedReader:
    """Reads ``topic[partition]`` forward from ``offset``; ``close`` when done."""

    def __init__(self, conf: dict[str, Any], topic: str, partition: int, offset: int) -> None:
        self._consumer = Consumer(
            {
                **conf,
                "group.id": f"streams-parked-{topic}",  # never joined: assign() only
                "enable.auto.commit": False,
                "enable.partition.eof": False,
            }
        )
        self._topic, self._partition = topic, partition
        self._tp = TopicPartition(topic, partition)
        self._consumer.assign([TopicPartition(topic, partition, offset)])

    async def read(self) -> tuple[list[ParkedRecord], int]:
        """The next records (possibly none) and the partition's high watermark."""
        return await asyncio.to_thread(self._read)

    def _read(self) -> tuple[list[ParkedRecord], int]:
        out = []
        for msg in self._consumer.consume(BATCH, timeout=READ_TIMEOUT_S):
            offset = msg.offset()
            if msg.error() is not None or offset is None:
                continue
            stamp = msg.timestamp()[1]
            out.append(
                ParkedRecord(
                    self._topic,
                    self._partition,
                    offset,
                    msg.key(),
                    msg.value(),
                    msg.headers() or [],
                    stamp if stamp > 0 else 0,
                )
            )
        _, high = self._consumer.get_watermark_offsets(self._tp, timeout=5.0, cached=False)
        return out, high

    async def close(self) -> None:
        await asyncio.to_thread(self._consumer.close)


ReaderFactory = Callable[[str, int, int], ParkedReader]
"""(topic, partition, offset) -> a reader positioned there."""
