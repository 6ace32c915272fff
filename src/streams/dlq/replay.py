"""The pure redrive planner: what one DLQ record becomes when it is sent through again.

A replay is the record's key and value **byte-exact**, on its source partition of the
family's main topic (or, for an event of a priority lane, its ``streams-lane``, of that
lane's topic), with headers rewritten so the attempt count starts afresh:

- the event headers (id, type, schema, trace context, lane) and foreign headers are kept;
- every failure header (``headers.FAILURE_HEADERS``) is moved under ``streams-replayed-``
  (``streams-error-class`` -> ``streams-replayed-error-class``), replacing the ones of an
  earlier replay, so the last failure's history travels with the event and headers do not
  grow with each round;
- ``streams-replay-id`` (the redrive), ``streams-replay-count`` (how many times this event
  has been redriven, this one included), ``streams-replay-source`` (the DLQ position it came
  from: how a resumed redrive finds what it already sent) and ``streams-replay-at-ms``.

``decide`` says, for one record, send / skip (and why) / park. No IO and no clock: the
caller passes ``now_ms``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from streams.core import headers as h
from streams.dlq.filters import DlqFilter
from streams.dlq.records import DlqRecord

__all__ = [
    "REPLAYED_PREFIX",
    "REPLAY_AT_MS",
    "REPLAY_COUNT",
    "REPLAY_ID",
    "REPLAY_SOURCE",
    "Decision",
    "Replay",
    "decide",
    "replay_count_of",
    "replay_headers",
    "source_of",
]

REPLAY_ID = "streams-replay-id"
REPLAY_COUNT = "streams-replay-count"
REPLAY_SOURCE = "streams-replay-source"  # "<dlq topic>/<partition>:<offset>"
REPLAY_AT_MS = "streams-replay-at-ms"
REPLAYED_PREFIX = "streams-replayed-"

SkipReason = Literal["filtered", "resolved", "parked", "superseded", "no value"]


def replayed_name(name: str) -> str:
    """``streams-error-class`` -> ``streams-replayed-error-class``."""
    return REPLAYED_PREFIX + name.removeprefix("streams-")


def source_of(record: DlqRecord) -> str:
    """The DLQ position of ``record`` as written in ``streams-replay-source``."""
    return f"{record.topic}/{record.partition}:{record.offset}"


def replay_count_of(headers: Mapping[str, str]) -> int:
    """How many times the event was redriven before (0 when never)."""
    return max(0, h.int_header(headers, REPLAY_COUNT, 0))


def replay_headers(record: DlqRecord, *, redrive_id: str, now_ms: int) -> dict[str, str]:
    """The headers of the replay of ``record`` (module docstring)."""
    out = {
        k: v
        for k, v in record.headers.items()
        if k not in h.FAILURE_HEADERS and not k.startswith(REPLAYED_PREFIX)
    }
    for name in h.FAILURE_HEADERS:
        value = record.headers.get(name)
        if value is not None:
            out[replayed_name(name)] = value
    out[REPLAY_ID] = redrive_id
    out[REPLAY_COUNT] = str(replay_count_of(record.headers) + 1)
    out[REPLAY_SOURCE] = source_of(record)
    out[REPLAY_AT_MS] = str(now_ms)
    return out


@dataclass(frozen=True)
class Replay:
    """A record to produce: ``partition`` None lets the key partitioner place it."""

    topic: str
    partition: int | None
    key: bytes | None
    value: bytes
    headers: dict[str, str]
    source: str
    event_id: str | None


@dataclass(frozen=True)
class Decision:
    action: Literal["send", "skip", "park"]
    reason: str = ""
    replay: Replay | None = None


def decide(
    record: DlqRecord,
    *,
    redrive_id: str,
    main_topic: str,
    lane_topics: Mapping[str, str] | None = None,
    partitions: int,
    selection: DlqFilter,
    tenant: str | None,
    states: Mapping[str, str],
    superseded: frozenset[str] | set[str],
    max_replays: int,
    now_ms: int,
) -> Decision:
    """What to do with ``record``.

    ``states`` maps a DLQ position (``source_of``) to its resolved-state (``resolved`` or
    ``parked``); ``superseded`` holds positions a later DLQ copy of the same event replaced
    (the copy carries the up-to-date replay count, so only it is sent). A record already
    redriven ``max_replays`` times is parked instead of sent again. ``lane_topics`` maps the
    family's non-default priority lanes to their topics: a record whose ``streams-lane`` is
    one of them goes back there, any other (no lane, the default one, a lane since removed
    from the catalog) to ``main_topic``.
    """
    if not selection.matches(record, tenant):
        return Decision("skip", "filtered")
    source = source_of(record)
    state = states.get(source)
    if state is not None:
        return Decision("skip", "parked" if state == "parked" else "resolved")
    if source in superseded:
        return Decision("skip", "superseded")
    if record.value is None:
        return Decision("skip", "no value")
    if replay_count_of(record.headers) >= max_replays:
        return Decision(
            "park",
            f"redriven {replay_count_of(record.headers)} times (--max-replays {max_replays})",
        )
    partition = record.original_partition
    if partition is not None and not 0 <= partition < partitions:
        partition = None
    return Decision(
        "send",
        replay=Replay(
            topic=(lane_topics or {}).get(h.lane_of(record.headers) or "", main_topic),
            partition=partition,
            key=record.key,
            value=record.value,
            headers=replay_headers(record, redrive_id=redrive_id, now_ms=now_ms),
            source=source,
            event_id=record.event_id,
        ),
    )
