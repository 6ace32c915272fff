"""The strict-order state machine (``worker/strict.py``): parking, release and hold, overflow
to the parking topic, and the holds read back after a restart."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from streams.worker.strict import (
    PARK,
    RUN,
    Change,
    HoldRecord,
    KeyBlocks,
    Spill,
    hold_key,
    parse_hold_key,
)

A = (0, b"a")
B = (0, b"b")


@dataclass(frozen=True)
class Ev:
    """A parked item: an event id and its main-topic offset (the machine tracks items by
    identity; equality is for the assertions)."""

    event_id: str
    offset: int


def blocks(max_parked: int = 100, hold_dead: bool = False) -> KeyBlocks[Ev]:
    return KeyBlocks(max_parked=max_parked, hold_dead=hold_dead)


def arrive(kb: KeyBlocks[Ev], pkey: tuple[int, bytes], ev: Ev) -> object:
    return kb.arrive(pkey, ev.event_id, ev.offset, ev)


def held_behind(kb: KeyBlocks[Ev], head: Ev, pkey: tuple[int, bytes] = A) -> None:
    assert arrive(kb, pkey, head) == RUN
    change = kb.routed(pkey, head.event_id, dead=False)
    assert change == Change(write=True, record=HoldRecord(head.event_id))


def test_a_free_key_runs_and_a_retrying_event_holds_its_key() -> None:
    kb = blocks()
    e1, e2, e3 = Ev("e1", 1), Ev("e2", 2), Ev("e3", 3)
    held_behind(kb, e1)
    assert kb.held(A) and kb.head(A) == "e1"
    assert arrive(kb, A, e2) == PARK
    assert arrive(kb, A, e3) == PARK
    assert kb.parked == 2
    assert kb.ran(A) == Change()  # still held


def test_other_keys_of_the_partition_are_not_held() -> None:
    kb = blocks()
    held_behind(kb, Ev("a1", 1))
    assert arrive(kb, B, Ev("b1", 2)) == RUN
    assert arrive(kb, (1, b"a"), Ev("a-on-p1", 3)) == RUN  # same key, another partition


def test_the_heads_success_runs_the_parked_events_in_order_before_later_ones() -> None:
    kb = blocks()
    e1, e2, e3, e4 = Ev("e1", 1), Ev("e2", 2), Ev("e3", 3), Ev("e4", 4)
    held_behind(kb, e1)
    arrive(kb, A, e3)  # parked out of arrival order: kept by offset
    arrive(kb, A, e2)
    change = kb.finished(A, "e1")
    assert change.run == (e2, e3)
    assert change.write and change.record is None  # the hold's tombstone
    assert kb.parked == 0
    assert arrive(kb, A, e4) == PARK  # arrived before the released ones: waits behind them
    assert arrive(kb, A, e2) == RUN
    assert kb.ran(A) == Change()
    assert arrive(kb, A, e3) == RUN
    again = kb.ran(A)  # the released ones have all arrived: the next batch runs
    assert again.run == (e4,) and not again.write
    assert arrive(kb, A, e4) == RUN
    assert kb.ran(A) == Change()
    assert kb.blocked() == 0
    assert arrive(kb, A, Ev("e5", 5)) == RUN


def test_a_released_event_failing_holds_the_key_again_and_the_rest_wait_in_order() -> None:
    kb = blocks()
    e1, e2, e3, e4, e9 = Ev("e1", 1), Ev("e2", 2), Ev("e3", 3), Ev("e4", 4), Ev("e9", 9)
    held_behind(kb, e1)
    for ev in (e2, e3, e4):
        arrive(kb, A, ev)
    assert kb.finished(A, "e1").run == (e2, e3, e4)
    assert arrive(kb, A, e9) == PARK
    assert arrive(kb, A, e2) == RUN
    assert kb.routed(A, "e2", dead=False) == Change(write=True, record=HoldRecord("e2"))
    assert arrive(kb, A, e3) == PARK
    assert arrive(kb, A, e4) == PARK
    assert kb.finished(A, "e2").run == (e3, e4, e9)


def test_a_release_waits_for_released_events_still_on_their_way() -> None:
    kb = blocks()
    e1, e2, e3, e4 = Ev("e1", 1), Ev("e2", 2), Ev("e3", 3), Ev("e4", 4)
    held_behind(kb, e1)
    arrive(kb, A, e2)
    arrive(kb, A, e3)
    assert kb.finished(A, "e1").run == (e2, e3)
    assert arrive(kb, A, e2) == RUN
    kb.routed(A, "e2", dead=False)  # e3 is still queued in the lanes
    arrive(kb, A, e4)
    change = kb.finished(A, "e2")  # e2's retry succeeded before e3 arrived
    assert change.run == () and change.write
    assert arrive(kb, A, e3) == RUN  # e3 is older than e4, parked meanwhile
    assert kb.ran(A).run == (e4,)


def test_release_on_dead_letter_frees_the_key() -> None:
    kb = blocks(hold_dead=False)
    e2 = Ev("e2", 2)
    held_behind(kb, Ev("e1", 1))
    arrive(kb, A, e2)
    change = kb.routed(A, "e1", dead=True)
    assert change.run == (e2,) and change.write and change.record is None
    assert kb.routed(B, "b1", dead=True) == Change()  # dead-lettered at once: nothing held


def test_hold_on_dead_letter_keeps_the_key_until_the_redrive_succeeds() -> None:
    kb = blocks(hold_dead=True)
    e2 = Ev("e2", 2)
    held_behind(kb, Ev("e1", 1))
    arrive(kb, A, e2)
    assert kb.routed(A, "e1", dead=True) == Change(write=True, record=HoldRecord("e1", dead=True))
    assert kb.held(A)
    assert arrive(kb, A, Ev("e3", 3)) == PARK
    redrive = Ev("e1", 40)  # the redrive is a main-topic record with the head's id
    assert arrive(kb, A, redrive) == RUN
    assert kb.finished(A, "e1").run == (e2, Ev("e3", 3))


def test_hold_on_dead_letter_holds_a_key_whose_first_attempt_was_dead_lettered() -> None:
    kb = blocks(hold_dead=True)
    assert arrive(kb, A, Ev("e1", 1)) == RUN
    assert kb.routed(A, "e1", dead=True).record == HoldRecord("e1", dead=True)
    assert arrive(kb, A, Ev("e2", 2)) == PARK


def test_another_events_outcome_leaves_the_hold_alone() -> None:
    kb = blocks()
    held_behind(kb, Ev("e1", 1))
    assert kb.routed(A, "stray", dead=False) == Change()
    assert kb.finished(A, "stray") == Change()
    assert kb.head(A) == "e1"


def test_past_the_memory_bound_a_key_spills_and_keeps_spilling_until_drained() -> None:
    kb = blocks(max_parked=2)
    a2, a3, a4, a5 = Ev("a2", 2), Ev("a3", 3), Ev("a4", 4), Ev("a5", 5)
    held_behind(kb, Ev("a1", 1))
    assert arrive(kb, A, a2) == PARK
    assert arrive(kb, A, a3) == PARK
    assert arrive(kb, A, a4) == Spill((a2, a3, a4))  # its parked ones go first, in order
    assert kb.parked == 0
    assert kb.spilled_at(A, 70) == Change(write=True, record=HoldRecord("a1", parked_from=70))
    assert kb.spilled_at(A, 71) == Change()  # only where the spill starts is written
    assert arrive(kb, A, a5) == Spill((a5,))  # below the bound again, but order: it spills
    release = kb.finished(A, "a1")
    assert release.drain_from == 70 and release.run == ()
    assert release.record == HoldRecord(None, parked_from=70)  # released, still to drain
    assert kb.draining(A)
    assert arrive(kb, A, Ev("a6", 6)) == Spill((Ev("a6", 6),))  # while draining: it spills
    assert kb.drained(A, None) == Change(write=True, record=None)
    assert kb.blocked() == 0
    assert arrive(kb, A, Ev("a7", 7)) == RUN


def test_the_bound_counts_every_key_and_only_the_key_parking_spills() -> None:
    kb = blocks(max_parked=1)
    held_behind(kb, Ev("a1", 1))
    held_behind(kb, Ev("b1", 2), B)
    assert arrive(kb, A, Ev("a2", 3)) == PARK
    assert isinstance(arrive(kb, B, Ev("b2", 4)), Spill)
    assert not kb.spilled(A) and kb.spilled(B)


def test_a_drained_event_failing_holds_the_key_and_the_spill_restarts_after_it() -> None:
    kb = blocks(max_parked=0)
    held_behind(kb, Ev("a1", 1))
    assert arrive(kb, A, Ev("a2", 2)) == Spill((Ev("a2", 2),))  # bound 0: straight there
    kb.spilled_at(A, 10)
    assert kb.finished(A, "a1").drain_from == 10
    assert kb.routed(A, "a2", dead=False).record == HoldRecord("a2", parked_from=10)
    assert kb.drained(A, 11) == Change(write=True, record=HoldRecord("a2", parked_from=11))
    assert not kb.draining(A)
    assert kb.finished(A, "a2").drain_from == 11


def test_a_release_while_the_first_spill_is_on_its_way_drains_once_it_landed() -> None:
    kb = blocks(max_parked=0)
    held_behind(kb, Ev("a1", 1))
    assert isinstance(arrive(kb, A, Ev("a2", 2)), Spill)
    assert kb.finished(A, "a1") == Change()  # nothing known to drain yet
    landed = kb.spilled_at(A, 5)
    assert landed.drain_from == 5 and landed.record == HoldRecord(None, parked_from=5)


def test_restore_holds_a_key_whose_head_is_not_done() -> None:
    kb = blocks()
    assert kb.restore(A, HoldRecord("e1"), head_done=False) == Change()
    assert arrive(kb, A, Ev("e2", 2)) == PARK
    assert arrive(kb, A, Ev("e1", 1)) == RUN  # the head redelivered
    restored = blocks()
    restored.restore(A, HoldRecord("e1", parked_from=30), head_done=False)
    assert isinstance(arrive(restored, A, Ev("e2", 2)), Spill)  # its spill goes on


def test_restore_releases_a_key_whose_head_is_done() -> None:
    kb = blocks()
    assert kb.restore(A, HoldRecord("e1"), head_done=True) == Change(write=True)
    assert kb.blocked() == 0
    spilled = kb.restore(B, HoldRecord("b1", parked_from=12), head_done=True)
    assert spilled == Change(drain_from=12)
    assert kb.draining(B)
    assert kb.restore((2, b"c"), HoldRecord(None, parked_from=3), head_done=False).drain_from == 3


def test_drop_forgets_revoked_partitions_and_their_parked_events() -> None:
    kb = blocks()
    held_behind(kb, Ev("a1", 1))
    held_behind(kb, Ev("c1", 1), (1, b"c"))
    arrive(kb, A, Ev("a2", 2))
    arrive(kb, (1, b"c"), Ev("c2", 2))
    assert [e.event_id for e in kb.drop({0})] == ["a2"]
    assert kb.parked == 1 and not kb.held(A) and kb.held((1, b"c"))


def test_hold_records_and_keys_round_trip_and_refuse_garbage() -> None:
    for record in (HoldRecord("e1"), HoldRecord("e1", True, 4), HoldRecord(None, False, 0)):
        assert HoldRecord.decode(record.encode()) == record
    for bad in (
        b"",
        b"{}",
        b"[1]",
        b'{"head": 1, "dead": false, "parked_from": null}',
        b'{"head": null, "dead": false, "parked_from": null}',
        b'{"head": "e", "dead": false, "parked_from": -1}',
    ):
        with pytest.raises(ValueError, match="not a hold record"):
            HoldRecord.decode(bad)
    assert parse_hold_key(hold_key(7, b"user:1")) == (7, b"user:1")
    with pytest.raises(ValueError, match="not a hold key"):
        parse_hold_key(b"x:1")


def test_evict_spills_a_key_holding_back_its_partition_and_keeps_its_order() -> None:
    kb = blocks()
    a2, a3, a4 = Ev("a2", 2), Ev("a3", 3), Ev("a4", 4)
    held_behind(kb, Ev("a1", 1))
    arrive(kb, A, a2)
    arrive(kb, A, a3)
    assert kb.evict(A) == Spill((a2, a3))
    assert kb.parked == 0 and kb.spilled(A)
    assert kb.evict(A) is None  # nothing left in memory
    assert arrive(kb, A, a4) == Spill((a4,))
    assert kb.evict(B) is None
