"""The tick planner on a frozen clock: America/Toronto DST days, catch-up after 3 days down,
and schedules.yaml validation (precise messages)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from streams.errors import ConfigError
from streams.schedules.config import load_schedules, parse_schedules
from streams.schedules.plan import next_ticks, plan_due, ticks_back

TORONTO = ZoneInfo("America/Toronto")
REPO = Path(__file__).resolve().parents[2]


def ms(text: str) -> int:
    """An ISO instant with offset (or Z) as ms since the epoch."""
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def iso(tick_ms: int) -> str:
    return datetime.fromtimestamp(tick_ms / 1000, UTC).astimezone(TORONTO).isoformat()


# --- DST (2026: spring forward Sun 8 March 02:00 EST; fall back Sun 1 November 02:00 EDT) ---


def test_spring_forward_0230_runs_once_right_after_the_gap() -> None:
    ticks = next_ticks("30 2 * * *", TORONTO, ms("2026-03-07T00:00:00-05:00"), 3)
    assert [iso(t) for t in ticks] == [
        "2026-03-07T02:30:00-05:00",
        "2026-03-08T03:30:00-04:00",  # 02:30 does not exist that day: once, after the gap
        "2026-03-09T02:30:00-04:00",
    ]


def test_fall_back_0130_runs_once_at_its_first_occurrence() -> None:
    ticks = next_ticks("30 1 * * *", TORONTO, ms("2026-10-31T00:00:00-04:00"), 3)
    assert [iso(t) for t in ticks] == [
        "2026-10-31T01:30:00-04:00",
        "2026-11-01T01:30:00-04:00",  # 01:30 happens twice (EDT, then EST): fires once
        "2026-11-02T01:30:00-05:00",
    ]


def test_fall_back_from_inside_the_repeated_hour_does_not_fire_the_tick_again() -> None:
    # the cursor is in the second 01:xx (EST): the 01:30 EDT tick is in the past
    after = ms("2026-11-01T01:10:00-05:00")
    assert [iso(t) for t in next_ticks("30 1 * * *", TORONTO, after, 1)] == [
        "2026-11-02T01:30:00-05:00"
    ]


def test_half_hourly_through_the_spring_gap_has_no_duplicate_instant() -> None:
    ticks = next_ticks("*/30 * * * *", TORONTO, ms("2026-03-08T01:00:00-05:00"), 4)
    assert [iso(t) for t in ticks] == [
        "2026-03-08T01:30:00-05:00",
        "2026-03-08T03:00:00-04:00",  # 02:00 and 03:00 are one instant: once
        "2026-03-08T03:30:00-04:00",  # 02:30 and 03:30 likewise
        "2026-03-08T04:00:00-04:00",
    ]


def test_backwards_walk_agrees_with_forwards_across_both_transitions() -> None:
    for cron in ("30 2 * * *", "30 1 * * *", "*/30 * * * *"):
        for start in ("2026-03-06T00:00:00-05:00", "2026-10-30T00:00:00-04:00"):
            forward = next_ticks(cron, TORONTO, ms(start), 200)
            back = []
            for t in ticks_back(cron, TORONTO, forward[-1]):
                if t <= ms(start):
                    break
                back.append(t)
            assert list(reversed(back)) == forward, (cron, start)


def test_seconds_field_is_last() -> None:
    ticks = next_ticks("* * * * * *", ZoneInfo("UTC"), ms("2026-01-01T00:00:00Z"), 3)
    assert [t - ms("2026-01-01T00:00:00Z") for t in ticks] == [1000, 2000, 3000]


# --- catch-up after a simulated 3-day outage -------------------------------------------------

DAILY_2AM = "0 2 * * *"
CURSOR = ms("2026-06-01T02:00:00-04:00")  # last fired tick, then 3 days down
NOW = ms("2026-06-04T09:00:00-04:00")  # ticks missed: 06-02, 06-03, 06-04 at 02:00


def test_catch_up_all_fires_every_missed_tick_oldest_first() -> None:
    plan = plan_due(
        DAILY_2AM, TORONTO, cursor_ms=CURSOR, now_ms=NOW, catch_up="all", max_catch_up=10
    )
    assert [iso(t)[:16] for t in plan.fire] == [
        "2026-06-02T02:00",
        "2026-06-03T02:00",
        "2026-06-04T02:00",
    ]
    assert plan.dropped == 0
    assert plan.cursor_ms == plan.fire[-1]
    assert plan.next_ms is not None and iso(plan.next_ms).startswith("2026-06-05T02:00")


def test_catch_up_all_is_bounded_keeping_the_newest() -> None:
    plan = plan_due(
        DAILY_2AM, TORONTO, cursor_ms=CURSOR, now_ms=NOW, catch_up="all", max_catch_up=2
    )
    assert [iso(t)[:10] for t in plan.fire] == ["2026-06-03", "2026-06-04"]
    assert plan.dropped == 1


def test_catch_up_latest_fires_only_the_newest_missed_tick() -> None:
    plan = plan_due(
        DAILY_2AM, TORONTO, cursor_ms=CURSOR, now_ms=NOW, catch_up="latest", max_catch_up=10
    )
    assert [iso(t)[:10] for t in plan.fire] == ["2026-06-04"]
    assert plan.dropped == 2


def test_catch_up_skip_fires_nothing_missed_but_moves_the_cursor() -> None:
    plan = plan_due(
        DAILY_2AM, TORONTO, cursor_ms=CURSOR, now_ms=NOW, catch_up="skip", max_catch_up=10
    )
    assert plan.fire == ()
    assert plan.dropped == 3
    assert iso(plan.cursor_ms).startswith("2026-06-04T02:00")  # not reconsidered


def test_skip_still_fires_an_on_time_tick() -> None:
    on_time = ms("2026-06-04T02:00:00.500-04:00")
    plan = plan_due(
        DAILY_2AM,
        TORONTO,
        cursor_ms=CURSOR,
        now_ms=on_time,
        catch_up="skip",
        max_catch_up=10,
        grace_ms=60_000,
    )
    assert [iso(t)[:10] for t in plan.fire] == ["2026-06-04"]


def test_a_schedule_never_fired_starts_now_and_fires_nothing_from_the_past() -> None:
    plan = plan_due(DAILY_2AM, TORONTO, cursor_ms=None, now_ms=NOW, catch_up="all", max_catch_up=10)
    assert plan.fire == () and plan.cursor_ms == NOW


def test_nothing_due_twice() -> None:
    first = plan_due(
        DAILY_2AM, TORONTO, cursor_ms=CURSOR, now_ms=NOW, catch_up="all", max_catch_up=10
    )
    again = plan_due(
        DAILY_2AM,
        TORONTO,
        cursor_ms=first.cursor_ms,
        now_ms=NOW + 1000,
        catch_up="all",
        max_catch_up=10,
    )
    assert again.fire == ()


# --- schedules.yaml ----------------------------------------------------------------------


def test_the_shipped_schedules_load() -> None:
    names = {s.name for s in load_schedules(REPO / "schedules.yaml")}
    assert {"chat-messages-cleanup", "daily-stats", "weekly-ratings", "monthly-cleanup"} <= names


def body(**overrides: Any) -> dict[str, Any]:
    spec = {
        "cron": "0 2 * * *",
        "event_type": "cleanup.due",
        "payload": {"policy": "sessions", "scheduled_for_ms": "{tick_ms}"},
    }
    spec.update(overrides)
    return {"version": 1, "schedules": {"nightly": spec}}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cron": "0 25 * * *"}, r"schedules\.nightly\.cron: .*not a cron expression"),
        ({"timezone": "Mars/Base"}, r"schedules\.nightly\.timezone: .*IANA time zone"),
        ({"catch_up": "sometimes"}, r"schedules\.nightly\.catch_up: "),
        ({"max_catch_up": 0}, r"schedules\.nightly\.max_catch_up: "),
        ({"event_type": "nope.thing"}, r"schedules\.nightly\.event_type: "),
        ({"payload": {"policy": "everything"}}, r"schedules\.nightly\.payload\.policy: "),
        ({"color": "red"}, r"schedules\.nightly\.color: "),
    ],
)
def test_invalid_schedules_name_the_field(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=r"^conf/schedules\.yaml: .*" + message):
        parse_schedules(body(**overrides), "conf/schedules.yaml")


def test_placeholders_are_filled_per_tick() -> None:
    (s,) = parse_schedules(body(timezone="America/Toronto"))
    tick = ms("2026-06-04T02:00:00-04:00")
    assert s.payload_for(tick) == {"policy": "sessions", "scheduled_for_ms": tick}
    assert s.event_id(tick) == f"schedule:nightly:{tick}"
