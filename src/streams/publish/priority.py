"""Which topic an event with a ``priority`` goes to (topics.yaml ``priorities:``).

The default lane is the family's main topic, so an event without a priority, or with the
default one, is published exactly as before; any other lane is its own topic
(``<family>.lane.<lane>``) and the event carries ``streams-lane`` so it keeps its lane
through retries, the DLQ and redrive. Pure; the preparer calls it only when a priority is
given, so the plain path pays nothing.
"""

from __future__ import annotations

from streams.catalog import Family
from streams.core import headers as h
from streams.errors import InvalidPayload

__all__ = ["lane_route"]


def lane_route(
    family: Family, prefix: str, event_type: str, priority: object
) -> tuple[str, tuple[str, bytes] | None]:
    """(topic, the ``streams-lane`` header or None) of an event of ``family`` published
    with ``priority``. Raises InvalidPayload (field ``priority``) naming the family's lanes
    when the priority is not one of them, or saying the family has none."""
    if not isinstance(priority, str):
        raise InvalidPayload(event_type, [("priority", "must be a lane name (a string)")])
    try:
        lane = family.lane_of(priority)
    except ValueError as exc:
        raise InvalidPayload(event_type, [("priority", str(exc))]) from None
    assert family.priorities is not None  # lane_of checked it
    topics = family.topics(prefix)
    if lane == family.priorities.default:
        return topics.main, None
    return topics.topic_for_lane(lane), (h.LANE, lane.encode())
