"""compat.header_keys: a batch holding a header key that is not UTF-8 parses (key bytes
repaired to '?'), plain and compressed; other batches parse exactly as aiokafka's."""

from __future__ import annotations

import struct

import aiokafka.consumer.fetcher as fetcher
import pytest
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c

from streams.worker.compat import header_keys
from streams.worker.compat.header_keys import TolerantMemoryRecords, repaired


def batch(base_offset: int, codec: int, poison: bool) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=codec,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for i in range(3):
        headers = [("ok", b"1"), ("@@" if poison and i == 1 else "k2", b"\xff")]
        builder.append(i, timestamp=None, key=b"k%d" % i, value=b"v%d" % i, headers=headers)
    raw = bytearray(builder.build())
    struct.pack_into(">q", raw, 0, base_offset)
    if poison:  # only in an uncompressed batch can the key bytes be edited in place
        at = raw.index(b"@@")
        raw[at : at + 2] = b"\xff\xfe"
        struct.pack_into(">I", raw, 17, calc_crc32c(bytes(raw[21:])))
    return bytes(raw)


def records_of(records: object) -> list[tuple[int, bytes, bytes, list[tuple[str, bytes]]]]:
    out = []
    while records.has_next():  # type: ignore[attr-defined]
        for r in records.next_batch():  # type: ignore[attr-defined]
            out.append((r.offset, r.key, r.value, list(r.headers)))
    return out


def test_a_poisoned_batch_parses_with_the_key_repaired() -> None:
    raw = batch(0, 0, poison=True) + batch(3, 0, poison=False)
    with pytest.raises(UnicodeDecodeError):
        records_of(MemoryRecords(raw))  # what aiokafka did
    got = records_of(TolerantMemoryRecords(raw))
    assert [(o, k, v) for o, k, v, _ in got] == [(i, b"k%d" % (i % 3), b"v%d" % (i % 3))
                                                 for i in range(6)]  # fmt: skip
    assert got[1][3] == [("ok", b"1"), ("??", b"\xff")]
    assert got[0][3] == [("ok", b"1"), ("k2", b"\xff")]


@pytest.mark.parametrize("codec", [0, 1, 2, 3, 4])
def test_good_batches_parse_as_aiokafka_parses_them(codec: int) -> None:
    raw = batch(0, codec, poison=False) + batch(3, codec, poison=False)
    assert records_of(TolerantMemoryRecords(raw)) == records_of(MemoryRecords(raw))


@pytest.mark.parametrize("codec", [1, 2, 3, 4])
def test_a_compressed_batch_is_repaired_uncompressed(codec: int) -> None:
    raw = batch(7, codec, poison=False)
    fixed = DefaultRecordBatch(repaired(raw))
    assert fixed.validate_crc() and fixed.compression_type == 0
    assert [(r.offset, r.value) for r in fixed] == [(7 + i, b"v%d" % i) for i in range(3)]


def test_install_swaps_the_fetchers_record_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetcher, "MemoryRecords", MemoryRecords)
    header_keys.install()
    assert fetcher.MemoryRecords is TolerantMemoryRecords
