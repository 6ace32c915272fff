"""Durations as written in topics.yaml: ``500ms``, ``5s``, ``10m``, ``2h``, ``7d`` or seconds."""

from __future__ import annotations

import re

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")


def parse_duration_ms(value: object) -> int:
    """Parse a duration to milliseconds; plain numbers are seconds.

    Raises ValueError with the reason when the value is not a non-negative duration.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '30s', got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"duration must be >= 0, got {value}")
        return round(value * 1000)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like '30s', got {type(value).__name__}")
    match = _PATTERN.match(value)
    if not match:
        raise ValueError(
            f"expected a duration like '500ms', '30s', '10m', '2h', '7d', got {value!r}"
        )
    number, unit = match.groups()
    return round(float(number) * _UNITS_MS[unit or "s"])


def format_duration_ms(duration_ms: int) -> str:
    """The shortest exact label: 1000 -> '1s', 90000 -> '90s', 3600000 -> '1h'."""
    if duration_ms < 0:
        raise ValueError(f"duration must be >= 0, got {duration_ms}")
    for unit in ("d", "h", "m", "s"):
        size = _UNITS_MS[unit]
        if duration_ms and duration_ms % size == 0:
            return f"{duration_ms // size}{unit}"
    return f"{duration_ms}ms"
