"""The batch fast path makes the ordinary path's records, byte for byte, and its errors.

Ids, trace parents and the clock are fixed (the same sequence for both paths), so the
records of ``Preparer.batch`` (fast) and ``Preparer.batch_one_by_one`` (ordinary:
``build_event``, ``SchemaStore.encode``, ``build_headers``) must be equal: topic, key,
value, every header, event id. Real catalog and schemas, no broker.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams import events
from streams.catalog import load_catalog
from streams.core import headers as h
from streams.errors import BatchPublishError, EventTooLarge
from streams.events import EXAMPLE_PAYLOADS
from streams.publish import fast, outgoing, prepare
from streams.publish.fast import fast_batch
from streams.publish.outgoing import new_event_ids, new_traceparents, traceparent_error
from streams.publish.prepare import Preparer
from streams.publish.records import FastRecords
from streams.serde import SchemaStore

ROOT = Path(__file__).resolve().parents[2]
CATALOG = load_catalog(ROOT / "topics.yaml")
STORE = SchemaStore.load(ROOT / "schemas")
NOW_MS = 1_767_225_600_123
EMAIL = "email.requested"


def preparer(producer_name: str = "tests") -> Preparer:
    return Preparer(CATALOG, STORE, topic_prefix="t.", producer_name=producer_name)


FAST_TYPES = sorted(t for t in EXAMPLE_PAYLOADS if preparer().plan(t) is not None)


class Fixed:
    """The same ids and trace parents, in order, for whichever path asks."""

    def __init__(self) -> None:
        self._ids = (str(uuid.UUID(int=i, version=4)) for i in itertools.count(1))
        self._tps = (f"00-{i:032x}-{i:016x}-01" for i in itertools.count(1))

    def id(self) -> str:
        return next(self._ids)

    def ids(self, n: int) -> list[str]:
        return [next(self._ids) for _ in range(n)]

    def traceparent(self) -> str:
        return next(self._tps)

    def traceparents(self, n: int) -> list[bytes]:
        return [next(self._tps).encode() for _ in range(n)]


@pytest.fixture
def fixed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Both paths draw ids and trace parents from a fresh ``Fixed``; one clock."""
    monkeypatch.setattr(events, "now_ms", lambda: NOW_MS)

    def reset() -> None:
        source = Fixed()
        monkeypatch.setattr(fast, "new_event_ids", source.ids)
        monkeypatch.setattr(fast, "new_traceparents", source.traceparents)
        monkeypatch.setattr(prepare, "new_event_id", source.id)
        monkeypatch.setattr(outgoing, "new_traceparent", source.traceparent)

    reset()
    monkeypatch.setattr(Fixed, "reset", staticmethod(reset), raising=False)
    yield


def both(items: list[Any], p: Preparer | None = None) -> tuple[Any, list[Any]]:
    """(fast records, ordinary records) of the same items from the same id sequence."""
    p = p or preparer()
    quick = p.batch(items)
    Fixed.reset()  # type: ignore[attr-defined]
    return quick, p.batch_one_by_one(items)


def test_every_fast_event_type_is_byte_identical_to_the_ordinary_path(fixed: None) -> None:
    assert len(FAST_TYPES) >= 20  # all but the sealed types take the fast path
    items = [(t, EXAMPLE_PAYLOADS[t]) for t in FAST_TYPES] * 3
    quick, ordinary = both(items)
    assert isinstance(quick, FastRecords)
    assert len(quick) == len(items)
    assert list(quick) == ordinary
    assert quick[3] == ordinary[3]
    assert quick[1:4] == ordinary[1:4]
    for (topic, value, key, headers), record in zip(quick.produce_args(), ordinary, strict=True):
        assert (topic, key, value, headers) == (record[0], record[1], record[2], list(record[3]))


