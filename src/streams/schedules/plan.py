"""The tick planner: which ticks of a schedule are due, and which to fire after downtime.

Pure: the clock is an argument (``now_ms``), nothing here reads time or the network, so the
DST and catch-up rules are unit-tested on a frozen clock.

Time zones. A cron expression is read in the schedule's wall-clock time (croniter walks
naive local times) and each wall time is resolved to one UTC instant:
- a wall time that does not exist (spring forward, 02:30 in America/Toronto) fires at the
  same distance past the previous offset, i.e. once, right after the gap (03:30 EDT);
- a wall time that exists twice (fall back, 01:30) fires once, at its first occurrence;
- two wall times that resolve to the same instant fire once.
So every schedule's ticks form a strictly increasing list of UTC instants (``tick_ms``),
and a tick is identified by ``(schedule name, tick_ms)``: the event id
``schedule:<name>:<tick_ms>`` is the same whichever worker fires it.

Catch-up after downtime (the cursor is the last tick handled; ``plan_due``):
- ``skip``: fire only ticks at most ``grace_ms`` old; older missed ticks are dropped;
- ``latest``: fire only the newest missed tick;
- ``all``: fire the missed ticks oldest first, at most ``max_catch_up`` (the newest ones);
  beyond the bound the oldest are dropped (counted in ``Plan.dropped``).
A schedule never fired before starts at ``now_ms``: nothing from the past fires.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from croniter import croniter

CatchUp = Literal["skip", "latest", "all"]
CATCH_UP_POLICIES: tuple[str, ...] = ("skip", "latest", "all")
DEFAULT_GRACE_MS = 60_000
_MAX_STEPS = 1_000_000  # a cron walk never runs away (e.g. Feb 30 never matches)


def event_id(schedule: str, tick_ms: int) -> str:
    """The deterministic event id of one tick."""
    return f"schedule:{schedule}:{tick_ms}"


def resolve_wall_time(wall: datetime, zone: ZoneInfo) -> int:
    """The UTC instant (ms) of a naive wall time in ``zone``: first occurrence when the
    time is ambiguous; past the gap (at the pre-transition offset) when it does not exist."""
    aware = wall.replace(tzinfo=zone, fold=0)
    return int(aware.astimezone(UTC).timestamp() * 1000)


def _wall(ms: int, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(zone).replace(tzinfo=None)


def ticks_after(cron: str, zone: ZoneInfo, after_ms: int) -> Iterator[int]:
    """The schedule's ticks strictly after ``after_ms``, increasing, forever."""
    # start an hour early in wall time: a fall-back hour maps later wall times to earlier
    # instants, and the filter below drops whatever is not strictly after ``after_ms``
    it = croniter(cron, _wall(after_ms, zone) - timedelta(hours=3))
    last = after_ms
    for _ in range(_MAX_STEPS):
        wall = it.get_next(datetime)
        tick = resolve_wall_time(wall, zone)
        if tick > last:
            last = tick
            yield tick
    return


def ticks_back(cron: str, zone: ZoneInfo, until_ms: int) -> Iterator[int]:
    """The schedule's ticks at or before ``until_ms``, decreasing (newest first)."""
    it = croniter(cron, _wall(until_ms, zone) + timedelta(hours=3))
    last: int | None = None
    for _ in range(_MAX_STEPS):
        wall = it.get_prev(datetime)
        tick = resolve_wall_time(wall, zone)
        if tick > until_ms:
            continue
        if last is not None and tick >= last:
            continue  # an instant already seen (gap or fold): once only
        last = tick
        yield tick
    return


def next_ticks(cron: str, zone: ZoneInfo, after_ms: int, count: int) -> list[int]:
    out: list[int] = []
    for tick in ticks_after(cron, zone, after_ms):
        if len(out) >= count:
            break
        out.append(tick)
    return out


@dataclass(frozen=True)
class Plan:
    """What to fire now: ``fire`` (ticks, oldest first), ``cursor_ms`` (the newest tick now
    handled, to store), ``dropped`` (missed ticks not fired, by policy or bound) and
    ``next_ms`` (the next tick after ``now``, to sleep until)."""

    fire: tuple[int, ...]
    cursor_ms: int
    dropped: int
    next_ms: int | None


def plan_due(
    cron: str,
    zone: ZoneInfo,
    *,
    cursor_ms: int | None,
    now_ms: int,
    catch_up: CatchUp,
    max_catch_up: int,
    grace_ms: int = DEFAULT_GRACE_MS,
) -> Plan:
    """The ticks in (``cursor_ms``, ``now_ms``] to fire under ``catch_up``."""
    upcoming = next(ticks_after(cron, zone, now_ms), None)
    if cursor_ms is None or cursor_ms >= now_ms:
        return Plan((), now_ms if cursor_ms is None else cursor_ms, 0, upcoming)
    wanted = 1 if catch_up == "latest" else max(1, max_catch_up)
    due: list[int] = []
    dropped = 0
    for tick in ticks_back(cron, zone, now_ms):
        if tick <= cursor_ms:
            break
        if len(due) < wanted and (catch_up != "skip" or tick > now_ms - grace_ms):
            due.append(tick)
            continue
        dropped += 1
        if dropped > _MAX_STEPS:
            break
    due.reverse()
    newest = max(due) if due else None
    if newest is None:
        newest_due = next(ticks_back(cron, zone, now_ms), cursor_ms)
        cursor = max(cursor_ms, newest_due)
    else:
        cursor = newest
    return Plan(tuple(due), cursor, dropped, upcoming)
