"""Records of a batch as columns, and the arguments ``Producer.produce`` takes for each.

``FastRecords`` is what the batch fast path (``publish.fast``) returns: a
``Sequence[Record]`` kept as columns of bytes and str (the per-type constant headers and the
lane header shared by reference), each ``Record`` tuple built only when read.
``produce_args`` gives ``(topic, value, key, headers list)`` per record for any sequence of
records, straight from the columns for ``FastRecords``: a batch of 50,000 leaves no
per-event containers for the garbage collector to walk while it is sent. Pure: no
confluent_kafka here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, overload

from streams.core import headers as h

if TYPE_CHECKING:
    from streams.publish.prepare import Record

__all__ = [
    "FastRecords",
    "KafkaHeaders",
    "ProduceArgs",
    "event_ids_of",
    "produce_args",
    "topics_of",
]

KafkaHeaders = list[tuple[str, str | bytes | None]]
ProduceArgs = tuple[str, bytes, bytes, KafkaHeaders]


class FastRecords(Sequence["Record"]):
    """A batch's records as columns (see the module docstring); read as ``Record`` tuples.

    ``constant_headers[i]`` is record i's event type, schema and content type headers,
    ``lane_headers[i]`` its ``streams-lane`` header or None."""

    __slots__ = (
        "constant_headers",
        "event_ids",
        "keys",
        "lane_headers",
        "raw_ids",
        "topics",
        "traceparents",
        "values",
    )

    def __init__(self, n: int, event_ids: list[str], traceparents: list[bytes]) -> None:
        self.event_ids = event_ids
        self.traceparents = traceparents
        self.topics: list[str] = [""] * n
        self.keys: list[bytes] = [b""] * n
        self.values: list[bytes] = [b""] * n
        self.raw_ids: list[bytes] = [b""] * n
        self.constant_headers: list[tuple[tuple[str, bytes], ...]] = [()] * n
        self.lane_headers: list[tuple[str, bytes] | None] = [None] * n

    def __len__(self) -> int:
        return len(self.values)

    @overload
    def __getitem__(self, index: int) -> Record: ...
    @overload
    def __getitem__(self, index: slice) -> list[Record]: ...
    def __getitem__(self, index: int | slice) -> Record | list[Record]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        event_type, schema, content = self.constant_headers[index]
        headers: tuple[tuple[str, bytes], ...] = (
            (h.EVENT_ID, self.raw_ids[index]),
            event_type,
            schema,
            content,
            (h.TRACEPARENT, self.traceparents[index]),
        )
        lane = self.lane_headers[index]
        if lane is not None:
            headers += (lane,)
        eid = self.event_ids[index]
        return (self.topics[index], self.keys[index], self.values[index], headers, eid)

    def __iter__(self) -> Iterator[Record]:
        for i in range(len(self.values)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        """Equal to any list or tuple (or FastRecords) of the same records."""
        if isinstance(other, FastRecords | list | tuple):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment] # mutable columns, like a list

    def __repr__(self) -> str:
        return f"FastRecords({len(self)} records)"

    def produce_args(self) -> Iterator[ProduceArgs]:
        """``produce_args`` read straight from the columns."""
        topics, values, keys = self.topics, self.values, self.keys
        raw_ids, traceparents, constants, lanes = (
            self.raw_ids,
            self.traceparents,
            self.constant_headers,
            self.lane_headers,
        )
        event_id, traceparent = h.EVENT_ID, h.TRACEPARENT
        for i in range(len(values)):
            event_type, schema, content = constants[i]
            headers: KafkaHeaders = [
                (event_id, raw_ids[i]),
                event_type,
                schema,
                content,
                (traceparent, traceparents[i]),
            ]
            lane = lanes[i]
            if lane is not None:
                headers.append(lane)
            yield topics[i], values[i], keys[i], headers


def topics_of(records: Sequence[Record]) -> set[str]:
    """Every topic the records go to."""
    if isinstance(records, FastRecords):
        return set(records.topics)
    return {r[0] for r in records}


def event_ids_of(records: Sequence[Record]) -> list[str]:
    """The records' event ids, in order."""
    return records.event_ids if isinstance(records, FastRecords) else [r[4] for r in records]


def produce_args(records: Sequence[Record]) -> Iterator[ProduceArgs]:
    """(topic, value, key, headers list) of each record: ``Producer.produce``'s arguments."""
    if isinstance(records, FastRecords):
        return records.produce_args()
    return _record_args(records)


def _record_args(records: Sequence[Record]) -> Iterator[ProduceArgs]:
    for topic, key, value, header_tuple, _ in records:
        headers: KafkaHeaders = list(header_tuple)
        yield topic, value, key, headers
