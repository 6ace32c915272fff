"""Property tests: the decoders (the store's and the worker's) never raise anything but
DecodeError (or, for a sealed field, Permanent), name the field a malformed body stops in,
never allocate what a hostile length claims; valid events round-trip in both framings."""

from __future__ import annotations

import contextlib
import json
import tracemalloc
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from fastavro import schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.catalog import load_catalog
from streams.crypto import StaticKeyring, decoder_for, sealer_for
from streams.errors import DecodeError, InvalidPayload, Permanent
from streams.events import EVENT_MODELS, EXAMPLE_PAYLOADS, build_event
from streams.publish.prepare import Preparer
from streams.serde import ConfluentCodec, InMemoryRegistry, SchemaStore
from streams.serde.avro import sample_values
from streams.serde.locate import leaf_fields

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


# --- the worker's decoder, framing variants, hostile lengths ------------------------------

REPO = Path(__file__).resolve().parents[2]
KEYS = StaticKeyring({"k1": bytes(range(32))})
KEY_FIELDS = {n: f.key_field for n, f in load_catalog(REPO / "topics.yaml").families.items()}
WORKER_DECODER = decoder_for(STORE, key_fields=KEY_FIELDS, keys=KEYS)
SEALED = {  # push.requested v2 has sensitive fields: the worker decoder opens them
    t: Preparer(
        load_catalog(REPO / "topics.yaml"),
        STORE,
        topic_prefix="",
        producer_name="fuzz",
        sealer=sealer_for(STORE, key_fields=KEY_FIELDS, keys=KEYS),
    ).record(t, EXAMPLE_PAYLOADS[t])[2]
    for t in ("push.requested", "push.token_invalid")
}


def zigzag_varint(n: int) -> bytes:
    """Avro's long encoding (zig-zag, then base-128 varint)."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        byte, z = z & 0x7F, z >> 7
        out.append(byte | 0x80 if z else byte)
        if not z:
            return bytes(out)


@FUZZ
@given(st.sampled_from(sorted(SEALED)), st.data())
def test_worker_decoder_raises_only_decode_error_or_permanent(
    event_type: str, data: st.DataObject
) -> None:
    """The decoder the worker runs (``decoder_for``: decode, open sealed fields, validate)."""
    assert WORKER_DECODER is not STORE  # the sealed types make it a DecryptingDecoder
    record = bytearray(SEALED[event_type])
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(10, len(record) - 1))
        record[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(10, len(record)))
    with contextlib.suppress(DecodeError, Permanent):
        WORKER_DECODER.decode_event(bytes(record[:cut]))


def test_worker_decoder_opens_what_it_was_given() -> None:
    for event_type, value in SEALED.items():
        assert WORKER_DECODER.decode_event(value).envelope.event_type == event_type


@FUZZ
@given(
    st.sampled_from(sorted(VALID)),
    st.data(),
    st.sampled_from([2**31, 2**31 - 1, 2**40, 2**62, -(2**62), -1, -(2**31)]),
)
def test_a_length_or_count_claiming_gigabytes_allocates_nothing(
    event_type: str, data: st.DataObject, claimed: int
) -> None:
    """A varint spliced anywhere in a valid body (a string length, a map/array block count,
    a union index) claiming 2 GB or more: refused, and the decoder's peak allocation stays
    far below what was claimed."""
    record = VALID[event_type]
    at = data.draw(st.integers(10, len(record)))
    spliced = record[:at] + zigzag_varint(claimed) + record[at:]
    tracemalloc.start()
    try:
        _decode_or_decode_error(spliced)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_bytes < 1_000_000


@FUZZ
@given(st.sampled_from(sorted(VALID)), st.data())
def test_a_truncated_body_names_the_field_it_stops_in(event_type: str, data: st.DataObject) -> None:
    record = VALID[event_type]
    cut = data.draw(st.integers(10, len(record) - 1))
    try:
        STORE.decode(record[:cut])
    except DecodeError as exc:
        message = str(exc)
    else:
        raise AssertionError("a truncated body was accepted")
    writer = STORE.latest(event_type)
    paths = [path for path, _ in leaf_fields(writer.wire_schema)]
    assert message.startswith(f"malformed {writer.label} body: ")
    named = message.removeprefix(f"malformed {writer.label} body: ").split(" at byte ")[0]
    assert named in paths, message


@pytest.mark.parametrize("value", [None, "text", 7, [b"\xc3\x01"]])
def test_not_bytes_is_a_decode_error(value: Any) -> None:
    """A tombstone (value None) on a main topic is undecodable, not a crash."""
    with pytest.raises(DecodeError, match="expected bytes"):
        STORE.decode_event(value)


# --- the Confluent framing: ids resolved by a registry that may answer anything ----------


class HostileRegistry:
    """A registry answering every id with the same (arbitrary) text."""

    def __init__(self, text: str) -> None:
        self.text = text

    def register(self, subject: str, schema_json: str) -> int:
        raise AssertionError("decoding never registers")

    def schema_json(self, schema_id: int) -> str:
        return self.text


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
registry_answers = st.one_of(
    st.text(max_size=60),
    json_values.map(json.dumps),
    st.sampled_from([json.dumps(v.definition) for v in STORE.all_versions[:6]]),
)


@FUZZ
@given(registry_answers, st.binary(max_size=120))
def test_confluent_framing_with_a_hostile_registry(answer: str, data: bytes) -> None:
    store = STORE.with_codec(ConfluentCodec(HostileRegistry(answer)))
    with contextlib.suppress(DecodeError):
        store.decode_event(b"\x00" + data)


@FUZZ
@given(st.sampled_from(sorted(VALID)), st.binary(max_size=200))
def test_confluent_framing_round_trips_and_refuses_garbage(event_type: str, junk: bytes) -> None:
    store = STORE.with_codec(ConfluentCodec(InMemoryRegistry()))
    event = build_event(event_type, EXAMPLE_PAYLOADS[event_type])
    data = store.encode(event)
    assert store.decode_event(data) == event
    with contextlib.suppress(DecodeError):
        store.decode_event(data[:5] + junk)


def _every_version_samples() -> list[bytes]:
    """Records written by EVERY version (old ones read through schema resolution)."""
    out = []
    for version in STORE.all_versions:
        if version.event_type not in EVENT_MODELS:
            continue
        for sample in sample_values(version.wire_schema, 2):
            body = BytesIO()
            schemaless_writer(body, version.wire_schema, sample)
            out.append(version.prefix + body.getvalue())
    return out


EVERY_VERSION = _every_version_samples()


@FUZZ
@given(st.sampled_from(EVERY_VERSION), st.data())
def test_mutated_records_of_every_version(record: bytes, data: st.DataObject) -> None:
    mutated = bytearray(record)
    for _ in range(data.draw(st.integers(0, 4))):
        mutated[data.draw(st.integers(10, len(mutated) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(10, len(mutated)))
    _decode_or_decode_error(bytes(mutated[:cut]))
    with contextlib.suppress(DecodeError, Permanent):
        WORKER_DECODER.decode_event(bytes(mutated[:cut]))


def test_every_version_has_samples() -> None:
    old = {v.label for v in STORE.all_versions if v is not STORE.latest(v.event_type)}
    assert old and len(EVERY_VERSION) >= 2 * len(FINGERPRINTS)
