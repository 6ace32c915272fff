"""The sequencer decides admission, resync back-off and stalls on its own (a fake clock)."""

from __future__ import annotations

from typing import NamedTuple

from streams.worker.sequencer import (
    RESYNC_RETRY_S,
    STALL_S,
    Sequencer,
    Verdict,
    start_offset,
)


class TP(NamedTuple):
    topic: str
    partition: int


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def _positioned(clock: Clock, starts: dict[TP, int]) -> Sequencer:
    seq = Sequencer(clock)
    seq.assign(starts)
    seq.position(starts)
    seq.positioned_all()
    return seq


def test_in_sequence_admission_and_the_resync_back_off() -> None:
    clock, tp = Clock(), TP("t", 0)
    seq = _positioned(clock, {tp: 5})
    assert seq.admit(tp, 5) == Verdict(True)
    assert seq.admit(tp, 8) == Verdict(False, "out_of_sequence", 6)  # seek back to 6
    clock.now_s += RESYNC_RETRY_S - 1
    assert seq.admit(tp, 9) == Verdict(False, "out_of_sequence", None), "sought again too soon"
    assert seq.in_sequence()
    clock.now_s += 1
    assert not seq.in_sequence(), "out of sequence for the retry interval: not ready"
    assert seq.admit(tp, 9) == Verdict(False, "out_of_sequence", 6), "no second seek back"
    assert seq.admit(tp, 4) == Verdict(False, "redelivered")
    assert seq.admit(tp, 6).admitted
    assert not seq.resyncing(tp) and seq.in_sequence()


def test_the_reasons_a_record_is_not_admitted() -> None:
    clock, tp = Clock(), TP("t", 0)
    seq = Sequencer(clock)
    seq.assign({tp})
    assert seq.admit(tp, 0).reason == "not_positioned"
    seq.position({tp: 0})
    seq.positioned_all()
    assert seq.admit(TP("t", 1), 0).reason == "not_assigned"
    seq.unposition()
    assert seq.admit(tp, 0).reason == "not_positioned"
    seq.positioned_all()
    seq.drain()
    assert seq.admit(tp, 0).reason == "draining"


def test_start_offsets_never_precede_the_log_start() -> None:
    assert start_offset(None, 0) == 0
    assert start_offset(None, 7) == 7
    assert start_offset(3, 7) == 7  # the committed records were deleted
    assert start_offset(12, 7) == 12


def test_released_partitions_are_forgotten() -> None:
    clock, tp = Clock(), TP("t", 0)
    seq = _positioned(clock, {tp: 5})
    seq.admit(tp, 9)
    seq.release({tp})
    assert seq.expected(tp) is None and not seq.resyncing(tp) and not seq.owns(tp)
    assert seq.resume_offset(tp) is None


def test_lost_buffers_are_sought_once_positioned_and_forgotten_by_positioning() -> None:
    clock, tp, other = Clock(), TP("t", 0), TP("t", 1)
    seq = Sequencer(clock)
    seq.assign({tp, other})
    assert not seq.discarded({tp}), "sought before the partition was positioned"
    seq.position({other: 3})
    assert seq.take_lost() == {}, "not positioned yet"
    seq.positioned_all()
    assert seq.take_lost() == {}, "tp was never positioned: its expected offset is unknown"
    assert seq.discarded({other})
    assert seq.take_lost() == {other: 3}
    assert seq.take_lost() == {}
    seq.discarded({other})
    seq.position({other: 3})  # a new positioning reads the lost records again anyway
    assert seq.take_lost() == {}
    seq.drain()
    assert not seq.discarded({other})


def test_a_stall_is_a_partition_that_does_not_move_below_the_high_watermark() -> None:
    clock = Clock()
    stuck, idle, held, resyncing = TP("t", 0), TP("t", 1), TP("t", 2), TP("t", 3)
    seq = _positioned(clock, {stuck: 5, idle: 9, held: 3, resyncing: 1})
    highwater = {stuck: 20, idle: 9, held: 10, resyncing: 10}
    seq.admit(resyncing, 4)  # out of sequence: its resync handles it
    clock.now_s += STALL_S - 1
    assert seq.stalls(highwater.__getitem__, lambda tp: tp == held) == []
    clock.now_s += 1
    [stall] = seq.stalls(highwater.__getitem__, lambda tp: tp == held)
    assert (stall.tp, stall.offset, stall.for_s) == (stuck, 5, STALL_S)
    seq.sought(stall)
    assert seq.stalls(highwater.__getitem__, lambda tp: tp == held) == [], "its clock restarted"
    clock.now_s += STALL_S
    assert seq.admit(stuck, 5).admitted  # progress restarts its clock
    assert [s.tp for s in seq.stalls(highwater.__getitem__, lambda tp: False)] == [held]


def test_highwater_failures_and_draining_find_no_stalls() -> None:
    clock, tp = Clock(), TP("t", 0)
    seq = _positioned(clock, {tp: 0})

    def broken(tp: TP) -> int:
        raise RuntimeError("no metadata yet")

    clock.now_s += 2 * STALL_S
    assert seq.stalls(broken, lambda tp: False) == []
    seq.drain()
    assert seq.stalls(lambda tp: 10, lambda tp: False) == []
