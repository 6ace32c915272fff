"""Topic names, derived in one place from the catalog. Pure and idempotent.

Naming (architecture.md, "Data flow"):
    <prefix><family>                  main topic
    <prefix><family>.retry.<delay>    one retry tier per distinct delay, e.g. email.retry.30s
    <prefix><family>.dlq              dead-letter topic
    <prefix><family>.lane.<lane>      a priority lane other than the family's default one
                                      (the default lane is the main topic itself)
    <prefix><family>.parked           parked events past the memory bound (``ordering:
                                      strict`` only; read back by partition, not by a group)
Table changelogs follow faust: ``<app_id>-<table>-changelog`` with table ``<family>.<kind>``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from streams.core.durations import format_duration_ms

RETRY_INFIX = ".retry."
DLQ_SUFFIX = ".dlq"
LANE_INFIX = ".lane."
PARKED_SUFFIX = ".parked"
TABLE_KINDS = ("done", "buckets", "state", "holds")
"""``state``: a job's own keyed state (consent, suppression), only for families with
``state_table: true``; compacted, never expires. ``holds``: the keys held behind a retrying
event (``ordering: strict``, ``worker/strict.py``); compacted, released keys tombstoned."""


PREFIX_SEPARATORS = (".", "-")


def check_prefix(prefix: str) -> str:
    """A topic prefix is empty or ends with '.' or '-' (which family names cannot contain),
    so applying it is unambiguous and idempotent. Raises ValueError otherwise."""
    if prefix and not prefix.endswith(PREFIX_SEPARATORS):
        raise ValueError(f"topic prefix {prefix!r} must end with '.' or '-' (e.g. 'staging.')")
    return prefix


def with_prefix(prefix: str, name: str) -> str:
    """``name`` with ``prefix`` in front, applied at most once (idempotent).

    Raises ValueError for a prefix that does not end with a separator."""
    check_prefix(prefix)
    return name if not prefix or name.startswith(prefix) else prefix + name


def main_topic(prefix: str, family: str) -> str:
    return with_prefix(prefix, family)


def retry_topic(prefix: str, family: str, delay_ms: int) -> str:
    return with_prefix(prefix, f"{family}{RETRY_INFIX}{format_duration_ms(delay_ms)}")


def dlq_topic(prefix: str, family: str) -> str:
    return with_prefix(prefix, f"{family}{DLQ_SUFFIX}")


def lane_topic(prefix: str, family: str, lane: str) -> str:
    """The topic of a non-default priority lane, e.g. ``email.lane.high``."""
    return with_prefix(prefix, f"{family}{LANE_INFIX}{lane}")


def parked_topic(prefix: str, family: str) -> str:
    """Where a strict family's parked events go once the memory bound is reached."""
    return with_prefix(prefix, f"{family}{PARKED_SUFFIX}")


def lane_of_topic(prefix: str, family: str, topic: str) -> str | None:
    """``high`` for ``[prefix]email.lane.high`` of family ``email``; None for any other topic
    (the main topic is the default lane, whose name only the catalog knows)."""
    head = with_prefix(prefix, f"{family}{LANE_INFIX}")
    lane = topic[len(head) :] if topic.startswith(head) else ""
    return lane or None


def table_name(family: str, kind: str) -> str:
    """The faust table name of a family's state (``kind`` in TABLE_KINDS)."""
    if kind not in TABLE_KINDS:
        raise ValueError(f"unknown table kind {kind!r}; expected one of {TABLE_KINDS}")
    return f"{family}.{kind}"


def changelog_topic(app_id: str, table: str) -> str:
    """faust's changelog topic name for ``table`` of app ``app_id``."""
    return f"{app_id}-{table}-changelog"


def leader_topic(app_id: str) -> str:
    """faust's assignor leader topic."""
    return f"{app_id}-__assignor-__leader"


def workers_topic(prefix: str) -> str:
    """The compacted heartbeat topic: one record per worker id (``worker/heartbeat.py``)."""
    return with_prefix(prefix, "streams.workers")


def skipped_topic(prefix: str) -> str:
    """The record of cleared backlogs: the offset ranges an admin skipped (``broker/clear``)."""
    return with_prefix(prefix, "streams.skipped")


def schedules_topic(prefix: str) -> str:
    """The schedules' state (compacted): last fired tick and pause flag per schedule."""
    return with_prefix(prefix, "streams.schedules")


def family_of_event_type(event_type: str) -> str:
    """``email.requested`` -> ``email``: an event type's family is its first dotted part."""
    family, sep, rest = event_type.partition(".")
    if not family or not sep or not rest:
        raise ValueError(f"event type {event_type!r} must look like '<family>.<name>'")
    return family


@dataclass(frozen=True)
class FamilyTopics:
    """Every topic name of one family. ``lanes``: (lane, topic) of the priority lanes other
    than the default one, in declared order (empty for a family without lanes). ``parked``:
    the parking topic of a family with ``ordering: strict`` (None otherwise); not in ``all``,
    no consumer group reads it."""

    family: str
    main: str
    retries: tuple[str, ...]
    dlq: str
    lanes: tuple[tuple[str, str], ...] = ()
    parked: str | None = None

    @property
    def lane_topics(self) -> tuple[str, ...]:
        return tuple(topic for _, topic in self.lanes)

    @property
    def all(self) -> tuple[str, ...]:
        """Main, retry tiers, DLQ (the worker consumes ``all[:-1]``). Not the lane topics
        (``lane_topics``): today's worker builds a retry scheduler for every non-main topic
        of ``all[:-1]``, so the lanes join it when the dispatcher consumes them."""
        return (self.main, *self.retries, self.dlq)

    def lane_of_record(self, topic: str, lane_header: str | None, default: str) -> str:
        """The lane a consumed record belongs to: a lane topic's own lane; on the main topic
        ``default``; on a retry tier its ``streams-lane`` header (``default`` when absent
        or not one of this family's lanes)."""
        for name, lane_topic_name in self.lanes:
            if topic == lane_topic_name:
                return name
        if topic != self.main and any(lane_header == name for name, _ in self.lanes):
            return lane_header or default
        return default

    def topic_for_lane(self, lane: str | None) -> str:
        """Where an event of ``lane`` is published: its lane topic, else the main topic
        (the default lane, no lane, or a lane the catalog no longer declares)."""
        for name, topic in self.lanes:
            if name == lane:
                return topic
        return self.main


def family_topics(
    prefix: str,
    family: str,
    tier_delays_ms: list[int],
    lanes: Iterable[str] = (),
    *,
    strict: bool = False,
) -> FamilyTopics:
    """The main, lane (``lanes``: the non-default ones), retry-tier (one per distinct delay,
    in ascending order), DLQ and (``strict``) parking topic names."""
    tiers = sorted(set(tier_delays_ms))
    return FamilyTopics(
        family=family,
        main=main_topic(prefix, family),
        retries=tuple(retry_topic(prefix, family, d) for d in tiers),
        dlq=dlq_topic(prefix, family),
        lanes=tuple((lane, lane_topic(prefix, family, lane)) for lane in lanes),
        parked=parked_topic(prefix, family) if strict else None,
    )
