"""Property tests: the decoder never raises anything but DecodeError; valid events round-trip."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.errors import DecodeError, InvalidPayload
from streams.events import EVENT_MODELS, EXAMPLE_PAYLOADS, build_event
from streams.serde import SchemaStore

STORE = SchemaStore.load(Path(__file__).resolve().parents[2] / "schemas")
FINGERPRINTS = sorted(v.fingerprint for v in STORE.all_versions if v.event_type in EVENT_MODELS)
VALID = {t: STORE.encode(build_event(t, EXAMPLE_PAYLOADS[t])) for t in sorted(EVENT_MODELS)}
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _decode_or_decode_error(data: bytes) -> None:
    """Anything but a DecodeError (or success) propagates and fails the test."""
    with contextlib.suppress(DecodeError):
        STORE.decode_event(data)


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    _decode_or_decode_error(data)


@FUZZ
@given(st.sampled_from(FINGERPRINTS), st.binary(max_size=300))
def test_known_fingerprint_with_arbitrary_body(fp: bytes, body: bytes) -> None:
    _decode_or_decode_error(b"\xc3\x01" + fp + body)


@FUZZ
@given(st.sampled_from(sorted(VALID)), st.data())
def test_mutated_valid_records(event_type: str, data: st.DataObject) -> None:
    record = bytearray(VALID[event_type])
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(10, len(record) - 1))
        record[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(10, len(record)))
    _decode_or_decode_error(bytes(record[:cut]))


@FUZZ
@given(st.sampled_from(sorted(VALID)), st.binary(min_size=1, max_size=20))
def test_valid_records_with_appended_bytes_are_refused(event_type: str, extra: bytes) -> None:
    try:
        STORE.decode(VALID[event_type] + extra)
    except DecodeError:
        return
    raise AssertionError("trailing bytes were accepted")


# --- round-trips ------------------------------------------------------------------------

texts = st.text(min_size=1, max_size=40).filter(lambda s: s.strip() and s.isprintable())
string_maps = st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=4)


@settings(max_examples=200, deadline=None)
@given(
    user_id=texts,
    local=st.from_regex(r"\A[a-z0-9._+-]{1,20}\Z"),
    locale=st.sampled_from(["en", "fr"]),
    template=st.sampled_from(["welcome", "password_reset", "receipt", "notification"]),
    variables=string_maps,
    occurred_at_ms=st.integers(0, 2**63 - 1),
    tenant_id=st.none() | texts,
)
def test_email_round_trip(
    user_id: str,
    local: str,
    locale: str,
    template: str,
    variables: dict[str, str],
    occurred_at_ms: int,
    tenant_id: str | None,
) -> None:
    payload = {
        "user_id": user_id,
        "to": f"{local}@example.com",
        "locale": locale,
        "template": template,
        "variables": variables,
    }
    try:
        event = build_event(
            "email.requested", payload, occurred_at_ms=occurred_at_ms, tenant_id=tenant_id
        )
    except InvalidPayload as exc:  # e.g. '..' in the local part: must name the field
        assert [path for path, _ in exc.errors] == ["to"]
        return
    assert STORE.decode_event(STORE.encode(event)) == event


@settings(max_examples=200, deadline=None)
@given(
    event_type=st.sampled_from(sorted(EVENT_MODELS)),
    amount=st.integers(1, 2**63 - 1),
    details=string_maps,
    text=texts,
)
def test_every_type_round_trips_with_varied_values(
    event_type: str, amount: int, details: dict[str, str], text: str
) -> None:
    payload: dict[str, Any] = dict(EXAMPLE_PAYLOADS[event_type])
    for field in ("amount_minor", "size_bytes"):
        if field in payload:
            payload[field] = amount
    for field in ("details", "variables", "data"):
        if field in payload:
            payload[field] = details
    for field in ("reason", "title", "description", "actor_id"):
        if field in payload:
            payload[field] = text
    event = build_event(event_type, payload, correlation_id=text)
    assert STORE.decode_event(STORE.encode(event)) == event
