"""Outcomes and counts from records (pure), and the day window."""

from __future__ import annotations

from streams.core import headers as h
from streams.jobs.analytics import day_window_ms
from streams.jobs.analytics_rollup import (
    FamilyLog,
    Rating,
    Seen,
    daily_counts,
    latest_ratings,
    outcomes,
)


def main(offset: int, event_id: str, event_type: str = "image.uploaded", ts: int = 0) -> Seen:
    headers = {h.EVENT_ID: event_id, h.EVENT_TYPE: event_type}
    return Seen("image", 0, offset, ts or 1000 + offset, headers)


def derived(topic: str, offset: int, origin: int, reason: str | None = None) -> Seen:
    headers = {h.ORIGINAL_TOPIC: "image", h.ORIGINAL_PARTITION: "0", h.ORIGINAL_OFFSET: str(origin)}
    if reason:
        headers[h.DLQ_REASON] = reason
    return Seen(topic, 0, offset, 5000, headers)


def test_outcomes_follow_from_where_the_records_are() -> None:
    log = FamilyLog(
        "image",
        main=[main(i, f"e{i}") for i in range(5)],
        retries=[derived("image.retry.10s", 0, 1), derived("image.retry.10s", 1, 2)],
        dead=[derived("image.dlq", 0, 3, "permanent")],
        committed={("image", 0): 4, ("image.retry.10s", 0): 1},
    )
    assert outcomes(log) == {
        ("image", 0, 0): "done",
        ("image", 0, 1): "done",  # its retry record is committed, nothing in the DLQ
        ("image", 0, 2): "retrying",  # its retry record is not committed yet
        ("image", 0, 3): "dlq.permanent",
        ("image", 0, 4): "pending",  # at the committed offset: not finished
    }


def test_counts_take_each_event_once_with_its_latest_record() -> None:
    log = FamilyLog(
        "image",
        main=[main(0, "a"), main(1, "a"), main(2, "b", "image.processed"), main(3, "c")],
        dead=[derived("image.dlq", 0, 0, "permanent"), derived("image.dlq", 1, 3, "invalid")],
        committed={("image", 0): 4},
    )
    # "a" was dead-lettered, then replayed and done: its latest record counts
    assert daily_counts(log) == {
        ("image", "image.uploaded", "done"): 1,
        ("image", "image.processed", "done"): 1,
        ("image", "image.uploaded", "dlq.invalid"): 1,
    }


def test_records_without_streams_headers_count_as_unknown() -> None:
    log = FamilyLog("review", main=[Seen("review", 0, 0, 1, {}), Seen("review", 0, 1, 2, {})])
    assert daily_counts(log) == {("review", "unknown", "pending"): 2}


def test_keep_filters_records() -> None:
    log = FamilyLog("image", main=[main(0, "a"), main(1, "b")], committed={("image", 0): 2})
    assert daily_counts(log, lambda r: r.offset == 1) == {("image", "image.uploaded", "done"): 1}


def test_a_resubmitted_review_replaces_the_earlier_rating() -> None:
    ratings = [Rating("r1", "s", 2, 10), Rating("r2", "s", 5, 11), Rating("r1", "s", 4, 12)]
    assert latest_ratings(ratings) == {"r1": Rating("r1", "s", 4, 12), "r2": ratings[1]}
    assert latest_ratings(reversed(ratings))["r1"].rating == 4


def test_day_window_is_the_utc_day() -> None:
    start, end = day_window_ms("2026-01-01")
    assert start == 1_767_225_600_000
    assert end - start == 86_400_000
