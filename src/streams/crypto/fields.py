"""Which fields are sensitive, and sealing/opening them in events and decoded records.

A field is sensitive when its schema version marks it (``"streams.sensitive": true`` on
the field) or configuration names it (``EncryptionSettings.sensitive_fields``). Allowed
shapes: ``string`` (optionally nullable), ``array`` of strings (each item sealed) and
``map`` of strings (each value sealed); the family's key field never (it is the partition
key, in clear by necessity): ``SchemaError`` otherwise.

- ``EventSealer.seal`` (SDK, ``publish/prepare.py``): after validation, before encoding,
  returns a copy of the event with its sensitive values sealed. Event types without
  sensitive fields cost one dict lookup.
- ``DecryptingDecoder`` (worker): decodes, opens the sensitive values named by the WRITER
  version (an older version without the mark was written in clear), then validates; so the
  handler sees plaintext while the record bytes — main topic, retry tiers, DLQ — keep the
  ciphertext. A value that cannot be opened raises ``UndecryptableField`` (Permanent): the
  event goes to the DLQ with that reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from streams.crypto.cipher import FieldCipher
from streams.errors import SchemaError
from streams.events import EVENT_MODELS, Event, validation_errors
from streams.serde.versions import ENVELOPE_TYPE, SchemaVersion

SENSITIVE_PROPERTY = "streams.sensitive"
_STRING_SHAPES = {"string": "one", "array": "items", "map": "values"}


def _shape(field: dict[str, Any], where: str) -> str:
    kind = field.get("type")
    if isinstance(kind, list):  # a nullable string
        rest = [k for k in kind if k != "null"]
        if rest == ["string"]:
            return "one"
        raise SchemaError(f"{where}: a sensitive field must be a string, array or map of strings")
    if kind == "string":
        return "one"
    if isinstance(kind, dict) and kind.get("type") in ("array", "map"):
        inner = kind.get("items") if kind["type"] == "array" else kind.get("values")
        if inner == "string":
            return _STRING_SHAPES[kind["type"]]
    raise SchemaError(f"{where}: a sensitive field must be a string, array or map of strings")


def sensitive_fields(
    version: SchemaVersion, extra: frozenset[str] = frozenset(), key_field: str | None = None
) -> tuple[tuple[str, str], ...]:
    """``(field name, shape)`` of the sensitive fields of one schema version."""
    out: list[tuple[str, str]] = []
    for field in version.definition.get("fields", []):
        name = field.get("name")
        marked = field.get(SENSITIVE_PROPERTY) is True or f"{version.event_type}.{name}" in extra
        if not marked:
            continue
        where = f"{version.path}: field {name!r}"
        if name == key_field or name == "envelope":
            raise SchemaError(f"{where}: the key field and the envelope cannot be sensitive")
        out.append((name, _shape(field, where)))
    return tuple(out)


def _aad(event_type: str, name: str) -> bytes:
    return f"{event_type}/{name}".encode()


class SensitiveCatalog:
    """Sensitive fields of every version, by fingerprint and by event type (latest)."""

    def __init__(
        self,
        versions: Iterable[SchemaVersion],
        extra: frozenset[str] = frozenset(),
        key_fields: dict[str, str] | None = None,
    ) -> None:
        key_fields = key_fields or {}
        self.by_fingerprint: dict[bytes, tuple[tuple[str, str], ...]] = {}
        latest: dict[str, SchemaVersion] = {}
        for v in versions:
            if v.event_type == ENVELOPE_TYPE:
                continue
            family = v.event_type.partition(".")[0]
            fields = sensitive_fields(v, extra, key_fields.get(family))
            if fields:
                self.by_fingerprint[v.fingerprint] = fields
            if v.event_type not in latest or latest[v.event_type].version < v.version:
                latest[v.event_type] = v
        self.by_type = {
            t: self.by_fingerprint[v.fingerprint]
            for t, v in latest.items()
            if v.fingerprint in self.by_fingerprint
        }


class EventSealer:
    """Seals the sensitive fields of events before encoding (the SDK's side)."""

    def __init__(self, catalog: SensitiveCatalog, cipher: FieldCipher) -> None:
        self._by_type = catalog.by_type
        self._cipher = cipher

    def seals(self, event_type: str) -> bool:
        """True when events of ``event_type`` have fields this sealer seals."""
        return bool(self._by_type.get(event_type))

    def seal(self, event: Event) -> Event:
        """``event`` unchanged, or a copy with its sensitive values sealed; ConfigError when
        it has sensitive fields and no key is configured."""
        fields = self._by_type.get(event.EVENT_TYPE)
        if not fields:
            return event
        seal = self._cipher.seal
        update: dict[str, Any] = {}
        for name, shape in fields:
            value = getattr(event, name)
            aad = _aad(event.EVENT_TYPE, name)
            if value is None:
                continue
            if shape == "one":
                update[name] = seal(value, aad)
            elif shape == "items":
                update[name] = [seal(v, aad) for v in value]
            else:
                update[name] = {k: seal(v, aad) for k, v in value.items()}
        return _with_values(event, update)


def _with_values(event: Event, update: dict[str, Any]) -> Event:
    """A shallow copy of the validated ``event`` with ``update`` applied, unvalidated (the
    sealed strings replace validated values): ``model_copy`` without its ~4 µs overhead."""
    cls = type(event)
    new = cls.__new__(cls)
    object.__setattr__(new, "__dict__", {**event.__dict__, **update})
    object.__setattr__(new, "__pydantic_fields_set__", event.__pydantic_fields_set__)
    object.__setattr__(new, "__pydantic_extra__", event.__pydantic_extra__)
    object.__setattr__(new, "__pydantic_private__", event.__pydantic_private__)
    return new


def open_record(
    cipher: FieldCipher,
    event_type: str,
    fields: tuple[tuple[str, str], ...],
    record: dict[str, Any],
) -> None:
    """Replace the sealed values of ``record`` (a decoded Avro dict) by their plaintext."""
    for name, shape in fields:
        value = record.get(name)
        if value is None:
            continue
        aad = _aad(event_type, name)
        where = f"{event_type}.{name}"
        if shape == "one":
            record[name] = cipher.open(value, aad, where=where)
        elif shape == "items":
            record[name] = [cipher.open(v, aad, where=f"{where}[{i}]") for i, v in enumerate(value)]
        else:
            record[name] = {
                k: cipher.open(v, aad, where=f"{where}[{k!r}]") for k, v in value.items()
            }


class DecryptingDecoder:
    """The worker's decoder: ``SchemaStore.decode`` + open sensitive fields + validate."""

    def __init__(self, store: Any, catalog: SensitiveCatalog, cipher: FieldCipher) -> None:
        self._store = store
        self._by_fp = catalog.by_fingerprint
        self._cipher = cipher

    def decode_event(self, data: bytes) -> Event:
        """The validated event with plaintext values; raises DecodeError, InvalidEvent or
        UndecryptableField (Permanent)."""
        writer, record = self._store.decode(data)
        fields = self._by_fp.get(writer.fingerprint)
        if fields:
            open_record(self._cipher, writer.event_type, fields, record)
        model = EVENT_MODELS.get(writer.event_type)
        if model is None:
            from streams.errors import DecodeError

            raise DecodeError(f"no event model for {writer.event_type!r}")
        try:
            return model.model_validate(record)
        except ValidationError as exc:
            from streams.serde.store import InvalidEvent

            raise InvalidEvent(writer.event_type, validation_errors(exc)) from None
