"""What a day's records say, counted (pure: records in, counts and ratings out).

An event's *outcome* follows from where its records are, with no per-event bookkeeping:

- ``dlq.<reason>``: a dead-letter record names it as its origin
  (``streams-original-topic/-partition/-offset``), ``<reason>`` from ``streams-dlq-reason``;
- ``pending``: its main-topic offset is at or past the worker group's committed offset
  (not finished yet);
- ``retrying``: a retry-tier record names it and that record is not committed yet;
- ``done``: finished, and neither of the above.

Events are identified by ``streams-event-id``; when one id has several main-topic records
(a producer's duplicate, a replay from the DLQ) the latest record's outcome counts, once.
A record without the header (not published through streams) counts under its own
position. Its event type comes from ``streams-event-type`` (``unknown`` when absent).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from streams.core import headers as h

UNKNOWN_TYPE = "unknown"

Position = tuple[str, int, int]
"""(topic, partition, offset)."""


@dataclass(frozen=True)
class Seen:
    """One record as read back from Kafka."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    headers: Mapping[str, str]
    value: bytes | None = None

    @property
    def position(self) -> Position:
        return (self.topic, self.partition, self.offset)

    def origin(self) -> Position | None:
        """The main-topic position a retry or DLQ record came from."""
        try:
            return (
                self.headers[h.ORIGINAL_TOPIC],
                int(self.headers[h.ORIGINAL_PARTITION]),
                int(self.headers[h.ORIGINAL_OFFSET]),
            )
        except (KeyError, ValueError):
            return None


@dataclass(frozen=True)
class FamilyLog:
    """A family's records for one day: the day's main-topic records, and the retry-tier and
    DLQ records written since the day began; ``committed`` maps (topic, partition) to the
    worker group's committed offset (absent: nothing committed)."""

    family: str
    main: list[Seen]
    retries: list[Seen] = field(default_factory=list)
    dead: list[Seen] = field(default_factory=list)
    committed: Mapping[tuple[str, int], int] = field(default_factory=dict)


def _is_committed(record: Seen, committed: Mapping[tuple[str, int], int]) -> bool:
    return record.offset < committed.get((record.topic, record.partition), 0)


def outcomes(log: FamilyLog) -> dict[Position, str]:
    """The outcome of each main-topic record of ``log`` (see the module docstring)."""
    dead = {}
    for record in log.dead:
        origin = record.origin()
        if origin is not None:
            dead[origin] = "dlq." + record.headers.get(h.DLQ_REASON, "unknown")
    waiting = {
        origin
        for record in log.retries
        if not _is_committed(record, log.committed) and (origin := record.origin()) is not None
    }
    out: dict[Position, str] = {}
    for record in log.main:
        pos = record.position
        if pos in dead:
            out[pos] = dead[pos]
        elif not _is_committed(record, log.committed):
            out[pos] = "pending"
        elif pos in waiting:
            out[pos] = "retrying"
        else:
            out[pos] = "done"
    return out


def latest_per_event(records: Iterable[Seen]) -> list[Seen]:
    """One record per event id: the latest (by timestamp, then position)."""
    latest: dict[str, Seen] = {}
    for record in sorted(records, key=lambda r: (r.timestamp_ms, r.position)):
        event_id = record.headers.get(h.EVENT_ID) or "@{}:{}:{}".format(*record.position)
        latest[event_id] = record
    return list(latest.values())


def daily_counts(
    log: FamilyLog, keep: Callable[[Seen], bool] = lambda _: True
) -> Counter[tuple[str, str, str]]:
    """(family, event type, outcome) -> events, for the records ``keep`` accepts."""
    fate = outcomes(log)
    counts: Counter[tuple[str, str, str]] = Counter()
    for record in latest_per_event(log.main):
        if keep(record):
            event_type = record.headers.get(h.EVENT_TYPE) or UNKNOWN_TYPE
            counts[(log.family, event_type, fate[record.position])] += 1
    return counts


@dataclass(frozen=True)
class Rating:
    """One review's rating, without its author (analytics never keeps user ids)."""

    review_id: str
    subject_id: str
    rating: int
    reviewed_at_ms: int


def latest_ratings(ratings: Iterable[Rating]) -> dict[str, Rating]:
    """review id -> its latest rating (a resubmitted review replaces the earlier one)."""
    out: dict[str, Rating] = {}
    for rating in ratings:
        known = out.get(rating.review_id)
        if known is None or rating.reviewed_at_ms >= known.reviewed_at_ms:
            out[rating.review_id] = rating
    return out
