"""The pure parts of ledger compaction: merge planning, the compact index, tombstone queue."""

from __future__ import annotations

from array import array

from hypothesis import given
from hypothesis import strategies as st

from streams.core import idempotency
from streams.core.idempotency import (
    Compaction,
    DoneIndex,
    MergeGroup,
    Retiring,
    batch_header,
    batch_key,
    created_of_key,
    merge_hashes,
    pack_batch,
    plan_merge,
)

POLICY = Compaction(window_ms=1_000, small_below=10, max_small=4, min_age_ms=500, max_hashes=5)


def test_plan_groups_by_expiry_window_and_takes_the_latest_expiry() -> None:
    batches = [(b"a", 1_100, 1), (b"b", 2_500, 1), (b"c", 1_900, 2), (b"d", 2_000, 1)]
    assert list(plan_merge(batches, POLICY)) == [
        MergeGroup((b"a", b"c"), 1_900, 3),
        MergeGroup((b"b", b"d"), 2_500, 2),
    ]


def test_plan_cuts_a_group_before_it_passes_max_hashes() -> None:
    batches = [(b"a", 10, 2), (b"b", 10, 2), (b"c", 10, 1), (b"d", 10, 3), (b"e", 10, 4)]
    groups = list(plan_merge(batches, POLICY))
    assert [g.keys for g in groups] == [(b"a", b"b", b"c"), (b"d",), (b"e",)]
    assert [g.hashes for g in groups] == [5, 3, 4]


@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 5)), max_size=60))
def test_plan_keeps_every_batch_once_and_never_shortens_an_expiry(
    specs: list[tuple[int, int]],
) -> None:
    batches = [(f"k{i}".encode(), exp, n) for i, (exp, n) in enumerate(specs)]
    expiry = {key: exp for key, exp, _ in batches}
    groups = list(plan_merge(batches, POLICY))
    keys = [k for g in groups for k in g.keys]
    assert sorted(keys) == sorted(expiry)
    for g in groups:
        assert g.hashes <= POLICY.max_hashes or len(g.keys) == 1
        assert g.expires_at_ms == max(expiry[k] for k in g.keys)
        # a key is held at most one window past its own expiry
        assert all(g.expires_at_ms - expiry[k] < POLICY.window_ms for k in g.keys)


def test_due_on_count_or_age_but_not_again_right_after_a_merge() -> None:
    assert POLICY.due(4, oldest_created_ms=1_000, last_merge_ms=1_000, now_ms=1_000)
    assert not POLICY.due(3, oldest_created_ms=1_000, last_merge_ms=0, now_ms=1_400)
    assert POLICY.due(3, oldest_created_ms=1_000, last_merge_ms=0, now_ms=1_500)
    assert not POLICY.due(3, oldest_created_ms=1_000, last_merge_ms=1_200, now_ms=1_500)
    assert not POLICY.due(1, oldest_created_ms=0, last_merge_ms=0, now_ms=10_000)  # alone
    assert Compaction.for_ttl(7 * 86_400_000).window_ms == 7 * 86_400_000 // 32


def test_merge_hashes_sorts_and_dedupes() -> None:
    got = merge_hashes([array("q", [5, -3]), [5, 9], set(), array("q", [-3, 0])])
    assert got == array("q", [-3, 0, 5, 9])


def test_batch_header_and_created_of_key() -> None:
    assert batch_header(pack_batch(77, [1, 2, 3])) == (77, 3)
    assert created_of_key(batch_key(4, 1234, "n")) == 1234


def test_retiring_gives_keys_back_in_order_in_chunks() -> None:
    r = Retiring()
    r.add(0, [b"0|1|a", b"0|2|b", b"0|3|c"])
    r.add(1, [b"1|1|d"])
    r.add(2, [])
    assert len(r) == 4
    assert r.take(2) == [(0, b"0|1|a"), (0, b"0|2|b")]
    assert r.take(5) == [(0, b"0|3|c"), (1, b"1|1|d")]
    assert r.take(5) == [] and len(r) == 0


def test_retiring_drops_moved_partitions_even_mid_group() -> None:
    r = Retiring()
    r.add(0, [b"a", b"b", b"c"])
    r.add(1, [b"d", b"e"])
    r.add(0, [b"f"])
    assert r.take(1) == [(0, b"a")]
    r.drop({1})
    assert len(r) == 3
    assert r.take(10) == [(0, b"b"), (0, b"c"), (0, b"f")]
    r.add(0, [b"g"])
    r.add(1, [b"h"])
    r.drop({0})
    assert r.take(10) == [(1, b"h")]


def test_index_fresh_hashes_are_sealed_into_a_sorted_array() -> None:
    index = DoneIndex()
    for digest in range(100, 0, -1):
        index.add(0, digest * 7)
    assert len(index) == 100
    part = index._parts[0]
    assert len(part.fresh) == 100 and len(part.sealed) == 0  # below the seal threshold
    part.seal()
    assert list(part.sealed) == [d * 7 for d in range(1, 101)] and not part.fresh
    assert index.contains(0, 700) and not index.contains(0, 701)
    index.add(0, 701)  # fresh again, found beside the sealed ones
    assert index.contains(0, 701) and index.contains(0, 7)


def test_index_seals_once_fresh_reaches_an_eighth_of_sealed() -> None:
    index = DoneIndex()
    index.load(0, b"0|1|x", 10, array("q", range(0, 8 * idempotency._SEAL_MIN * 2, 2)))
    assert index.contains(0, 0)  # the first lookup sorts the loaded hashes in
    part = index._parts[0]
    sealed = len(part.sealed)
    for digest in range(1, 2 * (sealed // 8), 2):
        index.add(0, digest)
    assert not part.fresh  # folded in when it reached sealed // 8
    assert len(part.sealed) == len(index) == sealed + sealed // 8
    assert index.contains(0, 1) and index.contains(0, 2 * (sealed // 8) - 1)


def test_index_loaded_duplicates_count_once() -> None:
    index = DoneIndex()
    index.load(0, b"0|1|a", 10, array("q", [1, 2, 3]))
    index.load(0, b"0|1|b", 10, array("q", [3, 2, 4]))  # a merged batch beside its parts
    index.add(0, 4)
    assert len(index) == 4


def test_index_forget_batches_removes_from_both_sets_and_array() -> None:
    index = DoneIndex()
    index.load(0, b"old", 10, array("q", [1, 2, 3]))
    index.add(0, 4)
    index.note_batch(0, b"new", 20)
    index.forget_batches(0, [b"old"], [1, 2, 3])
    assert [index.contains(0, d) for d in (1, 2, 3, 4)] == [False, False, False, True]
    assert list(index.expired(30)) == [(0, b"new")]


def test_index_replace_batches_keeps_hashes_and_moves_expiry() -> None:
    index = DoneIndex()
    index.load(2, b"a", 10, array("q", [1]))
    index.load(2, b"b", 15, array("q", [2]))
    index.replace_batches(2, [b"a", b"b"], b"m", 15)
    assert index.contains(2, 1) and index.contains(2, 2)
    assert list(index.expired(100)) == [(2, b"m")]
    assert index.expires_at(2, b"m") == 15 and index.expires_at(2, b"a") is None
