"""The priority lanes' ready queue: one FIFO per lane, taken by weight, lower lanes within
their share of the slots, retry records by their lane header."""

from __future__ import annotations

from typing import Any

from tests.unit.worker_fakes import TP, AckingLog, AckLog, make_event

from streams.catalog import Family, parse_catalog
from streams.core import headers as h
from streams.worker.ordering import Entry
from streams.worker.priority import PriorityReady

MAIN = TP("t.email", 0)


def family(concurrency: int = 16) -> Family:
    body: dict[str, Any] = {
        "key_field": "user_id",
        "partitions": 1,
        "replication_factor": 1,
        "min_insync_replicas": 1,
        "retention": "1d",
        "handler_timeout": "30s",
        "retry": {"delays": ["1s"]},
        "concurrency": concurrency,
        "priorities": {
            "lanes": ["high", "normal", "low"],
            "default": "normal",
            "weights": {"high": 6, "normal": 3, "low": 1},
            "min_share": {"low": 0.05},
        },
    }
    return parse_catalog({"version": 1, "families": {"email": body}}).family("email")


def entries(n: int, start: int = 0, lane: str | None = None) -> list[Entry]:
    log = AckingLog(MAIN)
    headers = {h.LANE: lane} if lane else None
    return [log.add(make_event(AckLog(), start + i, headers=headers)) for i in range(n)]


def test_a_high_record_is_taken_before_a_low_backlog() -> None:
    ready = PriorityReady(family())
    ready.extend(entries(1000), "low")
    (urgent,) = entries(1, start=5000)
    ready.extend([urgent], "high")
    assert ready.popleft() is urgent
    assert len(ready) == 1000


def test_lower_lanes_keep_a_reserve_of_slots_for_the_first_lane() -> None:
    ready = PriorityReady(family(concurrency=16))
    assert ready.reserved == 2
    ready.extend(entries(100), "low")
    taken = []
    while ready.takeable():
        taken.append(ready.popleft())
    assert len(taken) == 14, "the low lane may hold concurrency - reserved slots"
    (urgent,) = entries(1, start=500)
    ready.extend([urgent], "high")
    assert ready.takeable() and ready.popleft() is urgent, "a high record finds a slot at once"
    ready.finished(taken[0])
    assert ready.takeable(), "a finished low record frees its slot"


def test_records_without_a_lane_go_by_their_header_or_the_default() -> None:
    ready = PriorityReady(family())
    ready.extend(entries(1, lane="high") + entries(1, start=1) + entries(1, start=2, lane="x"))
    assert ready.depth() == {"high": 1, "normal": 2, "low": 0}


def test_entries_put_back_go_to_the_front_of_their_lane_in_order() -> None:
    ready = PriorityReady(family())
    ready.extend(entries(3), "low")
    first, second = ready.popleft(), ready.popleft()
    ready.extendleft(reversed([first, second]))
    assert [ready.popleft().offset for _ in range(3)] == [0, 1, 2]


def test_the_low_lane_keeps_its_minimum_share_under_a_busy_high_lane() -> None:
    ready = PriorityReady(family(concurrency=1000))
    ready.extend(entries(1000), "high")
    ready.extend(entries(1000, start=10_000), "low")
    picks = [ready.popleft() for _ in range(200)]
    low = sum(1 for e in picks if e.lane == "low")
    assert low >= 0.05 * 200 - 1, low
    assert low < 200 - low, "high gets the larger share"
