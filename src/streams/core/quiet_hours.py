"""Quiet hours in a user's time zone: is ``now`` inside the window, and until when.

A window is a local wall-clock range ``HH:MM[:SS]-HH:MM[:SS]``; ``22:00-08:00`` crosses
midnight.
``quiet_wait_ms`` is 0 outside the window, else the milliseconds until the window's end in
the user's zone (computed on local dates, so DST changes move the end with the clock).
Pure: stdlib only (zoneinfo); the clock is an argument.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_TIME = r"([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?"
_WINDOW = re.compile(rf"^{_TIME}-{_TIME}$")


@dataclass(frozen=True)
class QuietHours:
    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> QuietHours | None:
        """``"22:00-08:00"``; empty -> None (no quiet hours); ValueError names the format."""
        text = text.strip()
        if not text:
            return None
        m = _WINDOW.match(text)
        if m is None:
            raise ValueError(f"quiet hours {text!r}: expected HH:MM-HH:MM, e.g. 22:00-08:00")
        h1, m1, s1, h2, m2, s2 = (int(g or 0) for g in m.groups())
        start, end = time(h1, m1, s1), time(h2, m2, s2)
        if start == end:
            raise ValueError(f"quiet hours {text!r}: start and end must differ")
        return cls(start, end)

    def contains(self, local: time) -> bool:
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


def quiet_wait_ms(window: QuietHours | None, timezone: str, now_ms: int) -> int:
    """Milliseconds until the end of the quiet window at ``now_ms`` in ``timezone`` (0 when
    not quiet). An unknown zone counts as UTC (events validate their zone on receipt)."""
    if window is None:
        return 0
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    now = datetime.fromtimestamp(now_ms / 1000, tz=UTC).astimezone(zone)
    local = now.time().replace(tzinfo=None)
    if not window.contains(local):
        return 0
    end_day = now.date()
    if window.start > window.end and local >= window.start:
        end_day += timedelta(days=1)
    end = datetime.combine(end_day, window.end, tzinfo=zone)
    end_ms = int(end.astimezone(UTC).timestamp() * 1000)
    return max(0, end_ms - now_ms)
