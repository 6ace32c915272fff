"""SchemaStore: encode/decode, precise decode errors, reading old versions into the latest."""

from __future__ import annotations

import json
import shutil
from io import BytesIO
from pathlib import Path
from typing import Any

import fastavro
import pytest

from streams.errors import DecodeError, EventValidationError, SchemaError, UnknownEventType
from streams.events import EVENT_MODELS, EXAMPLE_PAYLOADS, EmailRequested, build_event
from streams.serde import (
    ConfluentCodec,
    InMemoryRegistry,
    InvalidEvent,
    SchemaStore,
    SingleObjectCodec,
)

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
STORE = SchemaStore.load(SCHEMAS_DIR)


def _email(**envelope: Any) -> EmailRequested:
    event = build_event("email.requested", EXAMPLE_PAYLOADS["email.requested"], **envelope)
    assert isinstance(event, EmailRequested)
    return event


@pytest.mark.parametrize("event_type", sorted(EVENT_MODELS))
def test_encode_decode_event_round_trip(event_type: str) -> None:
    event = build_event(event_type, EXAMPLE_PAYLOADS[event_type], correlation_id="c")
    data = STORE.encode(event)
    latest = STORE.latest(event_type)
    assert data[:10] == b"\xc3\x01" + latest.fingerprint
    assert STORE.decode_event(data) == event
    writer, record = STORE.decode(data)
    assert writer is latest
    assert record == event.model_dump()


def test_encoding_is_the_plain_avro_body_after_the_header() -> None:
    event = _email(event_id="e-1", occurred_at_ms=1_700_000_000_000)
    data = STORE.encode(event)
    body = BytesIO(data[10:])
    record: Any = fastavro.schemaless_reader(body, STORE.latest("email.requested").schema)
    assert record["envelope"]["event_id"] == "e-1"
    assert record["to"] == "ada@example.com"


def test_encode_unknown_type() -> None:
    store = SchemaStore([v for v in STORE.all_versions if v.event_type != "email.requested"])
    with pytest.raises(UnknownEventType, match=r"email\.requested"):
        store.encode(_email())


def test_latest_unknown_type_names_known_types() -> None:
    with pytest.raises(UnknownEventType, match=r"'nope\.x'.*analytics\.rollup_requested"):
        STORE.latest("nope.x")


def test_lookups() -> None:
    latest = STORE.latest("push.requested")
    assert STORE.by_fingerprint(latest.fingerprint) is latest
    assert STORE.by_header(latest.header) is latest
    assert STORE.by_header("email.requested@" + latest.fingerprint.hex()) is None
    assert STORE.by_header("push.requested@zz") is None
    assert STORE.versions("push.requested")[-1] is latest
    assert [v.version for v in STORE.versions("push.requested")] == [1, 2]


# --- decode errors ----------------------------------------------------------------------

GOOD = STORE.encode(_email(event_id="e-1", occurred_at_ms=1))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "too short: 0 bytes"),
        (GOOD[:9], "too short: 9 bytes"),
        (b"\x00\x00\x00\x00\x07" + GOOD[10:], "looks like the Confluent wire format"),
        (b"{}" + GOOD[2:], "bad marker 7b7d"),
        (
            b"\xc3\x01" + b"\xff" * 8 + GOOD[10:],
            "unknown writer schema fingerprint ffffffffffffffff",
        ),
        (GOOD[:-3], "malformed email.requested v1 body"),
        (GOOD + b"\x00", "1 trailing bytes after the email.requested v1 body"),
        (GOOD[:10] + b"\x03", "malformed email.requested v1 body"),
    ],
)
def test_decode_errors_say_why(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason.replace("(", r"\(")):
        STORE.decode(data)


def test_decode_refuses_non_bytes() -> None:
    with pytest.raises(DecodeError, match="expected bytes, got NoneType"):
        STORE.decode(None)  # type: ignore[arg-type]


def test_decode_accepts_bytearray_and_memoryview() -> None:
    assert STORE.decode(bytearray(GOOD))[1] == STORE.decode(GOOD)[1]  # type: ignore[arg-type]
    assert STORE.decode(memoryview(GOOD))[1] == STORE.decode(GOOD)[1]  # type: ignore[arg-type]