def test_defaults_left_out_and_optional_values_are_encoded_alike(fixed: None) -> None:
    items: list[Any] = [
        (EMAIL, {"user_id": "u1", "to": "u1@example.com", "template": "welcome"}),
        (EMAIL, {"user_id": "u2", "to": "u2@example.com", "template": "receipt", "locale": "fr"}),
        ("payment.requested", {**EXAMPLE_PAYLOADS["payment.requested"], "description": None}),
        ("review.submitted", {**EXAMPLE_PAYLOADS["review.submitted"], "comment": None}),
        ("cleanup.due", {"policy": "sessions", "scheduled_for_ms": 2**62, "dry_run": True}),
        (EMAIL, {"user_id": "ü" * 70, "to": "u3@example.com", "template": "welcome"}),
    ]
    quick, ordinary = both(items)
    assert isinstance(quick, FastRecords)
    assert list(quick) == ordinary
    event = STORE.decode_event(quick[0][2])
    assert (event.envelope.occurred_at_ms, event.envelope.producer) == (NOW_MS, "tests")


def test_priority_lanes_are_byte_identical_with_their_lane_header(fixed: None) -> None:
    payload = EXAMPLE_PAYLOADS[EMAIL]
    items: list[Any] = [
        {"event_type": EMAIL, "payload": payload, "priority": "high"},
        {"event_type": EMAIL, "payload": payload, "priority": "normal"},
        {"event_type": EMAIL, "payload": payload},
        {"event_type": EMAIL, "payload": payload, "priority": "low"},
        {"event_type": EMAIL, "payload": payload, "priority": None},
        ("audit.admin_action", EXAMPLE_PAYLOADS["audit.admin_action"]),
    ]
    quick, ordinary = both(items)
    assert isinstance(quick, FastRecords)
    assert list(quick) == ordinary
    assert [r[0] for r in quick] == [
        "t.email.lane.high",
        "t.email",
        "t.email",
        "t.email.lane.low",
        "t.email",
        "t.audit",
    ]
    assert dict(quick[0][3])[h.LANE] == b"high"
    assert h.LANE not in dict(quick[1][3])


VARIANTS: list[tuple[str, Any]] = [
    ("missing", ...),
    ("none", None),
    ("int", 1),
    ("bool", True),
    ("empty", ""),
    ("control", "a\x00b"),
    ("blank", "   "),
    ("long text", "x" * 300),
    ("str number", "12"),
    ("dict", {"k": "v"}),
    ("bad dict", {"k": 1}),
    ("list", ["a"]),
]


def mutations(event_type: str) -> Iterator[tuple[str, dict[str, Any]]]:
    base = EXAMPLE_PAYLOADS[event_type]
    for field in events.EVENT_MODELS[event_type].model_fields:
        if field == "envelope":
            continue
        for label, value in VARIANTS:
            payload = dict(base)
            if value is ...:
                payload.pop(field, None)
            else:
                payload[field] = value
            yield f"{field}={label}", payload
    yield "unknown field", {**base, "colour": "red"}


@pytest.mark.parametrize("event_type", FAST_TYPES)
def test_validation_accepts_and_refuses_what_the_model_does(event_type: str, fixed: None) -> None:
    """Each payload field missing, None, of another type, empty, with control characters,
    too long ...: the fast path takes exactly the payloads the model takes (and then makes
    the same record) and refuses exactly the others with the ordinary path's error."""
    p = preparer()
    accepted = refused = 0
    for label, payload in mutations(event_type):
        Fixed.reset()  # type: ignore[attr-defined]
        try:
            ordinary = p.batch_one_by_one([(event_type, payload)])
        except BatchPublishError as exc:
            expected = {i: (type(e), str(e)) for i, e in exc.errors.items()}
            with pytest.raises(BatchPublishError) as got:
                p.batch([(event_type, payload)])
            assert {i: (type(e), str(e)) for i, e in got.value.errors.items()} == expected
            assert fast_batch(p, [(event_type, payload)]) is None, label
            refused += 1
            continue
        Fixed.reset()  # type: ignore[attr-defined]
        quick = fast_batch(p, [(event_type, payload)])
        assert quick is not None, f"{label}: the model takes it, the fast path must too"
        assert list(quick) == ordinary, label
        accepted += 1
    assert accepted and refused


