"""Preparing records without a broker: the real catalog and schemas, no confluent_kafka."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streams.catalog import Catalog, load_catalog
from streams.core import headers as h
from streams.errors import BatchPublishError, EventTooLarge, InvalidPayload, UnknownEventType
from streams.publish.prepare import Preparer
from streams.serde import SchemaStore

ROOT = Path(__file__).resolve().parents[2]
CATALOG = load_catalog(ROOT / "topics.yaml")
STORE = SchemaStore.load(ROOT / "schemas")
EMAIL = "email.requested"
EVENT_ID = "0b7e6f0e-8f55-4c4b-9d59-0f1d2e3c4b5a"


def email(i: int = 1, **over: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "user_id": f"user-{i}",
        "to": f"user{i}@example.com",
        "locale": "en",
        "template": "welcome",
        "variables": {"n": str(i)},
    }
    payload.update(over)
    return payload


def preparer(catalog: Catalog = CATALOG) -> Preparer:
    return Preparer(catalog, STORE, topic_prefix="t.", producer_name="tests")


def test_a_record_goes_to_the_prefixed_main_topic_keyed_by_the_key_field() -> None:
    topic, key, value, headers, event_id = preparer().record(
        EMAIL, email(7), event_id=EVENT_ID, headers={"tenant": "acme"}
    )
    assert topic == CATALOG.families["email"].topics("t.").main
    assert topic.startswith("t.")
    assert key == b"user-7"
    assert event_id == EVENT_ID
    names = [name for name, _ in headers]
    assert names[:5] == [h.EVENT_ID, h.EVENT_TYPE, h.SCHEMA, h.CONTENT_TYPE, h.TRACEPARENT]
    assert dict(headers)[h.EVENT_ID] == EVENT_ID.encode()
    assert headers[-1] == ("tenant", b"acme")
    event = STORE.decode_event(value)
    assert event.envelope.event_id == EVENT_ID
    assert event.envelope.producer == "tests"


def test_without_an_event_id_each_record_gets_a_fresh_one() -> None:
    p = preparer()
    assert p.record(EMAIL, email())[4] != p.record(EMAIL, email())[4]


def test_an_explicit_key_must_equal_the_key_field() -> None:
    assert preparer().record(EMAIL, email(3), key="user-3")[1] == b"user-3"
    with pytest.raises(InvalidPayload) as wrong:
        preparer().record(EMAIL, email(3), key="someone-else")
    assert wrong.value.errors[0][0] == "user_id"


@pytest.mark.parametrize("event_type", ["nodots", "email.sent", "nosuchfamily.requested"])
def test_unknown_event_types_are_refused(event_type: str) -> None:
    with pytest.raises(UnknownEventType):
        preparer().record(event_type, email())


def test_a_record_over_the_family_limit_is_too_large() -> None:
    family = CATALOG.families["email"].model_copy(update={"max_message_bytes": 1024})
    small = CATALOG.model_copy(update={"families": {"email": family}})
    preparer(small).record(EMAIL, email())  # a normal event fits in 1024 - 512 bytes
    with pytest.raises(EventTooLarge, match=r"limit is 512 bytes"):
        preparer(small).record(EMAIL, email(variables={"blob": "x" * 600}))


def test_batch_items_are_tuples_or_dicts() -> None:
    records = preparer().batch(
        [
            (EMAIL, email(1)),
            {"event_type": EMAIL, "payload": email(2), "event_id": EVENT_ID, "key": "user-2"},
        ]
    )
    assert [r[1] for r in records] == [b"user-1", b"user-2"]
    assert records[1][4] == EVENT_ID
    assert preparer().batch([]) == []


def test_a_batch_with_invalid_items_names_each_and_sends_nothing() -> None:
    items: list[Any] = [
        (EMAIL, email(1)),
        (EMAIL, email(2), "extra"),
        42,
        {"event_type": EMAIL, "colour": "red"},
        (EMAIL, email(5, to="not-an-address")),
    ]
    with pytest.raises(BatchPublishError) as batch:
        preparer().batch(items)
    error = batch.value
    assert error.sent is False
    assert error.results == [None] * 5
    assert sorted(error.errors) == [1, 2, 3, 4]
    assert all(isinstance(e, InvalidPayload) for e in error.errors.values())
    malformed = error.errors[3]
    assert isinstance(malformed, InvalidPayload)
    assert malformed.errors == [("colour", "unknown batch item field"), ("payload", "required")]


def test_preparing_needs_no_kafka_client() -> None:
    code = (
        "import sys, streams.publish.prepare, streams.dlq.records; "
        "print('confluent_kafka' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"