def test_decode_invalid_utf8_in_a_string() -> None:
    version = STORE.latest("email.requested")
    out = BytesIO()
    fastavro.schemaless_writer(out, version.wire_schema, STORE.decode(GOOD)[1])
    body = bytearray(out.getvalue())
    at = body.index(b"ada@")
    body[at] = 0xFF
    with pytest.raises(DecodeError, match="UnicodeDecodeError"):
        STORE.decode(version.prefix + bytes(body))


def test_decode_event_reports_invalid_content_with_field_paths() -> None:
    version = STORE.latest("email.requested")
    record = STORE.decode(GOOD)[1]
    record["to"] = "nobody"
    record["envelope"]["event_id"] = ""
    out = BytesIO(version.prefix)
    out.seek(0, 2)
    fastavro.schemaless_writer(out, version.wire_schema, record)
    with pytest.raises(EventValidationError) as info:
        STORE.decode_event(out.getvalue())
    assert isinstance(info.value, InvalidEvent)
    assert dict(info.value.errors).keys() == {"to", "envelope.event_id"}
    assert "to: must be an e-mail address" in str(info.value)


# --- schema evolution: read old versions into the latest ----------------------------------


def _copy_schemas(tmp_path: Path) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMAS_DIR, target)
    return target


def _add_version(schemas: Path, event_type: str, change: Any) -> dict[str, Any]:
    versions = sorted((schemas / event_type).glob("v*.avsc"))
    data: dict[str, Any] = json.loads(versions[-1].read_text())
    change(data)
    (schemas / event_type / f"v{len(versions) + 1}.avsc").write_text(json.dumps(data))
    return data


def test_old_version_is_read_into_the_latest(tmp_path: Path) -> None:
    schemas = _copy_schemas(tmp_path)
    v1_bytes = STORE.encode(_email(event_id="old"))

    def add_priority(data: dict[str, Any]) -> None:
        data["fields"].append(
            {"name": "priority", "type": "int", "default": 5, "doc": "higher is sooner"}
        )

    _add_version(schemas, "email.requested", add_priority)
    store = SchemaStore.load(schemas)
    assert store.latest("email.requested").version == 2
    writer, record = store.decode(v1_bytes)
    assert writer.version == 1
    assert record["priority"] == 5
    assert record["envelope"]["event_id"] == "old"


def test_reordered_fields_version_decodes_old_data_to_an_equal_event(tmp_path: Path) -> None:
    schemas = _copy_schemas(tmp_path)

    def reorder(data: dict[str, Any]) -> None:
        data["fields"] = [data["fields"][0], *reversed(data["fields"][1:])]

    _add_version(schemas, "email.requested", reorder)
    store = SchemaStore.load(schemas)
    event = _email()
    old = STORE.encode(event)
    new = store.encode(event)
    assert old[:10] != new[:10]
    assert old[10:] != new[10:]  # a different body layout...
    assert store.decode_event(old) == event == store.decode_event(new)  # ...the same event


# --- codecs -----------------------------------------------------------------------------


def test_default_codec_is_single_object() -> None:
    assert isinstance(STORE.codec, SingleObjectCodec)
    assert STORE.codec.content_type == "application/vnd.streams+avro"


def test_confluent_codec_round_trip_and_errors() -> None:
    registry = InMemoryRegistry()
    store = STORE.with_codec(ConfluentCodec(registry))
    event = _email()
    data = store.encode(event)
    assert data[0] == 0
    schema_id = int.from_bytes(data[1:5], "big")
    assert registry.subjects == {"streams.events.EmailRequested": [schema_id]}
    assert data[5:] == STORE.encode(event)[10:]
    assert store.decode_event(data) == event
    # a fresh codec learns the id from the registry
    assert STORE.with_codec(ConfluentCodec(registry)).decode_event(data) == event
    with pytest.raises(DecodeError, match="schema id 99 is unknown to the registry"):
        store.decode(b"\x00\x00\x00\x00\x63" + data[5:])
    with pytest.raises(DecodeError, match="bad magic byte c3"):
        store.decode(GOOD)
    with pytest.raises(DecodeError, match="too short: 4 bytes"):
        store.decode(data[:4])


def test_confluent_codec_refuses_a_registry_schema_not_in_schemas_dir() -> None:
    registry = InMemoryRegistry()
    other = {"type": "record", "name": "X", "fields": [{"name": "a", "type": "string"}]}
    schema_id = registry.register("X", json.dumps(other))
    store = STORE.with_codec(ConfluentCodec(registry))
    with pytest.raises(DecodeError, match=f"schema id {schema_id} .* is not a version"):
        store.decode(b"\x00" + schema_id.to_bytes(4, "big") + b"\x02a")


