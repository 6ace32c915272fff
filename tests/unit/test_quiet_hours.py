"""Quiet hours in the user's zone, with a frozen clock (``now_ms`` is an argument)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from streams.core.quiet_hours import QuietHours, quiet_wait_ms

NIGHT = QuietHours.parse("22:00-08:00")


def at(text: str, zone: str = "UTC") -> int:
    local = datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))
    return int(local.astimezone(UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("local", "zone", "wait_s"),
    [
        ("2026-03-02 21:59:59", "America/Toronto", 0),
        ("2026-03-02 22:00:00", "America/Toronto", 10 * 3600),
        ("2026-03-02 23:30:00", "America/Toronto", 8.5 * 3600),
        ("2026-03-03 07:59:00", "America/Toronto", 60),
        ("2026-03-03 08:00:00", "America/Toronto", 0),
        ("2026-03-03 12:00:00", "Asia/Tokyo", 0),
        ("2026-03-03 03:00:00", "Asia/Tokyo", 5 * 3600),
    ],
)
def test_a_push_in_the_window_waits_until_its_local_end(
    local: str, zone: str, wait_s: float
) -> None:
    assert quiet_wait_ms(NIGHT, zone, at(local, zone)) == wait_s * 1000


def test_the_same_instant_is_quiet_in_one_zone_and_not_in_another() -> None:
    now = at("2026-03-03 04:00:00")  # 04:00 UTC = 23:00 in Toronto, 13:00 in Tokyo
    assert quiet_wait_ms(NIGHT, "America/Toronto", now) == 9 * 3600 * 1000
    assert quiet_wait_ms(NIGHT, "Asia/Tokyo", now) == 0


def test_the_end_follows_the_local_clock_across_a_dst_change() -> None:
    # Toronto springs forward on 2026-03-08 at 02:00: 22:00 -> 08:00 lasts 9 real hours
    assert quiet_wait_ms(
        NIGHT, "America/Toronto", at("2026-03-07 22:00:00", "America/Toronto")
    ) == (9 * 3600 * 1000)


def test_a_daytime_window_and_seconds() -> None:
    window = QuietHours.parse("12:00:00-12:00:05")
    assert quiet_wait_ms(window, "UTC", at("2026-03-03 12:00:02")) == 3000
    assert quiet_wait_ms(window, "UTC", at("2026-03-03 12:00:05")) == 0


def test_no_window_and_bad_windows() -> None:
    assert QuietHours.parse("") is None
    assert quiet_wait_ms(None, "UTC", 0) == 0
    for bad in ("22-08", "25:00-08:00", "08:00-08:00", "22:00 - 08:00"):
        with pytest.raises(ValueError, match="quiet hours"):
            QuietHours.parse(bad)
