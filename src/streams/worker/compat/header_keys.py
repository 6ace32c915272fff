"""A record whose header key is not UTF-8 no longer crashes the worker.

A header key is a Kafka ``String``; no client writes invalid UTF-8 there, but the broker
stores what it is sent, and aiokafka's record parser (C and Python) decodes the key
strictly: ``UnicodeDecodeError`` escaped from the fetch, faust's Fetcher crashed and the
worker exited, at every restart, on the same record (found by tests/integration/
test_engine_fuzz.py). aiokafka's fetcher now reads record sets through
``TolerantMemoryRecords``: a batch parses as before; only when parsing it raises
``UnicodeDecodeError`` is it parsed again from a copy whose invalid header-key bytes are
``?`` (same length, CRC recomputed; a compressed batch is decompressed first). Values,
keys and offsets are untouched, so the record is processed (or routed) like any other.
Costs one Python call per batch on the happy path.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import Any

import aiokafka.consumer.fetcher as fetcher  # type: ignore[import-untyped]
from aiokafka.codec import (  # type: ignore[import-untyped]
    gzip_decode,
    lz4_decode,
    snappy_decode,
    zstd_decode,
)
from aiokafka.record.default_records import DefaultRecordBatch  # type: ignore[import-untyped]
from aiokafka.record.memory_records import MemoryRecords  # type: ignore[import-untyped]
from aiokafka.record.util import calc_crc32c, decode_varint  # type: ignore[import-untyped]

_LOG_OVERHEAD = 12  # base offset (8) + batch length (4)
_V2_HEADER = 61  # the v2 batch header, up to and including the record count
_CRC_AT, _ATTRIBUTES_AT = 17, 21
_CODEC_MASK = 0x07
_DECOMPRESS: dict[int, Callable[[bytes], bytes]] = {
    1: gzip_decode,
    2: snappy_decode,
    3: lz4_decode,
    4: zstd_decode,
}


def install() -> None:
    """Make aiokafka's fetcher parse record sets with ``TolerantMemoryRecords`` (idempotent)."""
    fetcher.MemoryRecords = TolerantMemoryRecords


class TolerantMemoryRecords:
    """aiokafka's ``MemoryRecords`` over a fetched record set, handing out batches that
    survive a header key that is not UTF-8."""

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._inner = MemoryRecords(raw)
        self._pos = 0

    def size_in_bytes(self) -> int:
        return int(self._inner.size_in_bytes())

    def has_next(self) -> bool:
        return bool(self._inner.has_next())

    def next_batch(self) -> Any:
        batch = self._inner.next_batch()
        start = self._pos
        (length,) = struct.unpack_from(">i", self._raw, start + 8)
        self._pos = start + _LOG_OVERHEAD + length
        if batch is None or batch.magic < 2:
            return batch
        return TolerantBatch(batch, self._raw, start, self._pos)


class TolerantBatch:
    """A v2 batch: aiokafka's, re-parsed from a repaired copy (of ``raw[start:end]``, made
    only then) if a header key is bad."""

    def __init__(self, batch: Any, raw: bytes, start: int, end: int) -> None:
        self._batch = batch
        self._raw = raw
        self._span = (start, end)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)

    def __iter__(self) -> Iterator[Any]:
        try:
            records = list(self._batch)
        except UnicodeDecodeError:
            start, end = self._span
            records = list(DefaultRecordBatch(repaired(bytes(self._raw[start:end]))))
        return iter(records)

    def __next__(self) -> Any:  # control batches are read with next()
        return next(self._batch)


def repaired(raw: bytes) -> bytes:
    """The v2 batch ``raw``, uncompressed, with every header key made valid UTF-8."""
    attributes = struct.unpack_from(">h", raw, _ATTRIBUTES_AT)[0]
    records = raw[_V2_HEADER:]
    codec = attributes & _CODEC_MASK
    if codec:
        records = _DECOMPRESS[codec](records)
    fixed = bytearray(raw[:_V2_HEADER]) + _repair_header_keys(bytearray(records))
    struct.pack_into(">i", fixed, 8, len(fixed) - _LOG_OVERHEAD)
    struct.pack_into(">h", fixed, _ATTRIBUTES_AT, attributes & ~_CODEC_MASK)
    struct.pack_into(">I", fixed, _CRC_AT, calc_crc32c(bytes(fixed[_ATTRIBUTES_AT:])))
    return bytes(fixed)


def _repair_header_keys(buf: bytearray) -> bytearray:
    pos = 0
    while pos < len(buf):
        length, pos = decode_varint(buf, pos)
        end = pos + length
        pos += 1  # attributes
        for _ in range(2):  # timestamp delta, offset delta
            _, pos = decode_varint(buf, pos)
        for _ in range(2):  # key, value
            size, pos = decode_varint(buf, pos)
            pos += max(size, 0)
        count, pos = decode_varint(buf, pos)
        for _ in range(max(count, 0)):
            size, pos = decode_varint(buf, pos)
            buf[pos : pos + size] = _valid_utf8(bytes(buf[pos : pos + size]))
            pos += size
            size, pos = decode_varint(buf, pos)
            pos += max(size, 0)
        pos = end
    return buf


def _valid_utf8(data: bytes) -> bytes:
    """``data`` with each byte of an invalid UTF-8 sequence replaced by ``?``."""
    out = bytearray(data)
    while True:
        try:
            out.decode("utf-8")
        except UnicodeDecodeError as exc:
            out[exc.start : exc.end] = b"?" * (exc.end - exc.start)
        else:
            return bytes(out)