# --- loading errors -----------------------------------------------------------------------


def _load_error(schemas: Path) -> str:
    with pytest.raises(SchemaError) as info:
        SchemaStore.load(schemas)
    return str(info.value)


def test_load_missing_dir(tmp_path: Path) -> None:
    assert "not a directory of schemas" in _load_error(tmp_path / "nope")


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: (d / "email.requested" / "v1.avsc").write_text("{oops"), "not valid JSON"),
        (lambda d: (d / "email.requested" / "v1.avsc").write_text("[]"), "must be an Avro record"),
        (lambda d: (d / "email.requested" / "v3.avsc").write_text("{}"), "missing v2.avsc"),
        (lambda d: (d / "email.requested" / "v01.avsc").write_text("{}"), "expected v<N>.avsc"),
        (lambda d: (d / "stray.avsc").write_text("{}"), "belong in <event type>/v<N>.avsc"),
        (lambda d: (d / "Bad Name").mkdir(), "no schema versions"),
        (lambda d: shutil.rmtree(d / "streams.Envelope"), "streams.Envelope: missing"),
        (
            lambda d: (d / "email.requested" / "v2.avsc").write_bytes(
                (d / "email.requested" / "v1.avsc").read_bytes()
            ),
            "same canonical form",
        ),
    ],
)
def test_load_reports_file_and_reason(tmp_path: Path, mutate: Any, reason: str) -> None:
    schemas = _copy_schemas(tmp_path)
    mutate(schemas)
    assert reason in _load_error(schemas)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d["fields"].pop(0), "the first field must be"),
        (lambda d: d.update(envelope_version=7), "envelope_version 7: no such envelope version"),
        (lambda d: d.update(envelope_version="1"), "envelope_version must be an integer"),
        (lambda d: d["fields"][1].pop("doc"), "user_id: missing 'doc'"),
        (lambda d: d["fields"].append(dict(d["fields"][1])), "user_id: duplicate field name"),
        (lambda d: d["fields"][2].update(type="strng"), "not a valid Avro schema"),
        (lambda d: d["fields"][3].update(default=3), "Default value <3> must match"),
        (
            lambda d: d["fields"].append(
                {"name": "n", "type": ["null", "int"], "default": 3, "doc": "x"}
            ),
            "n: default 3 must match the union's first branch (null)",
        ),
        (
            lambda d: d.update(name="WebhookRequested"),
            "record name 'streams.events.WebhookRequested' is already used by 'email.requested'",
        ),
        (lambda d: d["fields"][1].update(name="user-id"), "invalid field name 'user-id'"),
    ],
)
def test_load_reports_invalid_schema_content(tmp_path: Path, change: Any, reason: str) -> None:
    schemas = _copy_schemas(tmp_path)
    _add_version(schemas, "email.requested", change)
    message = _load_error(schemas)
    assert "email.requested" in message
    assert reason in message


def test_load_reports_every_problem_at_once(tmp_path: Path) -> None:
    schemas = _copy_schemas(tmp_path)
    (schemas / "email.requested" / "v1.avsc").write_text("{oops")
    (schemas / "push.requested" / "v1.avsc").write_text("[]")
    lines = _load_error(schemas).splitlines()
    assert len(lines) == 2
    assert "email.requested/v1.avsc: not valid JSON" in lines[0]
    assert "push.requested/v1.avsc: must be an Avro record" in lines[1]


def test_defaults_filled_in_by_resolution_are_not_shared(tmp_path: Path) -> None:
    """fastavro returns the reader schema's own default object; the store copies it."""
    schemas = _copy_schemas(tmp_path)

    def add_tags(data: dict[str, Any]) -> None:
        data["fields"].append(
            {"name": "tags", "type": {"type": "map", "values": "string"}, "default": {}, "doc": "t"}
        )

    _add_version(schemas, "email.requested", add_tags)
    store = SchemaStore.load(schemas)
    old = STORE.encode(_email())
    first = store.decode(old)[1]
    first["tags"]["mutated"] = "yes"
    assert store.decode(old)[1]["tags"] == {}
    assert store.latest("email.requested").definition["fields"][-1]["default"] == {}
