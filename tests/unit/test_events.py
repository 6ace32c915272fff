"""build_event and the event models: defaults, envelope, field validation with paths."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from streams.errors import InvalidPayload, UnknownEventType
from streams.events import (
    EVENT_MODELS,
    EXAMPLE_PAYLOADS,
    CleanupDue,
    EmailRequested,
    Envelope,
    build_event,
)


def _errors(event_type: str, payload: dict[str, Any], **kwargs: Any) -> dict[str, str]:
    with pytest.raises(InvalidPayload) as info:
        build_event(event_type, payload, **kwargs)
    assert info.value.event_type == event_type
    return dict(info.value.errors)


def _with(event_type: str, **changes: Any) -> dict[str, Any]:
    payload = dict(EXAMPLE_PAYLOADS[event_type])
    payload.update(changes)
    return payload


@pytest.mark.parametrize("event_type", sorted(EVENT_MODELS))
def test_every_example_builds(event_type: str) -> None:
    event = build_event(event_type, EXAMPLE_PAYLOADS[event_type])
    assert type(event) is EVENT_MODELS[event_type]
    assert event.envelope.event_type == event_type
    assert event.event_type == event_type


def test_envelope_defaults() -> None:
    before = time.time_ns() // 1_000_000
    event = build_event("email.requested", EXAMPLE_PAYLOADS["email.requested"])
    after = time.time_ns() // 1_000_000
    assert uuid.UUID(event.event_id).version == 4
    assert before <= event.envelope.occurred_at_ms <= after
    assert event.envelope.producer == "unknown"
    assert event.envelope.correlation_id is None
    assert event.envelope.tenant_id is None


def test_caller_envelope_values_are_kept() -> None:
    event = build_event(
        "email.requested",
        EXAMPLE_PAYLOADS["email.requested"],
        event_id="order-1:welcome",
        occurred_at_ms=1_700_000_000_000,
        producer="shop",
        correlation_id="req-9",
        tenant_id="acme",
    )
    assert event.envelope == Envelope(
        event_id="order-1:welcome",
        event_type="email.requested",
        occurred_at_ms=1_700_000_000_000,
        producer="shop",
        correlation_id="req-9",
        tenant_id="acme",
    )


def test_payload_defaults() -> None:
    email = build_event("email.requested", {"user_id": "u", "to": "a@b.co", "template": "receipt"})
    assert isinstance(email, EmailRequested)
    assert (email.locale, email.variables) == ("en", {})
    cleanup = build_event("cleanup.due", {"policy": "temp_files", "scheduled_for_ms": 0})
    assert isinstance(cleanup, CleanupDue)
    assert (cleanup.batch_size, cleanup.dry_run) == (1000, False)


def test_unknown_event_type_names_the_known_ones() -> None:
    with pytest.raises(UnknownEventType) as info:
        build_event("email.sent", {})
    assert "'email.sent'" in str(info.value)
    assert "email.requested" in str(info.value)
    assert "webhook.requested" in str(info.value)


def test_event_id_rules() -> None:
    payload = EXAMPLE_PAYLOADS["email.requested"]
    assert "envelope.event_id" in _errors("email.requested", payload, event_id="")
    assert "envelope.event_id" in _errors("email.requested", payload, event_id="x" * 129)
    assert "envelope.event_id" in _errors("email.requested", payload, event_id="a\nb")
    assert build_event("email.requested", payload, event_id="x" * 128).event_id == "x" * 128


def test_envelope_errors_have_paths() -> None:
    payload = EXAMPLE_PAYLOADS["email.requested"]
    errors = _errors("email.requested", payload, occurred_at_ms=-1, producer="")
    assert set(errors) == {"envelope.occurred_at_ms", "envelope.producer"}


def test_envelope_in_payload_is_refused() -> None:
    errors = _errors("email.requested", _with("email.requested", envelope={}))
    assert errors == {"envelope": "is set by build_event; pass event_id=, producer=, ... instead"}


def test_payload_must_be_a_mapping() -> None:
    errors = _errors("email.requested", ["not", "a", "mapping"])  # type: ignore[arg-type]
    assert "must be a mapping" in errors["<payload>"]


def test_missing_and_unknown_fields_are_listed_together() -> None:
    payload = _with("email.requested", colour="blue")
    del payload["to"]
    assert _errors("email.requested", payload) == {"to": "required", "colour": "unknown field"}


def test_no_coercion() -> None:
    errors = _errors("payment.requested", _with("payment.requested", amount_minor="1250"))
    assert set(errors) == {"amount_minor"}
    errors = _errors("cleanup.due", _with("cleanup.due", dry_run="yes", batch_size=True))
    assert set(errors) == {"dry_run", "batch_size"}


INVALID = [
    ("email.requested", "to", "not-an-email", "e-mail address"),
    ("email.requested", "to", "a@b", "e-mail address"),
    ("email.requested", "to", "a b@example.com", "e-mail address"),
    ("email.requested", "to", "a@example.com\r\nBcc: x@y.z", "e-mail address"),
    ("email.requested", "locale", "de", "'en' or 'fr'"),
    ("email.requested", "template", "spam", "welcome"),
    ("email.requested", "user_id", "", "at least 1 character"),
    ("email.requested", "user_id", "   ", "blank"),
    ("webhook.requested", "url", "ftp://example.com/x", "http:// or https://"),
    ("webhook.requested", "url", "https:///path", "must name a host"),
    ("webhook.requested", "url", "https://exa mple.com", "whitespace"),
    ("webhook.requested", "url", "https://example.com:99999/", "not a valid URL"),
    ("webhook.requested", "body", "{not json", "must be JSON text"),
    ("webhook.requested", "content_type", "json", "media type"),
    ("push.requested", "device_ids", [], "at least 1 item"),
    ("push.requested", "timezone", "Mars/Olympus", "IANA time zone"),
    ("push.requested", "timezone", "../../etc/passwd", "IANA time zone"),
    ("push.requested", "title", "", "at least 1 character"),
    ("payment.requested", "amount_minor", 0, "greater than 0"),
    ("payment.requested", "amount_minor", 2**63, "less than or equal"),
    ("payment.requested", "currency", "eur", "pattern"),
    ("payment.requested", "currency", "EURO", "pattern"),
    ("refund.requested", "amount_minor", -5, "greater than 0"),
    ("image.uploaded", "size_bytes", -1, "greater than or equal to 0"),
    ("image.uploaded", "sha256", "ABC", "pattern"),
    ("image.uploaded", "filename", "../../etc/passwd", "without a directory part"),
    ("image.uploaded", "storage_uri", "no-scheme", "URI with a scheme"),
    ("cleanup.due", "policy", "everything", "chat_messages"),
    ("cleanup.due", "batch_size", 0, "greater than 0"),
    ("cleanup.due", "batch_size", 2**31, "less than or equal"),
    ("analytics.rollup_requested", "day", "2026-02-30", "YYYY-MM-DD"),
    ("analytics.rollup_requested", "day", "20260101", "YYYY-MM-DD"),
    ("analytics.rollup_requested", "kind", "weekly", "daily_counts"),
    ("audit.claim_approved", "amount_minor", -1, "greater than or equal to 0"),
    ("audit.admin_action", "details", {"n": 1}, "valid string"),
]


@pytest.mark.parametrize(("event_type", "field", "value", "reason"), INVALID)
def test_invalid_field_is_reported_with_its_path(
    event_type: str, field: str, value: Any, reason: str
) -> None:
    errors = _errors(event_type, _with(event_type, **{field: value}))
    paths = [p for p in errors if p == field or p.startswith(field + ".")]
    assert paths, errors
    assert reason in errors[paths[0]], errors


VALID = [
    ("email.requested", "to", "first.last+tag@sub.example.co.uk"),
    ("webhook.requested", "url", "http://localhost:8080/hook?x=1"),
    ("webhook.requested", "body", "[]"),
    ("webhook.requested", "content_type", "application/json; charset=utf-8"),
    ("push.requested", "timezone", "Europe/Paris"),
    ("payment.requested", "amount_minor", 2**63 - 1),
    ("payment.requested", "description", None),
    ("image.uploaded", "size_bytes", 0),
    ("image.uploaded", "sha256", None),
    ("analytics.rollup_requested", "day", "2024-02-29"),
    ("audit.claim_rejected", "amount_minor", None),
]


@pytest.mark.parametrize(("event_type", "field", "value"), VALID)
def test_valid_edge_values_are_accepted(event_type: str, field: str, value: Any) -> None:
    event = build_event(event_type, _with(event_type, **{field: value}))
    assert getattr(event, field) == value


def test_model_refuses_a_mismatched_event_type() -> None:
    data = {**EXAMPLE_PAYLOADS["email.requested"]}
    data["envelope"] = {"event_id": "e", "event_type": "push.requested", "occurred_at_ms": 1}
    with pytest.raises(ValueError, match=r"does not match 'email\.requested'"):
        EmailRequested.model_validate(data)
