"""PartitionLog: acks strictly in offset order, the finished prefix only (faust #606)."""

from __future__ import annotations

from tests.unit.worker_fakes import TP, AckingLog, AckLog, make_event

from streams.worker.ordering import Entry

TP0 = TP("t.audit", 0)


def fill(offsets: list[int]) -> tuple[AckingLog, AckLog, dict[int, Entry]]:
    acks = AckLog()
    plog = AckingLog(TP0)
    entries = {o: plog.add(make_event(acks, o)) for o in offsets}
    return plog, acks, entries


def test_entry_copies_the_message_coordinates() -> None:
    acks = AckLog()
    plog = AckingLog(TP("t.audit", 3))
    entry = plog.add(make_event(acks, 42, partition=3, key=b"user-7"))
    assert (entry.topic, entry.partition, entry.offset, entry.key) == ("t.audit", 3, 42, b"user-7")
    assert entry.log is plog
    assert not entry.done


def test_in_order_finishes_ack_each_at_once() -> None:
    plog, acks, entries = fill([0, 1, 2])
    for offset in (0, 1, 2):
        entries[offset].finish()
        assert acks.offsets() == list(range(offset + 1))
    assert len(plog) == 0
    assert plog.acked_through is None


def test_out_of_order_finishes_ack_only_the_finished_prefix_in_offset_order() -> None:
    plog, acks, e = fill([10, 11, 12, 13, 14])
    e[12].finish()
    e[13].finish()
    assert acks == []
    assert plog.acked_through == 10
    e[10].finish()
    assert acks.offsets() == [10]
    assert plog.acked_through == 11
    e[11].finish()
    assert acks.offsets() == [10, 11, 12, 13]
    assert plog.acked_through == 14
    e[14].finish()
    assert acks.offsets() == [10, 11, 12, 13, 14]
    assert len(plog) == 0


def test_reverse_finishes_ack_everything_at_the_end_in_offset_order() -> None:
    _, acks, e = fill([5, 9, 20])  # gaps: compacted or transaction markers
    e[20].finish()
    e[9].finish()
    assert acks == []
    e[5].finish()
    assert acks.offsets() == [5, 9, 20]


def test_each_event_is_acked_once_even_when_finished_twice() -> None:
    plog, acks, e = fill([0, 1])
    e[0].finish()
    e[0].finish()
    e[1].finish()
    e[1].finish()
    assert acks.offsets() == [0, 1]
    assert plog.advances == [1, 2], "one advance per finish that moved the prefix"


def test_after_close_finishing_acks_nothing() -> None:
    plog, acks, e = fill([0, 1, 2, 3])
    e[1].finish()
    assert plog.close() == 4  # all four stay unacked (1 waits behind 0)
    assert plog.closed
    for offset in (0, 2, 3):
        e[offset].finish()
    assert acks == []
    assert len(plog) == 0


def test_close_counts_only_what_is_still_unacked() -> None:
    plog, acks, e = fill([0, 1, 2])
    e[0].finish()
    assert plog.close() == 2
    assert acks.offsets() == [0]


def test_last_offset_is_the_last_added() -> None:
    plog = AckingLog(TP0)
    assert plog.last_offset == -1
    acks = AckLog()
    first = plog.add(make_event(acks, 7))
    assert plog.last_offset == 7
    plog.add(make_event(acks, 12))
    assert plog.last_offset == 12
    first.finish()
    assert plog.last_offset == 12  # finishing does not move it
    plog.close()
    assert plog.last_offset == 12


def test_partitions_are_independent() -> None:
    acks = AckLog()
    log0, log1 = AckingLog(TP0), AckingLog(TP("t.audit", 1))
    a0 = log0.add(make_event(acks, 0, partition=0))
    b0 = log1.add(make_event(acks, 0, partition=1))
    b1 = log1.add(make_event(acks, 1, partition=1))
    b1.finish()
    b0.finish()  # partition 1 does not wait for partition 0
    assert acks == [("t.audit", 1, 0), ("t.audit", 1, 1)]
    a0.finish()
    assert acks.offsets(partition=0) == [0]
