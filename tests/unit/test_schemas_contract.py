"""The schema files agree with the event models and with topics.yaml."""

from __future__ import annotations

import typing
from io import BytesIO
from pathlib import Path
from typing import Any

import fastavro
import pytest
from pydantic.fields import FieldInfo

from streams.catalog import load_catalog
from streams.core.topology import family_of_event_type
from streams.events import EVENT_MODELS, EXAMPLE_PAYLOADS, Envelope, Event, build_event
from streams.serde import ENVELOPE_TYPE, SchemaStore, SchemaVersion
from streams.serde.avro import sample_values

ROOT = Path(__file__).resolve().parents[2]
STORE = SchemaStore.load(ROOT / "schemas")
EVENT_TYPES = sorted(STORE.event_types)


def _fields(version: SchemaVersion) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in version.definition["fields"]}


def test_every_schema_has_a_model_and_every_model_a_schema() -> None:
    assert set(EVENT_MODELS) == STORE.event_types
    assert set(EXAMPLE_PAYLOADS) == STORE.event_types
    assert len(EVENT_TYPES) == 26


@pytest.mark.parametrize("version", STORE.all_versions, ids=lambda v: v.label)
def test_every_version_round_trips_through_fastavro(version: SchemaVersion) -> None:
    for sample in sample_values(version.schema):
        out = BytesIO()
        fastavro.schemaless_writer(out, version.wire_schema, sample)
        out.seek(0)
        assert fastavro.schemaless_reader(out, version.wire_schema) == sample


@pytest.mark.parametrize("version", STORE.all_versions, ids=lambda v: v.label)
def test_every_field_is_documented(version: SchemaVersion) -> None:
    assert version.definition.get("doc")
    for name, field in _fields(version).items():
        assert str(field.get("doc", "")).strip(), f"{version.path}: {name} has no doc"


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_envelope_is_the_first_field(event_type: str) -> None:
    for version in STORE.versions(event_type):
        first = version.schema["fields"][0]
        assert first["name"] == "envelope"
        assert first["type"]["name"] == ENVELOPE_TYPE


def _allows_none(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation)


def _model_default(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    return info.default


def _assert_model_matches(model: type[Any], version: SchemaVersion, skip: set[str]) -> None:
    avro_fields = {k: v for k, v in _fields(version).items() if k not in skip}
    model_fields = {k: v for k, v in model.model_fields.items() if k not in skip}
    assert list(model_fields) == list(avro_fields), version.label
    for name, info in model_fields.items():
        field = avro_fields[name]
        label = f"{version.label}: {name}"
        assert info.is_required() == ("default" not in field), label
        if not info.is_required():
            assert _model_default(info) == field["default"], label
        nullable = isinstance(field["type"], list) and "null" in field["type"]
        assert _allows_none(info.annotation) == nullable, label


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_model_fields_equal_latest_schema_fields(event_type: str) -> None:
    _assert_model_matches(EVENT_MODELS[event_type], STORE.latest(event_type), {"envelope"})


def test_envelope_model_equals_envelope_schema() -> None:
    _assert_model_matches(Envelope, STORE.versions(ENVELOPE_TYPE)[-1], set())


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_example_encodes_with_fastavro_and_validates_back(event_type: str) -> None:
    event = build_event(event_type, EXAMPLE_PAYLOADS[event_type], event_id="e-1", tenant_id="t")
    version = STORE.latest(event_type)
    out = BytesIO()
    fastavro.schemaless_writer(out, version.wire_schema, event.model_dump())
    out.seek(0)
    record = fastavro.schemaless_reader(out, version.wire_schema)
    back = EVENT_MODELS[event_type].model_validate(record)
    assert back == event
    assert isinstance(back, Event)
    assert back.envelope.occurred_at_ms == event.envelope.occurred_at_ms


# --- topics.yaml ------------------------------------------------------------------------

CATALOG = load_catalog(ROOT / "topics.yaml")


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_family_key_field_is_a_required_string_in_every_version(event_type: str) -> None:
    family = CATALOG.family(family_of_event_type(event_type))
    for version in STORE.versions(event_type):
        field = _fields(version).get(family.key_field)
        assert field is not None, f"{version.path}: no key field {family.key_field!r}"
        assert field["type"] == "string", f"{version.path}: {family.key_field} must be a string"
        assert "default" not in field, f"{version.path}: {family.key_field} must be required"
    model_field = EVENT_MODELS[event_type].model_fields[family.key_field]
    assert model_field.is_required()


def test_every_family_has_an_event_type() -> None:
    families = {family_of_event_type(t) for t in EVENT_TYPES}
    assert families == set(CATALOG.families)


def test_agreement_check_detects_a_wrong_default_and_a_missing_field() -> None:
    class WrongDefault(Event):
        EVENT_TYPE: typing.ClassVar[str] = "email.requested"
        user_id: str
        to: str
        locale: str = "fr"
        template: str
        variables: dict[str, str] = {}

    class MissingField(Event):
        EVENT_TYPE: typing.ClassVar[str] = "email.requested"
        user_id: str
        to: str
        template: str

    latest = STORE.latest("email.requested")
    for model in (WrongDefault, MissingField):
        with pytest.raises(AssertionError):
            _assert_model_matches(model, latest, {"envelope"})
