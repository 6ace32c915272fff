"""The compiled Avro writer writes what fastavro writes, on every schema in ``schemas/``."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer

from streams.events import EXAMPLE_PAYLOADS, build_event
from streams.serde import SchemaStore
from streams.serde.avro import sample_values
from streams.serde.writer import compile_fields, long_bytes

ROOT = Path(__file__).resolve().parents[2]
STORE = SchemaStore.load(ROOT / "schemas")
VERSIONS = [v for v in STORE.all_versions if v.wire_schema.get("type") == "record"]


def fastavro_bytes(schema: Any, value: Any) -> bytes:
    out = BytesIO()
    schemaless_writer(out, schema, value)
    return out.getvalue()


def compiled_bytes(schema: Any, value: Any) -> bytes:
    write = compile_fields(schema["fields"], {})
    assert write is not None, "every schema in schemas/ compiles"
    parts: list[bytes] = []
    write(value, parts)
    return b"".join(parts)


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.label)
def test_every_schema_version_compiles_to_fastavro_s_bytes(version: Any) -> None:
    values = sample_values(version.wire_schema, 16)  # every union branch, both ways round
    assert values
    for value in values:
        assert compiled_bytes(version.wire_schema, value) == fastavro_bytes(
            version.wire_schema, value
        )


@pytest.mark.parametrize("event_type", sorted(EXAMPLE_PAYLOADS))
def test_the_example_events_encode_identically(event_type: str) -> None:
    event = build_event(event_type, EXAMPLE_PAYLOADS[event_type], event_id="e-1")
    record = dict(event.__dict__)
    record["envelope"] = event.envelope.__dict__
    schema = STORE.latest(event_type).wire_schema
    assert compiled_bytes(schema, record) == fastavro_bytes(schema, record)


def test_long_values_at_the_edges_match_fastavro() -> None:
    fields = [{"name": "n", "type": "long"}]
    schema = parse_schema({"type": "record", "name": "L", "fields": fields})
    for n in (0, 1, -1, 63, 64, -64, -65, 8191, 8192, 2**31, -(2**31), 2**63 - 1, -(2**63)):
        assert long_bytes(n) == fastavro_bytes(schema, {"n": n}), n
        assert compiled_bytes(schema, {"n": n}) == fastavro_bytes(schema, {"n": n})
    with pytest.raises(OverflowError):
        long_bytes(2**63)


def test_strings_longer_than_one_length_byte_and_non_ascii() -> None:
    schema = parse_schema(
        {
            "type": "record",
            "name": "S",
            "fields": [
                {"name": "s", "type": "string"},
                {"name": "m", "type": {"type": "map", "values": "string"}},
                {"name": "a", "type": {"type": "array", "items": ["null", "long"]}},
            ],
        }
    )
    value = {"s": "é" * 200, "m": {"k" * 70: "ü", "": ""}, "a": [None, 5, -(2**40)]}
    assert compiled_bytes(schema, value) == fastavro_bytes(schema, value)


def test_a_missing_field_takes_its_default() -> None:
    fields = [{"name": "a", "type": "string"}, {"name": "b", "type": ["null", "string"]}]
    write = compile_fields(fields, {"b": None})
    assert write is not None
    parts: list[bytes] = []
    write({"a": "x"}, parts)
    assert b"".join(parts) == b"\x02x\x00"
    with pytest.raises(KeyError):
        write({"b": "y"}, [])  # no default for a


@pytest.mark.parametrize(
    "field_type",
    [
        "double",
        "float",
        "bytes",
        {"type": "enum", "name": "E", "symbols": ["A", "B"]},
        {"type": "fixed", "name": "F", "size": 4},
        ["null", "string", "long"],
        ["string", "long"],
        {"type": "map", "values": "double"},
    ],
    ids=str,
)
def test_shapes_it_does_not_compile_are_left_to_fastavro(field_type: Any) -> None:
    assert compile_fields([{"name": "x", "type": field_type}], {}) is None


@pytest.mark.parametrize(
    ("field_type", "value", "error"),
    [
        ("long", "7", TypeError),
        ("long", True, TypeError),
        ("long", 2**64, OverflowError),
        ("boolean", 1, TypeError),
        ("string", b"raw", AttributeError),
        ({"type": "map", "values": "string"}, [("k", "v")], TypeError),
        ({"type": "array", "items": "string"}, ("a",), TypeError),
        ("null", 0, TypeError),
    ],
)
def test_a_value_of_the_wrong_kind_raises(field_type: Any, value: Any, error: type) -> None:
    write = compile_fields([{"name": "x", "type": field_type}], {})
    assert write is not None
    with pytest.raises(error):
        write({"x": value}, [])
