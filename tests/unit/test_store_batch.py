"""Group commit: concurrent submissions share flushes, each gets its own outcome."""

from __future__ import annotations

import asyncio

import pytest

from streams.store.batch import GroupCommitter


async def test_concurrent_submissions_share_one_flush_and_get_their_own_result() -> None:
    batches: list[list[int]] = []

    async def flush(items: list[int]) -> list[int | BaseException]:
        batches.append(items)
        return [i * 10 if i != 3 else ValueError("bad 3") for i in items]

    gc: GroupCommitter[int, int] = GroupCommitter(flush, max_batch=100, linger_ms=5)
    results = await asyncio.gather(*(gc.submit(i) for i in range(6)), return_exceptions=True)
    assert results[:3] == [0, 10, 20] and results[4:] == [40, 50]
    assert isinstance(results[3], ValueError)
    assert batches == [[0, 1, 2, 3, 4, 5]]


async def test_items_arriving_during_a_flush_form_the_next_batch_up_to_max() -> None:
    release = asyncio.Event()
    batches: list[list[int]] = []

    async def flush(items: list[int]) -> list[int | BaseException]:
        batches.append(items)
        if len(batches) == 1:
            await release.wait()
        return list(items)

    gc: GroupCommitter[int, int] = GroupCommitter(flush, max_batch=3, linger_ms=0)
    first = asyncio.ensure_future(gc.submit(0))
    while not batches:
        await asyncio.sleep(0)
    later = [asyncio.ensure_future(gc.submit(i)) for i in range(1, 6)]
    release.set()
    assert await first == 0
    assert await asyncio.gather(*later) == [1, 2, 3, 4, 5]
    assert batches == [[0], [1, 2, 3], [4, 5]]
    assert (gc.batches, gc.items) == (3, 6)


async def test_a_failing_flush_fails_every_item_of_its_batch_only() -> None:
    calls = 0

    async def flush(items: list[int]) -> list[int | BaseException]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("db down")
        return list(items)

    gc: GroupCommitter[int, int] = GroupCommitter(flush, linger_ms=1)
    got = await asyncio.gather(gc.submit(1), gc.submit(2), return_exceptions=True)
    assert all(isinstance(g, RuntimeError) for g in got)
    assert await gc.submit(3) == 3


def test_bounds_are_checked() -> None:
    async def flush(items: list[int]) -> list[int | BaseException]:
        return list(items)

    with pytest.raises(ValueError, match="max_batch"):
        GroupCommitter(flush, max_batch=0)
    with pytest.raises(ValueError, match="linger_ms"):
        GroupCommitter(flush, linger_ms=-1)