def test_an_invalid_batch_gets_the_ordinary_error_naming_each_item(fixed: None) -> None:
    items: list[Any] = [
        (EMAIL, EXAMPLE_PAYLOADS[EMAIL]),
        (EMAIL, {**EXAMPLE_PAYLOADS[EMAIL], "to": "not-an-address"}),
        {"event_type": EMAIL, "payload": EXAMPLE_PAYLOADS[EMAIL], "priority": "urgent"},
        ("nope.unknown", {}),
        (EMAIL, {**EXAMPLE_PAYLOADS[EMAIL], "envelope": {}}),
        (EMAIL, {**EXAMPLE_PAYLOADS[EMAIL], "variables": {"big": "x" * 2_000_000}}),
    ]
    p = preparer()
    with pytest.raises(BatchPublishError) as got:
        p.batch(items)
    error = got.value
    assert error.sent is False
    assert sorted(error.errors) == [1, 2, 3, 4, 5]
    assert error.errors[1].errors == [("to", "must be an e-mail address like name@example.com")]  # type: ignore[attr-defined]
    assert "urgent" in str(error.errors[2]) and "high, normal, low" in str(error.errors[2])
    assert isinstance(error.errors[5], EventTooLarge)
    with pytest.raises(BatchPublishError) as again:
        p.batch_one_by_one(items)
    assert {i: str(e) for i, e in again.value.errors.items()} == {
        i: str(e) for i, e in error.errors.items()
    }


@pytest.mark.parametrize(
    "item",
    [
        {"event_type": EMAIL, "payload": EXAMPLE_PAYLOADS[EMAIL], "event_id": "mine-1"},
        {"event_type": EMAIL, "payload": EXAMPLE_PAYLOADS[EMAIL], "headers": {"a": "b"}},
        {"event_type": EMAIL, "payload": EXAMPLE_PAYLOADS[EMAIL], "delay_s": 5},
        {"event_type": EMAIL, "payload": EXAMPLE_PAYLOADS[EMAIL], "tenant_id": "acme"},
        {"event_type": EMAIL, "payload": EXAMPLE_PAYLOADS[EMAIL], "key": "user-42"},
    ],
    ids=lambda item: next(k for k in item if k not in ("event_type", "payload")),
)
def test_items_with_options_take_the_ordinary_path(item: dict[str, Any]) -> None:
    p = preparer()
    assert fast_batch(p, [(EMAIL, EXAMPLE_PAYLOADS[EMAIL]), item]) is None
    records = p.batch([(EMAIL, EXAMPLE_PAYLOADS[EMAIL]), item])
    assert isinstance(records, list) and len(records) == 2


def test_sealed_types_and_a_bad_producer_name_are_left_to_the_ordinary_path() -> None:
    p = preparer()
    sealed = [t for t in EXAMPLE_PAYLOADS if p.sealer.seals(t)]
    assert sealed and all(p.plan(t) is None for t in sealed)
    bad = preparer(producer_name="bad\x00name")
    assert fast_batch(bad, [(EMAIL, EXAMPLE_PAYLOADS[EMAIL])]) is None
    with pytest.raises(BatchPublishError) as got:
        bad.batch([(EMAIL, EXAMPLE_PAYLOADS[EMAIL])])
    assert "envelope.producer" in str(got.value.errors[0])


def test_a_generator_of_items_is_read_once() -> None:
    items = ((EMAIL, {**EXAMPLE_PAYLOADS[EMAIL], "user_id": f"u{i}"}) for i in range(3))
    assert [r[1] for r in preparer().batch(items)] == [b"u0", b"u1", b"u2"]
    assert preparer().batch([]) == []


def test_batch_ids_are_fresh_uuid4s_and_trace_parents_are_valid() -> None:
    ids = new_event_ids(2000)
    assert len(set(ids)) == 2000
    for eid in ids:
        parsed = uuid.UUID(eid)
        assert (str(parsed), parsed.version, parsed.variant) == (eid, 4, uuid.RFC_4122)
    traceparents = new_traceparents(2000)
    assert len(set(traceparents)) == 2000
    assert all(traceparent_error(tp.decode()) is None for tp in traceparents)
