"""The publisher's pure parts: trace context, headers, partition key, size check, errors."""

from __future__ import annotations

import re
import uuid

import pytest

from streams.core import headers as h
from streams.errors import BatchPublishError, EventTooLarge, InvalidPayload
from streams.publish.outgoing import (
    RECORD_OVERHEAD_BYTES,
    HeaderTemplate,
    PublishResult,
    build_headers,
    check_size,
    headers_size_bytes,
    new_event_id,
    new_traceparent,
    partition_key,
    traceparent_error,
    tracestate_error,
)

ET = "email.requested"
TEMPLATE = HeaderTemplate.for_event_type(ET, "email.requested@0011223344556677")
VALID_TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

# --- traceparent ----------------------------------------------------------------------------


def test_new_event_id_is_a_uuid4_string() -> None:
    ids = {new_event_id() for _ in range(1000)}
    assert len(ids) == 1000
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_new_traceparent_is_valid_and_unique() -> None:
    seen = {new_traceparent() for _ in range(1000)}
    assert len(seen) == 1000
    for tp in seen:
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", tp), tp
        assert traceparent_error(tp) is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "must look like"),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", "must look like"),
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "must look like"),
        ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", "must look like"),
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "version 'ff'"),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", "trace id"),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "parent (span) id"),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", "exactly four"),
    ],
)
def test_traceparent_errors(value: str, reason: str) -> None:
    error = traceparent_error(value)
    assert error is not None and reason in error


def test_traceparent_future_version_may_carry_more_fields() -> None:
    assert traceparent_error("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x") is None
    assert traceparent_error(VALID_TP) is None


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("rojo=00f067aa0ba902b7", True),
        ("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", True),
        ("tenant@vendor=x", True),
        ("no-equals-sign", False),
        ("UPPER=x", False),
        ("a=" + "x" * 600, False),
        (",".join(f"k{i}=v" for i in range(33)), False),
    ],
)
def test_tracestate_validation(value: str, ok: bool) -> None:
    assert (tracestate_error(value) is None) is ok


# --- headers --------------------------------------------------------------------------------


def test_headers_carry_the_contract_in_order() -> None:
    headers, _ = build_headers(TEMPLATE, ET, "evt-1", trace_parent=VALID_TP)
    assert headers == [
        (h.EVENT_ID, b"evt-1"),
        (h.EVENT_TYPE, b"email.requested"),
        (h.SCHEMA, b"email.requested@0011223344556677"),
        (h.CONTENT_TYPE, h.AVRO_CONTENT_TYPE.encode()),
        (h.TRACEPARENT, VALID_TP.encode()),
    ]
    assert h.decode(headers)[h.EVENT_ID] == "evt-1"


def test_headers_generate_a_traceparent_when_none_given() -> None:
    decoded = h.decode(build_headers(TEMPLATE, ET, "evt-1")[0])
    assert traceparent_error(decoded[h.TRACEPARENT]) is None


def test_headers_add_tracestate_and_extra_headers_after_ours() -> None:
    headers, _ = build_headers(
        TEMPLATE,
        ET,
        "e",
        trace_parent=VALID_TP,
        trace_state="rojo=1",
        extra={"x-tenant": "acme", "x-raw": b"\x00\x01"},
    )
    assert headers[5:] == [(h.TRACESTATE, b"rojo=1"), ("x-tenant", b"acme"), ("x-raw", b"\x00\x01")]
    pairs, _ = build_headers(TEMPLATE, ET, "e", extra=[("x-a", "1"), ("x-a", "2")])
    assert pairs[-2:] == [("x-a", b"1"), ("x-a", b"2")]


@pytest.mark.parametrize(
    "name",
    [
        h.EVENT_ID,
        h.EVENT_TYPE,
        h.SCHEMA,
        h.CONTENT_TYPE,
        h.TRACEPARENT,
        h.TRACESTATE,
        h.ATTEMPT,
        "streams-anything",
    ],
)
def test_extra_headers_cannot_override_ours(name: str) -> None:
    with pytest.raises(InvalidPayload) as info:
        build_headers(TEMPLATE, ET, "e", extra={name: "x"})
    assert info.value.errors == [(f"headers.{name}", "reserved: set by the publisher")]


def test_extra_header_value_type_and_name_are_checked() -> None:
    with pytest.raises(InvalidPayload) as info:
        build_headers(TEMPLATE, ET, "e", extra={"x-n": 3, "": "v"})  # type: ignore[dict-item]
    fields = dict(info.value.errors)
    assert fields["headers.x-n"] == "value must be str or bytes, got int"
    assert fields["headers.''"] == "a header name must be a non-empty string"


def test_bad_trace_context_is_an_invalid_payload_naming_the_header() -> None:
    with pytest.raises(InvalidPayload) as info:
        build_headers(TEMPLATE, ET, "e", trace_parent="nope")
    assert info.value.errors[0][0] == "headers.traceparent"
    with pytest.raises(InvalidPayload) as info:
        build_headers(TEMPLATE, ET, "e", trace_parent=VALID_TP, trace_state="BAD")
    assert info.value.errors[0][0] == "headers.tracestate"


