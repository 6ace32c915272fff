"""The batch accumulator's decisions on a frozen clock (core/batching.py, pure)."""

from __future__ import annotations

import pytest

from streams.core.batching import Accumulator, split_twins

T0 = 1_000_000


def items(flush: object) -> list[str]:
    assert flush is not None
    return [item for _, item in flush.items]  # type: ignore[attr-defined]


def test_nothing_waits_nothing_is_due() -> None:
    acc: Accumulator[str] = Accumulator(3, 1000)
    assert acc.due_in_ms(T0) is None
    assert acc.take(T0) is None


def test_full_at_max_events_oldest_first_the_rest_keeps_waiting() -> None:
    acc: Accumulator[str] = Accumulator(3, 1000)
    for i, name in enumerate("abcd"):
        acc.add(name, T0 + i)
    assert acc.due_in_ms(T0 + 4) == 0
    flush = acc.take(T0 + 4)
    assert flush is not None and flush.reason == "full"
    assert items(flush) == ["a", "b", "c"]
    assert [arrived for arrived, _ in flush.items] == [T0, T0 + 1, T0 + 2]
    assert len(acc) == 1
    # the rest is due max_wait_ms after its own arrival
    assert acc.due_in_ms(T0 + 4) == 999
    assert acc.take(T0 + 1002) is None
    late = acc.take(T0 + 1003)
    assert late is not None and late.reason == "wait" and items(late) == ["d"]


@pytest.mark.parametrize(("elapsed_ms", "ready"), [(0, False), (999, False), (1000, True)])
def test_wait_flush_max_wait_ms_after_the_oldest(elapsed_ms: int, ready: bool) -> None:
    acc: Accumulator[str] = Accumulator(100, 1000)
    acc.add("a", T0)
    acc.add("b", T0 + 500)  # a later arrival does not push the deadline back
    flush = acc.take(T0 + elapsed_ms)
    if ready:
        assert flush is not None and flush.reason == "wait" and items(flush) == ["a", "b"]
        assert len(acc) == 0
    else:
        assert flush is None
        assert acc.due_in_ms(T0 + elapsed_ms) == 1000 - elapsed_ms


def test_a_wait_flush_takes_at_most_max_events() -> None:
    acc: Accumulator[int] = Accumulator(2, 10)
    acc.add(1, T0)
    flush = acc.take(T0 + 10)
    assert flush is not None and [i for _, i in flush.items] == [1]
    for i in range(5):
        acc.add(i, T0 + 20)
    taken = acc.take(T0 + 20)
    assert taken is not None and taken.reason == "full" and len(taken.items) == 2


def test_put_back_goes_ahead_of_later_arrivals_in_its_order_and_keeps_arrival_times() -> None:
    acc: Accumulator[str] = Accumulator(3, 1000)
    for name in "abc":
        acc.add(name, T0)
    flush = acc.take(T0)
    assert flush is not None
    acc.add("d", T0 + 50)
    acc.put_back(flush.items[1:])  # b, c run again
    assert acc.due_in_ms(T0 + 60) == 0, "b and c are full with d"
    again = acc.take(T0 + 60)
    assert items(again) == ["b", "c", "d"]


def test_put_back_alone_is_due_by_its_original_arrival() -> None:
    acc: Accumulator[str] = Accumulator(10, 1000)
    acc.put_back([(T0, "a")])
    assert acc.due_in_ms(T0 + 1000) == 0
    assert items(acc.take(T0 + 1000)) == ["a"]


def test_drop_removes_only_what_it_picks_and_keeps_order() -> None:
    acc: Accumulator[str] = Accumulator(10, 1000)
    for i, name in enumerate(["p0-a", "p1-a", "p0-b", "p1-b"]):
        acc.add(name, T0 + i)
    assert acc.drop(lambda name: name.startswith("p0")) == ["p0-a", "p0-b"]
    assert len(acc) == 2
    # the oldest remaining one now sets the deadline
    assert acc.due_in_ms(T0) == 1001
    assert items(acc.take(T0 + 1001)) == ["p1-a", "p1-b"]


@pytest.mark.parametrize(("max_events", "max_wait_ms"), [(0, 10), (10, 0), (-1, -1)])
def test_nonpositive_limits_are_refused(max_events: int, max_wait_ms: int) -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        Accumulator(max_events, max_wait_ms)


def test_split_twins_keeps_the_first_of_each_key_in_order() -> None:
    first, later = split_twins(["a1", "b1", "a2", "c1", "b2", "a3"], key=lambda s: s[0])
    assert first == ["a1", "b1", "c1"]
    assert later == ["a2", "b2", "a3"]
    assert split_twins([], key=str) == ([], [])
