"""``priority=``: the lane topic of a family with priority lanes (real catalog, no broker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.catalog import load_catalog
from streams.core import headers as h
from streams.errors import BatchPublishError, InvalidPayload
from streams.publish.prepare import Preparer
from streams.serde import SchemaStore

ROOT = Path(__file__).resolve().parents[2]
CATALOG = load_catalog(ROOT / "topics.yaml")
STORE = SchemaStore.load(ROOT / "schemas")
EMAIL = {"user_id": "u1", "to": "u1@example.com", "locale": "en", "template": "welcome"}
AUDIT = {"subject_id": "s1", "actor_id": "a1", "action": "probe"}


def preparer() -> Preparer:
    return Preparer(CATALOG, STORE, topic_prefix="t.", producer_name="tests")


def test_a_priority_picks_the_lane_topic_and_marks_the_event() -> None:
    topic, key, _, headers, _ = preparer().record("email.requested", EMAIL, priority="high")
    assert (topic, key) == ("t.email.lane.high", b"u1")
    assert dict(headers)[h.LANE] == b"high"
    low = preparer().record("email.requested", EMAIL, priority="low")
    assert low[0] == "t.email.lane.low"


def test_the_default_lane_and_no_priority_are_the_main_topic_unmarked() -> None:
    for priority in (None, "normal"):
        topic, _, _, headers, _ = preparer().record("email.requested", EMAIL, priority=priority)
        assert topic == "t.email"
        assert h.LANE not in dict(headers)


def test_an_unknown_priority_names_the_lanes() -> None:
    with pytest.raises(InvalidPayload) as info:
        preparer().record("email.requested", EMAIL, priority="urgent")
    [(field, reason)] = info.value.errors
    assert field == "priority"
    assert reason == "unknown priority 'urgent' for family 'email'; its lanes are high, normal, low"


def test_a_priority_for_a_family_without_lanes_is_refused() -> None:
    with pytest.raises(InvalidPayload) as info:
        preparer().record("audit.admin_action", AUDIT, priority="high")
    [(field, reason)] = info.value.errors
    assert field == "priority" and "family 'audit' has no priority lanes" in reason
    with pytest.raises(InvalidPayload, match="must be a lane name"):
        preparer().record("email.requested", EMAIL, priority=1)  # type: ignore[arg-type]


def test_batch_items_take_a_priority_and_delayed_events_keep_it() -> None:
    records = preparer().batch(
        [
            {"event_type": "email.requested", "payload": EMAIL, "priority": "high"},
            {"event_type": "email.requested", "payload": EMAIL, "priority": "low", "delay_s": 60},
        ]
    )
    assert records[0][0] == "t.email.lane.high"
    assert records[1][0].startswith("t.email.retry.")  # waits in a tier, keeps its lane
    assert dict(records[1][3])[h.LANE] == b"low" and h.DUE_AT_MS in dict(records[1][3])
    with pytest.raises(BatchPublishError) as info:
        preparer().batch([{"event_type": "email.requested", "payload": EMAIL, "priority": "x"}])
    assert isinstance(info.value.errors[0], InvalidPayload)