def test_headers_size_counts_names_and_values() -> None:
    assert headers_size_bytes([("ab", b"cde"), ("f", b"")]) == 6
    for kwargs in (
        {},
        {"trace_parent": VALID_TP},
        {"trace_state": "rojo=1", "extra": {"x-a": "é", "x-b": b"\x00"}},
    ):
        headers, size = build_headers(TEMPLATE, ET, "evt-1", **kwargs)  # type: ignore[arg-type]
        assert size == headers_size_bytes(headers)
    headers, size = build_headers(TEMPLATE, ET, "evt-1", trace_parent=VALID_TP)
    assert size == TEMPLATE.size_bytes + len("evt-1") + len(VALID_TP)


# --- partition key --------------------------------------------------------------------------


def test_key_is_the_key_field_as_utf8() -> None:
    assert partition_key(ET, "user_id", "user-é", None) == "user-é".encode()
    assert partition_key(ET, "user_id", 42, None) == b"42"
    u = uuid.UUID(int=7)
    assert partition_key(ET, "user_id", u, None) == str(u).encode()


def test_explicit_key_must_equal_the_key_field() -> None:
    assert partition_key(ET, "user_id", "u1", "u1") == b"u1"
    assert partition_key(ET, "user_id", "u1", b"u1") == b"u1"
    with pytest.raises(InvalidPayload) as info:
        partition_key(ET, "user_id", "u1", "u2")
    ((field, reason),) = info.value.errors
    assert field == "user_id"
    assert "'u2'" in reason and "'u1'" in reason


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "required: it is the partition key"),
        ("", "must not be empty: it is the partition key"),
        (True, "a partition key must be a string or integer, got bool"),
        (1.5, "a partition key must be a string or integer, got float"),
        ({"a": 1}, "a partition key must be a string or integer, got dict"),
    ],
)
def test_bad_keys_name_the_key_field(value: object, reason: str) -> None:
    with pytest.raises(InvalidPayload) as info:
        partition_key(ET, "user_id", value, None)
    assert info.value.errors == [("user_id", reason)]


# --- size -----------------------------------------------------------------------------------


def test_size_check_boundary() -> None:
    limit = 4096 - RECORD_OVERHEAD_BYTES
    check_size(ET, value_bytes=limit - 30, key_bytes=10, headers_bytes=20, max_message_bytes=4096)
    with pytest.raises(EventTooLarge) as info:
        check_size(
            ET, value_bytes=limit - 29, key_bytes=10, headers_bytes=20, max_message_bytes=4096
        )
    message = str(info.value)
    for part in (
        f"is {limit + 1} bytes",
        f"value {limit - 29}",
        "key 10",
        "headers 20",
        f"limit is {limit} bytes",
        "max_message_bytes 4096",
    ):
        assert part in message


# --- results and batch errors ---------------------------------------------------------------


def test_batch_error_summarises_validation_failures() -> None:
    err = BatchPublishError(
        {2: InvalidPayload(ET, [("to", "required")])}, [None, None, None], sent=False
    )
    assert str(err).startswith("1 of 3 items refused; nothing was sent; first: item 2:")
    assert "to: required" in str(err)


def test_batch_error_summarises_delivery_failures() -> None:
    ok = PublishResult("t", 0, 5, "e0", 1)
    err = BatchPublishError({1: InvalidPayload(ET, [("x", "y")])}, [ok, None], sent=True)
    assert str(err).startswith("1 of 2 items not delivered (1 acknowledged)")
    assert err.results[0] == ok


# --- delivery error mapping -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind", "text"),
    [
        ("_MSG_TIMED_OUT", "BrokerUnavailable", "broker unavailable or not acknowledging"),
        ("_TRANSPORT", "BrokerUnavailable", "broker unavailable or not acknowledging"),
        ("NOT_ENOUGH_REPLICAS", "BrokerUnavailable", "NOT_ENOUGH_REPLICAS"),
        ("UNKNOWN_TOPIC_OR_PART", "DeliveryFailed", "does not exist"),
        ("_UNKNOWN_TOPIC", "DeliveryFailed", "streams topics apply"),
        ("MSG_SIZE_TOO_LARGE", "DeliveryFailed", "larger than the topic accepts"),
        ("TOPIC_AUTHORIZATION_FAILED", "DeliveryFailed", "TOPIC_AUTHORIZATION_FAILED"),
    ],
)
def test_kafka_errors_map_to_publisher_errors(code: str, kind: str, text: str) -> None:
    from confluent_kafka import KafkaError

    from streams.publish.delivery import error_for

    error = error_for(KafkaError(getattr(KafkaError, code)), "t.email")
    assert type(error).__name__ == kind
    assert str(error).startswith("t.email: ")
    assert text in str(error)


# --- the package stays cheap to import ------------------------------------------------------


def test_import_streams_does_not_load_the_publisher_stack() -> None:
    import subprocess
    import sys

    code = (
        "import sys, streams; "
        "heavy = [m for m in ('confluent_kafka', 'pydantic', 'fastavro', "
        "'streams.publish.publisher') if m in sys.modules]; "
        "print(heavy); "
        "streams.Publisher; "
        "print('streams.publish.publisher' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split("\n")
    assert out[0] == "[]"
    assert out[1] == "True"  # first use of streams.Publisher loads it
